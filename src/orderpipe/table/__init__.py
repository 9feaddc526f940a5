"""The clean table: etl's Delta Lake table of clean records, partitioned by event date.

Modules: `read` (scans, samples, changes since a version, the table's id and version), `merge`
(merging a run into the table, day by day, in one commit), `maintenance` (orphan data files),
`export` (CSV, JSON Lines and Parquet exports).
"""

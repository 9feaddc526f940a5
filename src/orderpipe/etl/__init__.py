"""The etl phase: raw JSON Lines -> the processed (clean) table, a quarantine and a quality report.

Modules: `run` (the service `run_etl`: chunks, staging, the merge), `result` (`EtlResult`),
`recovery` (runs killed after their commit), `quality` (the quality report). The cleaning itself
is shared with the stream consumer, in `core.cleaning`, `core.rawinput` and `core.linecheck`.
"""

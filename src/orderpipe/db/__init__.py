"""The database layer, for SQLite (the embedded default), MySQL/MariaDB and PostgreSQL.

Modules: `models` (the ORM contract tables and the clean records' rows for each), `engine`
(engines, table creation, TLS and driver checks), `mysql` (LOAD DATA LOCAL, guarded connections,
id collation) and `postgres` (COPY, deferred keys, advisory locks), `upsert` (the dialect-aware
newer-wins upsert statements and staged bulk paths), `writer` (the one write path: a transaction
per chunk or per stream batch, with retries), `errors` (what a database error means: transient,
content or fatal, by MySQL code and SQLSTATE), `queries` (watermarks, scoring state, the reads
the phases and the report need).
"""

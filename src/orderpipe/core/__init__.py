"""The shared core under every phase; it imports no phase, no table or database code, no CLI.

Modules: `settings` (the one `Settings`), `layout` (every path, once), `errors` (the one error
type and `first_line`), `fileio` (atomic writes, disk full), `crashpoints` (where the crash
harness kills a run), `logs`, `history` (the runs' history file), `progress` (the one progress
callback type), `schema` (the event contract and its vocabularies), `linecheck` (one JSON line ->
record or reason), `rawinput` (files, gzip, stdin -> line frames), `cleaning` (lines -> a clean
batch, shared by etl and the stream consumer), `truth` (the generator's truth file, as readers
finish it).
"""

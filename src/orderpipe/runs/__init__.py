"""Whole runs across phases: the one phase list (`phases`), `run_all`, `bench` and `doctor`.

Above every phase package and the report; below the CLI only.
"""

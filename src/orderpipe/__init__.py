"""orderpipe: an e-commerce order pipeline end to end.

generate -> etl -> ingest -> train -> predict | stream, measured by eco: each a service with a
thin CLI (`orderpipe.cli`), run in order by `run-all` (`runs.run_all`, `runs.phases`).
Layers, top to bottom: cli > runs > report > phases > ml > table, db > core
(tests/unit/test_architecture.py checks them).
"""

__version__ = "0.1.0"

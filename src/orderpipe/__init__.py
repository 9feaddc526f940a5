"""orderpipe: an e-commerce order pipeline end to end.

generate -> etl -> ingest -> train -> predict | stream, measured by eco: each a service with a
thin CLI (`orderpipe.cli`), run in order by `run-all` (`pipeline`, `phases`).
"""

__version__ = "0.1.0"

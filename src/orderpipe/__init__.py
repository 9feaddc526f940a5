"""orderpipe: an e-commerce order pipeline end to end.

generate -> etl -> ingest (and later train, stream, eco), each a service with a thin CLI.
"""

__version__ = "0.1.0"

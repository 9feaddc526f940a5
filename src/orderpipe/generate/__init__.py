"""The generate phase: seeded, byte-for-byte reproducible synthetic order events in the raw
contract shape, vectorised with numpy and polars: recurring customers, price levels per category,
return probability from clear rules (the truth is saved beside the file), and optional dirt.

Modules: world (shares, prices, the return rule), draw (the run's plan and each unit's random
numbers), dirt (`Dirt`: missing values, untidy text, copies, bad lines), chunk (one chunk's
lines and truth), truth (the truth file's writing), writer (`generate_events`, its result).
"""

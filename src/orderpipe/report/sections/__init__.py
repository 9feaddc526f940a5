"""The report's five sections, each built from what the pipeline left: `data` (etl's quality
report), `models` (the models and their evaluation samples), `drift` (the scored events in the
tables), `stream` (`reports/runs.jsonl` and the dead letters), `energy` (the eco measurements).

A section whose source is missing says what to run instead of failing the page.
"""

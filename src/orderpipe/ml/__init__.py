"""Machine learning: one feature definition, training, and loading/scoring saved Pipelines."""

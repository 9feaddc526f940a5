"""Models: shared features, training, the saved Pipeline, batch scoring.

Modules: `features` (the models' inputs), `transformers` (the custom steps saved models name),
`pipelines` (the scikit-learn Pipelines), `metrics` (splits and evaluation metrics), `train`,
`model` (the saved Pipeline and its metadata), `predict` (batch scoring), `drift` (PSI).

This file stays light and holds only `ModelKind` (the CLI imports it to list the model kinds).
"""

from enum import StrEnum


class ModelKind(StrEnum):
    """What `orderpipe train` fits."""

    classification = "classification"
    regression = "regression"
    all = "all"

"""Models: shared features, training, the saved Pipeline, batch scoring.

This file stays light (the CLI imports it to list the model kinds).
"""

from enum import StrEnum


class ModelKind(StrEnum):
    """What `orderpipe train` fits."""

    classification = "classification"
    regression = "regression"
    all = "all"

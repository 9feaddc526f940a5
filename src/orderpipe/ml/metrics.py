"""Splits and evaluation metrics: the seeded train/validation/test split, the classifier's and
the regressor's test metrics, the F1 threshold, and the training data's content hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import polars as pl

RELIABILITY_BINS = 10


def split_indices(
    n: int, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded 60/20/20 train/validation/test indices, each sorted (stratified when `stratify`
    is given: each class split alike). Sorted rows gather faster from a frame."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(n)]
        if stratify is None
        else [np.flatnonzero(stratify == value) for value in np.unique(stratify)]
    )
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for group in groups:
        shuffled = rng.permutation(group)
        n_test = n_val = round(len(group) * 0.2)
        parts[2].append(shuffled[:n_test])
        parts[1].append(shuffled[n_test : n_test + n_val])
        parts[0].append(shuffled[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(part)) for part in parts)
    return train, val, test


def classification_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC, PR AUC, log loss, Brier, thresholded scores, confusion matrix, reliability."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = (proba >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y, proba)),
        "threshold": float(threshold),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "positive_rate": float(y.mean()),
        "reliability": reliability_table(y, proba),
    }


def reliability_table(y: np.ndarray, proba: np.ndarray) -> list[dict[str, float]]:
    """Per probability decile bin: mean predicted probability vs observed return rate."""
    edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
    bins = np.clip(np.digitize(proba, edges[1:-1]), 0, RELIABILITY_BINS - 1)
    table = []
    for b in range(RELIABILITY_BINS):
        mask = bins == b
        if mask.any():
            table.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "count": int(mask.sum()),
                    "mean_predicted": float(proba[mask].mean()),
                    "observed_rate": float(y[mask].mean()),
                }
            )
    return table


def best_f1_threshold(y: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut that maximises F1 (chosen on validation, reported on test)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, proba)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-12), 0)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "mae": float(mean_absolute_error(y, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "r2": float(r2_score(y, predicted)),
    }


def dataset_hash(clean: pl.DataFrame) -> str:
    """A content hash of the training rows (order-independent)."""
    digest = hashlib.sha256()
    digest.update(str(clean.height).encode())
    digest.update(str(int(clean.hash_rows(seed=0).sum())).encode())
    return digest.hexdigest()[:16]

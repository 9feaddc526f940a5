"""The report's models section: each model's test metrics from its metadata, and the charts drawn
from its evaluation sample (curves, confusion matrix, importances; actual vs predicted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from orderpipe.core.errors import OrderpipeError
from orderpipe.core.layout import evaluation_file
from orderpipe.report import charts
from orderpipe.report.page import Chart, Section, Table, number_cell

if TYPE_CHECKING:
    import polars as pl

    from orderpipe.core.layout import Layout

IMPORTANCE_ROWS = 5_000  # evaluation rows permuted for the importances
IMPORTANCE_REPEATS = 3


def models_section(layout: Layout) -> Section:
    from orderpipe.ml.model import load_model, read_evaluation

    section = Section("models", "Models")
    for name, table, draw in (
        ("classification", _classifier_table, _classifier),
        ("regression", _regressor_table, _regressor),
    ):
        try:
            model = load_model(layout.artifacts_dir, name)
        except OrderpipeError as exc:
            section.notes.append(str(exc))
            continue
        table(section, model)  # from the metadata: on every test row
        evaluation = read_evaluation(layout.artifacts_dir, model.meta, name)
        if evaluation is None:
            section.notes.append(
                f"the {name} model {model.version} has no evaluation sample: "
                f"{evaluation_file(layout.artifacts_dir, name)} is missing or belongs to another "
                f"model; run `orderpipe train {name}` for its charts"
            )
            continue
        draw(section, model, evaluation)
    return section


def _classifier(section: Section, model: Any, evaluation: pl.DataFrame) -> None:
    """The classifier's curves (with the oracle's when the sample has it), its confusion matrix
    at its threshold and its permutation importances, on its evaluation sample."""
    meta = model.meta
    y = evaluation[model.spec.target].to_numpy().astype(int)
    proba = evaluation["return_proba"].to_numpy()
    oracle = evaluation["oracle_proba"]
    oracle_proba = None if oracle.null_count() else oracle.to_numpy()
    rows = f"{evaluation.height:,} of the {meta['splits']['test']:,} test rows"
    curves = [("model", proba, charts.COLORS["model"])]
    if oracle_proba is not None:
        curves.append(("oracle (the generator's truth)", oracle_proba, charts.COLORS["oracle"]))
    _classifier_curves(section, y, curves, rows)
    _confusion_matrix(section, y, proba, meta["metrics"]["test"]["threshold"])
    _permutation_importance(section, model, evaluation)


def _classifier_curves(
    section: Section, y: np.ndarray, curves: list[tuple[str, np.ndarray, str]], rows: str
) -> None:
    """ROC, precision-recall and reliability: one line per (label, probabilities, color)."""
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    with charts.figure() as (fig, ax):
        for i, (label, p, color) in enumerate(curves):
            RocCurveDisplay.from_predictions(
                y, p, name=label, ax=ax, curve_kwargs={"color": color}, plot_chance_level=i == 0
            )
        ax.set_title("ROC curve")
        section.charts.append(Chart(f"Return classifier: ROC ({rows})", charts.svg(fig)))
    with charts.figure() as (fig, ax):
        for i, (label, p, color) in enumerate(curves):
            PrecisionRecallDisplay.from_predictions(
                y, p, name=label, ax=ax, curve_kwargs={"color": color}, plot_chance_level=i == 0
            )
        ax.set_title("Precision-recall curve")
        section.charts.append(Chart("Return classifier: precision-recall", charts.svg(fig)))
    with charts.figure() as (fig, ax):
        for i, (label, p, color) in enumerate(curves):
            CalibrationDisplay.from_predictions(
                y,
                p,
                n_bins=10,
                strategy="quantile",
                name=label,
                ax=ax,
                ref_line=i == 0,
                color=color,
            )
        ax.set_title("Reliability (deciles of predicted probability)")
        section.charts.append(Chart("Return classifier: reliability diagram", charts.svg(fig)))


def _confusion_matrix(section: Section, y: np.ndarray, proba: np.ndarray, threshold: float) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    with charts.figure(4.2, 3.4) as (fig, ax):
        ConfusionMatrixDisplay.from_predictions(
            y,
            (proba >= threshold).astype(int),
            labels=[0, 1],
            display_labels=["kept", "returned"],
            ax=ax,
            colorbar=False,
            cmap="Blues",
        )
        ax.set_title(f"Confusion matrix at threshold {threshold:.3f}")
        section.charts.append(Chart("Return classifier: confusion matrix", charts.svg(fig)))


def _permutation_importance(section: Section, model: Any, evaluation: pl.DataFrame) -> None:
    """The drop in ROC AUC when each input is shuffled, on the sample's first rows."""
    from sklearn.inspection import permutation_importance

    sample = evaluation.head(IMPORTANCE_ROWS)
    inputs = sample.select(model.spec.inputs).to_pandas()
    importance = permutation_importance(
        model.pipeline,
        inputs,
        sample[model.spec.target].to_numpy().astype(int),
        scoring="roc_auc",
        n_repeats=IMPORTANCE_REPEATS,
        random_state=0,
    )
    order = np.argsort(importance.importances_mean)[::-1]
    with charts.figure(5.6, 0.8 + 0.28 * len(order)) as (fig, ax):
        positions = np.arange(len(order))[::-1]
        ax.barh(
            positions,
            importance.importances_mean[order],
            xerr=importance.importances_std[order],
            color=charts.COLORS["model"],
        )
        ax.set_yticks(positions, [model.spec.inputs[i] for i in order])
        ax.set_xlabel("drop in ROC AUC when the column is shuffled")
        ax.set_title(
            f"Permutation importance ({sample.height:,} test rows, {IMPORTANCE_REPEATS} repeats)"
        )
        section.charts.append(Chart("Return classifier: permutation importance", charts.svg(fig)))


def _classifier_table(section: Section, model: Any) -> None:
    meta = model.meta
    metrics = meta["metrics"]
    test, oracle_metrics = metrics["test"], metrics.get("oracle") or {}
    names = [
        ("ROC AUC", "roc_auc"),
        ("PR AUC", "pr_auc"),
        ("Brier", "brier"),
        ("log loss", "log_loss"),
        ("F1 at the threshold", "f1"),
        ("precision", "precision"),
        ("recall", "recall"),
    ]
    section.tables.append(
        Table(
            f"Return classifier {model.version} ({meta['estimator']}) on its "
            f"{meta['splits']['test']:,} test rows",
            ["metric", "model", "oracle", "gap"],
            [
                [
                    label,
                    number_cell(test[key]),
                    number_cell(oracle_metrics.get(key)),
                    number_cell(test[key] - oracle_metrics[key]) if key in oracle_metrics else "-",
                ]
                for label, key in names
            ],
        )
    )


def _regressor(section: Section, model: Any, evaluation: pl.DataFrame) -> None:
    from sklearn.metrics import PredictionErrorDisplay

    meta = model.meta
    metrics = meta["metrics"]
    y = evaluation[model.spec.target].to_numpy()
    predicted = evaluation["predicted"].to_numpy()
    baseline = metrics["median_baseline"]
    with charts.figure() as (fig, ax):
        PredictionErrorDisplay.from_predictions(
            y,
            predicted,
            kind="actual_vs_predicted",
            subsample=1500,
            random_state=0,
            ax=ax,
            scatter_kwargs={"alpha": 0.35, "s": 6, "color": charts.COLORS["model"]},
        )
        if "value" in baseline:
            ax.axvline(
                baseline["value"],
                color=charts.COLORS["bad"],
                linestyle=":",
                label=f"median baseline ({baseline['value']:,.0f})",
            )
            ax.legend(loc="upper left")
        shown = min(len(y), 1500)
        ax.set_title(f"Basket value: actual vs predicted ({shown:,} test rows)")
        section.charts.append(Chart("Basket-value regressor: predicted vs actual", charts.svg(fig)))


def _regressor_table(section: Section, model: Any) -> None:
    meta = model.meta
    metrics = meta["metrics"]
    baseline = metrics["median_baseline"]
    test = metrics["test"]
    section.tables.append(
        Table(
            f"Basket-value regressor {model.version} ({meta['estimator']}) on its "
            f"{meta['splits']['test']:,} test rows",
            ["metric", "model", "median baseline"],
            [
                [label, number_cell(test[key], 2), number_cell(baseline[key], 2)]
                for label, key in (("MAE", "mae"), ("RMSE", "rmse"), ("R²", "r2"))
            ],
        )
    )

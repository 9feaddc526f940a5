"""The report's five sections, each built from what the pipeline left: etl's quality report,
the models and their evaluation samples, the tables, `reports/runs.jsonl`, the eco measurements.

A section whose source is missing says what to run instead of failing the page.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from orderpipe.errors import OrderpipeError
from orderpipe.report import charts

if TYPE_CHECKING:
    from orderpipe.layout import Layout
    from orderpipe.ml.features import FeatureSpec
    from orderpipe.settings import Settings

DRIFT_ROWS = 100_000  # the most recent scored events the drift is measured on
IMPORTANCE_ROWS = 5_000  # evaluation rows permuted for the importances
IMPORTANCE_REPEATS = 3
STREAM_RUNS = 12  # the last stream runs shown


@dataclass(frozen=True)
class Chart:
    title: str
    svg: str


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    key: str
    title: str
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _f(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- data
def data_section(layout: Layout) -> Section:
    section = Section("data", "Data")
    path = layout.quality_report
    try:
        quality = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        section.notes.append(f"no readable etl quality report at {path}: run `orderpipe etl`")
        return section
    reasons = sorted(quality.get("rejected_by_reason", {}).items(), key=lambda kv: -kv[1])
    outcomes = [("clean", quality["clean"]), ("duplicate (older copy)", quality["duplicates"])]
    outcomes += [(f"quarantined: {reason}", count) for reason, count in reasons]
    colors = [charts.COLORS["good"], charts.COLORS["oracle"]] + [charts.COLORS["bad"]] * len(
        reasons
    )
    with charts.figure(6.4, 0.9 + 0.32 * len(outcomes)) as (fig, ax):
        charts.barh(ax, [label for label, _ in outcomes], [c for _, c in outcomes], colors)
        ax.set_xlabel("lines")
        ax.set_title(f"What became of the {quality['lines']:,} lines read")
        section.charts.append(Chart("Lines by outcome, quarantined by reason", charts.svg(fig)))
    dataset = quality.get("dataset", {})
    section.tables.append(
        Table(
            "Last etl run",
            ["lines read", "clean", "duplicates", "quarantined", "table rows", "table version"],
            [
                [
                    _n(quality["lines"]),
                    _n(quality["clean"]),
                    _n(quality["duplicates"]),
                    _n(quality["rejected"]),
                    _n(dataset.get("rows")),
                    str(dataset.get("table_version", "-")),
                ]
            ],
        )
    )
    rules = quality.get("imputation_rules", {})
    section.tables.append(
        Table(
            "Imputed values",
            ["column", "values imputed", "rule"],
            [[k, _n(v), rules.get(k, "")] for k, v in quality.get("imputed", {}).items()],
        )
    )
    section.tables.append(
        Table(
            "Text normalised (case, spaces, aliases)",
            ["column", "values changed"],
            [[k, _n(v)] for k, v in quality.get("normalised_text", {}).items()],
        )
    )
    return section


# ---------------------------------------------------------------- models
def models_section(layout: Layout) -> Section:
    from orderpipe.layout import evaluation_file
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
    from sklearn.calibration import CalibrationDisplay
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        RocCurveDisplay,
    )

    meta = model.meta
    metrics = meta["metrics"]
    y = evaluation[model.spec.target].to_numpy().astype(int)
    proba = evaluation["return_proba"].to_numpy()
    oracle = evaluation["oracle_proba"]
    oracle_proba = None if oracle.null_count() else oracle.to_numpy()
    rows = f"{evaluation.height:,} of the {meta['splits']['test']:,} test rows"
    curves = [("model", proba, charts.COLORS["model"])]
    if oracle_proba is not None:
        curves.append(("oracle (the generator's truth)", oracle_proba, charts.COLORS["oracle"]))

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
    threshold = metrics["test"]["threshold"]
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
                    _f(test[key]),
                    _f(oracle_metrics.get(key)),
                    _f(test[key] - oracle_metrics[key]) if key in oracle_metrics else "-",
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
                [label, _f(test[key], 2), _f(baseline[key], 2)]
                for label, key in (("MAE", "mae"), ("RMSE", "rmse"), ("R²", "r2"))
            ],
        )
    )


# ---------------------------------------------------------------- drift
def drift_section(layout: Layout, settings: Settings) -> Section:
    from orderpipe.ml.drift import PSI_FLAG, drift_table
    from orderpipe.ml.model import load_model

    section = Section("drift", "Drift")
    try:
        model = load_model(layout.artifacts_dir, "classification")
    except OrderpipeError as exc:
        section.notes.append(str(exc))
        return section
    profile = model.meta.get("training_profile")
    if not profile:
        section.notes.append(
            f"model {model.version}'s metadata has no training profile: run "
            "`orderpipe train classification`"
        )
        return section
    through = model.meta.get("data_through")
    try:
        scored, newer = scored_events(settings, model.version, model.spec, through)
    except OrderpipeError as exc:
        section.notes.append(f"the scored events could not be read: {exc}")
        return section
    if scored.height == 0:
        section.notes.append(
            f"no event scored by model {model.version} in the database yet: run "
            "`orderpipe ingest`, then `orderpipe predict` (or `orderpipe stream run`)"
        )
        return section
    table = drift_table(profile, scored, model.spec, model.pipeline).sort("psi", descending=True)
    flagged = table.filter(pl.col("flagged")).height
    if newer:
        what = f"the {scored.height:,} most recent events newer than its training data ({through})"
    else:
        what = (
            f"the {scored.height:,} most recent events it scored; none is newer than its "
            f"training data ({through}), so these are mostly the events it was trained on and "
            "a PSI near 0 is expected"
        )
    section.notes.append(
        f"Model {model.version}'s inputs in {what}, against the rows it was fitted on: "
        f"{flagged} feature(s) above PSI {PSI_FLAG}."
    )
    with charts.figure(5.6, 0.8 + 0.28 * table.height) as (fig, ax):
        values = table["psi"].fill_nan(0.0).to_list()
        colors = [charts.COLORS["bad"] if v > PSI_FLAG else charts.COLORS["model"] for v in values]
        charts.barh(ax, table["feature"].to_list(), values, colors)
        ax.axvline(PSI_FLAG, color=charts.COLORS["bad"], linestyle=":", linewidth=1)
        ax.set_xlabel("population stability index")
        ax.set_title("Scored events vs training data")
        section.charts.append(Chart("Drift of each model input", charts.svg(fig)))
    section.tables.append(
        Table(
            "Population stability index per input",
            ["feature", "PSI", f"above {PSI_FLAG}"],
            [
                [row["feature"], f"{row['psi']:.4f}", "yes" if row["flagged"] else ""]
                for row in table.iter_rows(named=True)
            ],
        )
    )
    return section


def scored_events(
    settings: Settings, model_version: str, spec: FeatureSpec, through: str | None
) -> tuple[pl.DataFrame, bool]:
    """The clean columns `spec` reads of the most recent events `model_version` scored, from
    the tables: those newer than `through` (the training data's latest event) when there are
    any (True), else any it scored (False)."""
    from datetime import datetime

    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from orderpipe.db.engine import make_engine, sqlite_file
    from orderpipe.db.models import Customer, Event, Order, Prediction

    def column(name: str) -> Any:
        for table in (Event, Order, Customer):
            if name in table.__table__.columns:
                return getattr(table, name)
        raise OrderpipeError(f"no table holds the model input {name!r}")

    columns = [column(name) for name in spec.inputs]
    url = settings.db_url
    database = sqlite_file(url)
    if database is not None and not Path(database).is_file():
        return pl.DataFrame(schema=spec.inputs), False
    cutoff = datetime.fromisoformat(through) if through else None

    def query(newer: bool) -> Any:
        # the events first (most recent predictions of the model), then their columns
        recent = select(Prediction.event_id).where(Prediction.model_version == model_version)
        if newer and cutoff is not None:
            recent = recent.join(Event, Event.event_id == Prediction.event_id).where(
                Event.event_time > cutoff
            )
        ids = recent.order_by(Prediction.predicted_at.desc()).limit(DRIFT_ROWS).subquery()
        return (
            select(*columns)
            .select_from(ids)
            .join(Event, Event.event_id == ids.c.event_id)
            .join(Order, Order.order_id == Event.order_id)
            .join(Customer, Customer.customer_id == Event.customer_id)
        )

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query(newer=True)).all() if cutoff is not None else []
            newer = bool(rows)
            if not rows:
                rows = conn.execute(query(newer=False)).all()
    except SQLAlchemyError as exc:
        raise OrderpipeError(str(exc).splitlines()[0]) from None
    finally:
        engine.dispose()
    return pl.DataFrame([tuple(row) for row in rows], schema=spec.inputs, orient="row"), newer


# ---------------------------------------------------------------- stream
def stream_section(layout: Layout, settings: Settings) -> Section:
    from orderpipe.history import read_entries, stream_runs

    section = Section("stream", "Stream")
    runs = stream_runs(read_entries(layout.runs_history))[-STREAM_RUNS:]
    if not runs:
        section.notes.append(
            f"no stream run in {layout.runs_history}: run `orderpipe run-all` or "
            "`orderpipe stream run`"
        )
    else:
        _stream_charts(section, runs)
    note, table = _dead_letters(settings)
    section.notes.append(note)
    if table is not None:
        section.tables.append(table)
    return section


def _stream_charts(section: Section, runs: list[dict[str, Any]]) -> None:
    labels = [f"{i + 1}" for i in range(len(runs))]
    with charts.figure(7.6, 3.2, ncols=2) as (fig, (left, right)):
        left.bar(labels, [r.get("events_per_second") or 0 for r in runs], color="#1f77b4")
        left.set_title("Throughput (events/s while streaming)")
        left.set_xlabel("run (oldest first)")
        for key, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
            right.plot(labels, [r.get(f"latency_{key}_ms") for r in runs], style, label=key)
        right.set_title("Latency, produce to stored (ms)")
        right.set_xlabel("run (oldest first)")
        right.legend()
        section.charts.append(Chart(f"The last {len(runs)} stream runs", charts.svg(fig)))
    section.tables.append(
        Table(
            "Stream runs",
            ["run", "finished", "by", "events", "events/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [
                    label,
                    r["finished_at"],
                    r["source"],
                    _n(r.get("events")),
                    _n(r.get("events_per_second")),
                    *[_f(r.get(f"latency_{k}_ms"), 1) for k in ("p50", "p95", "p99", "max")],
                ]
                for label, r in zip(labels, runs, strict=True)
            ],
        )
    )


def _dead_letters(settings: Settings) -> tuple[str, Table | None]:
    """A note on the DLQ and its counts by reason from the configured broker (None when there
    are none to count: the note says why)."""
    from aiokafka.errors import KafkaError

    from orderpipe.stream.admin import collect_status
    from orderpipe.stream.kafka import KafkaEndpoint, cluster_metadata
    from orderpipe.stream.messages import dlq_topic

    dlq = dlq_topic(settings.kafka_topic)
    if settings.kafka_bootstrap_servers == "embedded":
        return (
            f"dead letters: the embedded broker lives for one command, so {dlq} is gone; "
            "point ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS at a running broker to count them"
        ), None
    endpoint = KafkaEndpoint.from_settings(settings)

    async def read() -> Any:
        await cluster_metadata(endpoint, 3.0)
        return await asyncio.wait_for(
            collect_status(endpoint, settings.kafka_topic, settings.kafka_group_id), 20
        )

    try:
        status = asyncio.run(read())
    except (KafkaError, OSError, TimeoutError, OrderpipeError) as exc:
        reason = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc) else "")
        return f"dead letters: {settings.kafka_bootstrap_servers} did not answer ({reason})", None
    summary = status.dlq
    if not summary.exists or summary.messages == 0:
        return f"dead letters: {dlq} is empty", None
    rows = [[reason, _n(count)] for reason, count in summary.reasons.items()]
    if summary.other_reasons:
        rows.append(["(other reasons)", _n(summary.other_reasons)])
    scanned = f", the newest {summary.scanned:,} read" if summary.capped else ""
    table = Table(f"{dlq}: {summary.messages:,} letters{scanned}", ["reason", "letters"], rows)
    return f"dead letters: {summary.messages:,} in {dlq}", table


# ---------------------------------------------------------------- energy
def energy_section(layout: Layout) -> Section:
    from orderpipe.eco.report import build_report

    section = Section("energy", "Energy")
    try:
        report = build_report(layout.eco_output_dir)
    except OrderpipeError as exc:
        section.notes.append(str(exc))
        return section
    phases = sorted(report.phases, key=lambda p: -p.energy_kwh)
    per_1000 = [p for p in phases if p.energy_kwh_per_1000_events is not None]
    with charts.figure(7.6, 0.9 + 0.3 * len(phases), ncols=2) as (fig, (left, right)):
        charts.barh(left, [p.phase for p in phases], [p.energy_kwh for p in phases], "#8c564b")
        left.set_title(f"Energy by phase, {report.runs} run(s) (kWh)")
        charts.barh(
            right,
            [p.phase for p in per_1000],
            [p.energy_kwh_per_1000_events or 0 for p in per_1000],
            "#bcbd22",
        )
        right.set_title("kWh per 1,000 events")
        section.charts.append(Chart("Energy by phase", charts.svg(fig)))
    runs = report.per_run
    with charts.figure(7.6, 3.0) as (fig, ax):
        ax.plot(
            [r["started"][:19].replace("T", " ") for r in runs],
            [r["energy_kwh"] for r in runs],
            "-o",
            color="#8c564b",
        )
        ax.set_ylabel("kWh")
        ax.set_ylim(bottom=0)
        ax.set_title("Energy per run, over time")
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        section.charts.append(Chart("Energy per run", charts.svg(fig)))
    intensity = report.carbon_intensity_kg_per_kwh
    section.notes.append(
        f"{report.total_energy_kwh:.3e} kWh and {report.total_emissions_kg * 1000:.3f} g CO2e "
        f"in {report.runs} run(s), measured by CodeCarbon ({', '.join(report.methods) or '-'})"
        + (f", {intensity * 1000:.0f} g CO2e/kWh" if intensity else "")
        + f" in {', '.join(report.countries) or '-'}."
    )
    section.tables.append(
        Table(
            "Per phase",
            ["phase", "runs", "seconds", "kWh", "g CO2e", "share", "kWh / 1,000 events"],
            [
                [
                    p.phase,
                    str(p.runs),
                    f"{p.duration_s:.1f}",
                    f"{p.energy_kwh:.3e}",
                    f"{p.emissions_kg * 1000:.4f}",
                    f"{p.share:.0%}",
                    "-"
                    if p.energy_kwh_per_1000_events is None
                    else f"{p.energy_kwh_per_1000_events:.3e}",
                ]
                for p in phases
            ],
        )
    )
    return section

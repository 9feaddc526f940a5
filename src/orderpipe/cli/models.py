"""Model commands: train, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderpipe.cli.app import DatabaseUrlOption, JsonOption, app, run_service, settings_of
from orderpipe.cli.render import (
    emit,
    emit_table,
    finish_now,
    n,
    table,
    table_progress,
    what_was_read,
)
from orderpipe.core.layout import Layout
from orderpipe.ml import ModelKind

CLASSIFIER_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall")


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[ModelKind, typer.Argument(help="Which model to fit.")] = ModelKind.all,
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Clean dataset: etl's table (default) or a .parquet/.csv/.jsonl file.",
        ),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Generator truth file for the oracle metrics; default: found beside "
            "<data_dir>/raw/orders_events.jsonl when it exists."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and estimators.")] = 42,
    max_rows: Annotated[
        int,
        typer.Option(
            min=0,
            help="Fit on at most this many rows: a sample stratified by is_returned, recorded "
            "in the metadata (0: every row).",
        ),
    ] = 2_000_000,
    as_json: JsonOption = False,
) -> None:
    """Train the return classifier and/or the basket-value regressor; save Pipeline + metadata.

    Writes <artifacts_dir>/<name>_model.joblib and <name>_model_meta.json.

    Example: [bold]orderpipe train classification[/]
    """
    from orderpipe.ml.train import run_train

    def call() -> Any:
        layout = Layout.from_settings(settings_of(ctx))
        with table_progress() as on_progress:
            return run_train(
                model.value,
                input_path or layout.table,
                layout.artifacts_dir,
                seed=seed,
                truth_path=truth or layout.truth,
                max_rows=max_rows or None,
                progress=on_progress,
            )

    results = run_service(ctx, call)

    def render(out: Console) -> None:
        for result in results:
            out.print(table(f"train {result.name}", _train_rows(result)))

    emit({"models": results}, as_json, render)
    finish_now()  # the models are written: no teardown of scikit-learn and polars to wait for


def _train_rows(result: Any) -> list[tuple[str, str]]:
    test = result.metrics["test"]
    rows = [
        ("estimator", result.estimator),
        ("model_version", result.model_version),
        ("rows", n(result.rows)),
        ("seconds", f"{result.seconds:.1f}"),
    ]
    if result.name == "classification":
        rows += [(key, f"{test[key]:.4f}") for key in CLASSIFIER_METRICS]
        if "oracle" in result.metrics:
            oracle = result.metrics["oracle"]
            rows += [
                ("oracle roc_auc", f"{oracle['roc_auc']:.4f}"),
                ("oracle brier", f"{oracle['brier']:.4f}"),
            ]
    else:
        base = result.metrics["median_baseline"]
        rows += [
            (key, f"{test[key]:.3f} (median baseline {base[key]:.3f})")
            for key in ("mae", "rmse", "r2")
        ]
    rows.append(("model", str(result.model_path)))
    return rows


@app.command()
def predict(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Clean dataset: etl's table (default) or a .parquet/.csv/.jsonl file.",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Score every event again, not only those without a current prediction."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Score the clean dataset with the saved classifier into table_predictions.

    Only events already in table_events are scored (run ingest first); the others are counted.
    Events that hold a prediction of this model are left alone: from etl's table, a run reads
    only the days changed since the last one with the same model.

    Example: [bold]orderpipe predict --json[/]
    """
    from orderpipe.ml.predict import run_predict

    with table_progress() as on_progress:

        def call() -> Any:
            settings = settings_of(ctx, database_url=database_url)
            layout = Layout.from_settings(settings)
            return run_predict(
                input_path or layout.table,
                settings.db_url,
                layout.artifacts_dir,
                chunk_size=settings.ingest_chunk_size,
                local_infile=settings.mysql_local_infile,
                progress=on_progress,
                full=full,
            )

        result = run_service(ctx, call)
    emit_table(
        result,
        as_json,
        "predict",
        [
            ("database", result.database),
            ("model_version", result.model_version),
            ("read", what_was_read(result)),
            ("events looked at", n(result.events)),
            ("scored", n(result.scored)),
            ("already scored by this model", n(result.up_to_date)),
            ("not in table_events", n(result.not_in_database)),
            ("scoring events/s", n(result.scoring_events_per_second)),
            ("seconds", f"{result.seconds:.2f}"),
        ],
    )
    finish_now()  # the predictions are committed: no teardown of scikit-learn to wait for

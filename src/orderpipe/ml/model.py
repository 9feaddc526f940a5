"""Model artifacts: save a fitted Pipeline with its metadata atomically, load and check it, score.

`<name>_model.joblib` holds the fitted Pipeline only; `<name>_model_meta.json` its metrics,
features, data hash, library versions and `model_version` (a short hash of the joblib file).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from orderpipe.core.crashpoints import crash_point
from orderpipe.core.errors import OrderpipeError
from orderpipe.core.fileio import disk_full_as_error, leftovers, remove_leftovers, staged_paths
from orderpipe.core.layout import evaluation_file, model_files
from orderpipe.ml.features import SPECS, FeatureSpec


def library_versions() -> dict[str, str]:
    import joblib
    import sklearn

    return {
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "polars": pl.__version__,
        "numpy": np.__version__,
    }


def save_model(
    pipeline: Any,
    meta: dict[str, Any],
    artifacts_dir: Path,
    name: str,
    evaluation: pl.DataFrame | None = None,
) -> str:
    """Write the Pipeline, its metadata and its evaluation sample; returns model_version.
    Nothing half-written is left.

    The joblib file is renamed into place first (the commit), then the metadata and the
    evaluation sample that name its hash. A training killed after the commit leaves them
    pending: the next reader or training finds them by the hash and moves them into place
    (`finish_pending_metadata`).
    """
    import joblib

    model_path, meta_path = model_files(artifacts_dir, name)
    eval_path = evaluation_file(artifacts_dir, name)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    finish_pending_metadata(artifacts_dir, name)
    # of killed trainings
    remove_leftovers(artifacts_dir, {model_path.name, meta_path.name, eval_path.name})
    # An older model's evaluation sample stays until replaced: it names that model's hash, so
    # no reader takes it for this one's.
    targets = [model_path, meta_path] + ([eval_path] if evaluation is not None else [])

    def moved(target: Path) -> None:
        if target == model_path:
            crash_point("train.model-moved")
        elif target == meta_path:
            crash_point("train.meta-moved")

    kept = f"the {name} model was not changed"
    with (
        disk_full_as_error(f"the {name} model", model_path, outcome=kept),
        staged_paths(*targets, moved=moved) as tmps,
    ):
        tmp_model, tmp_meta = tmps[:2]
        joblib.dump(pipeline, tmp_model, compress=3)
        digest = hashlib.sha256(tmp_model.read_bytes()).hexdigest()
        version = digest[:12]
        full_meta = {
            **meta,
            "model_version": version,
            "model_sha256": digest,
            "libraries": library_versions(),
        }
        tmp_meta.write_text(json.dumps(full_meta, indent=2, default=str), encoding="utf-8")
        if evaluation is not None:
            evaluation.with_columns(pl.lit(digest).alias("model_sha256")).write_parquet(tmps[2])
    return version


def finish_pending_metadata(artifacts_dir: Path, name: str) -> bool:
    """Move into place the metadata and evaluation sample that a training killed after its
    model's rename left pending (leftovers that name the hash of the model in place); True
    when it moved anything."""
    model_path, meta_path = model_files(artifacts_dir, name)
    eval_path = evaluation_file(artifacts_dir, name)
    pending = leftovers(artifacts_dir, {meta_path.name, eval_path.name})
    if not pending or not model_path.is_file():
        return False
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    moved = False
    for candidate in pending:
        target = eval_path if candidate.name.startswith(f".{eval_path.name}") else meta_path
        if _names_model(candidate, digest, parquet=target == eval_path):
            os.replace(candidate, target)
            moved = True
    return moved


def _names_model(path: Path, digest: str, *, parquet: bool) -> bool:
    try:
        if parquet:
            named = pl.read_parquet(path, columns=["model_sha256"], n_rows=1)["model_sha256"]
            return named.len() == 1 and named[0] == digest
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return False
    return isinstance(meta, dict) and meta.get("model_sha256") == digest


def read_evaluation(artifacts_dir: Path, meta: dict[str, Any], name: str) -> pl.DataFrame | None:
    """The evaluation sample of the model `meta` describes; None when there is none or it
    belongs to another model (trained before samples were kept, or replaced since)."""
    path = evaluation_file(artifacts_dir, name)
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError):
        return None
    if "model_sha256" not in frame.columns or frame.height == 0:
        return None
    if frame["model_sha256"][0] != meta.get("model_sha256"):
        return None
    return frame.drop("model_sha256")


@dataclass(frozen=True)
class LoadedModel:
    """A checked model ready to score clean records."""

    name: str
    pipeline: Any
    meta: dict[str, Any]
    spec: FeatureSpec

    @property
    def version(self) -> str:
        return str(self.meta["model_version"])

    def predict_proba(self, clean: pl.DataFrame) -> np.ndarray:
        """Probability of the positive class for each clean record, in one vectorised call: the
        saved Pipeline is given the clean records as they are (it derives its own features)."""
        return self.pipeline.predict_proba(clean)[:, 1]

    def predict(self, clean: pl.DataFrame) -> np.ndarray:
        return self.pipeline.predict(clean)


def load_model(artifacts_dir: Path, name: str) -> LoadedModel:
    """Load `name` and refuse, in one line saying what to run, anything that could score wrong."""
    import joblib
    import sklearn

    fix = f"run `orderpipe train {name}`"
    model_path, meta_path = model_files(artifacts_dir, name)
    finish_pending_metadata(artifacts_dir, name)  # of a training killed between its renames
    if not model_path.is_file() or not meta_path.is_file():
        raise OrderpipeError(f"no {name} model in {artifacts_dir}: {fix}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OrderpipeError(f"unreadable model metadata {meta_path} ({exc}): {fix}") from None
    spec = SPECS[name]
    trained_with = str(meta.get("libraries", {}).get("scikit-learn", "?"))
    if trained_with.split(".")[0] != sklearn.__version__.split(".")[0]:
        raise OrderpipeError(
            f"{model_path} was trained with scikit-learn {trained_with}, this is "
            f"{sklearn.__version__}: {fix}"
        )
    if "inputs" not in meta:
        raise OrderpipeError(
            f"{model_path} was trained by an older orderpipe whose model needs features built "
            f"outside it: {fix}"
        )
    if meta["inputs"] != spec.inputs or meta.get("features") != spec.columns:
        raise OrderpipeError(
            f"{model_path} reads {meta['inputs']} for features {meta.get('features')}; orderpipe "
            f"provides {spec.inputs} for {spec.columns}: {fix}"
        )
    data = model_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("model_sha256"):
        raise OrderpipeError(f"{model_path} does not match its metadata {meta_path}: {fix}")
    try:
        pipeline = joblib.load(model_path)
    except Exception as exc:
        raise OrderpipeError(f"cannot load {model_path} ({type(exc).__name__}): {fix}") from None
    return LoadedModel(name=name, pipeline=pipeline, meta=meta, spec=spec)

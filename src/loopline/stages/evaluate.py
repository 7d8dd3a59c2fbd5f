"""The evaluate stage: a registered model version judged on the newest settled labels.

A model-risk reviewer's question after deployment: how does the champion (or any version) do
on the most recent labelled window? The stage loads the version through the verified package
path, builds the point-in-time frame of the newest `days` days of settled labels through the
version's own feature service, and records a run of kind `evaluate` with the task's metrics and
the full evaluation report (slices, fairness, calibration). Rows the version was trained on are
counted and reported (`overlap_rows`): a window inside the training data flatters the model.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import StageError, open_context
from loopline.store.tables import Run


def _spec_for_service(spec: UseCaseSpec, service: str) -> UseCaseSpec:
    """The spec, reading features through `service` (a version stays on its own service)."""
    if service == spec.features.service:
        return spec
    features = spec.features.model_copy(update={"service": service})
    return spec.model_copy(update={"features": features})


def _trained_until(ctx: Any, run_id: str | None) -> datetime | None:
    """The newest event time of the version's training side (None when unknown)."""
    if run_id is None:
        return None
    with ctx.store.reader() as session:
        run = session.get(Run, run_id)
        end = ((run.summary or {}).get("split") or {}).get("train", {}).get("end") if run else None
    return datetime.fromisoformat(end) if end else None


def run_evaluate(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    ref: str = registry.CHAMPION,
    days: int = 7,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Evaluate a registered version on the newest `days` days of settled labels.

    Args:
        settings: Where the stores are.
        spec: The use case.
        ref: A version number, an alias (default champion) or `latest`.
        days: Width of the window, ending at the newest settled labelled event.
        flow_run_id: The Prefect flow run, if any.

    Raises:
        StageError: bad `days`, or too few labelled rows in the window.
        RegistryError: no such version or alias.
    """
    from loopline.features import transform
    from loopline.registry.package import load_version
    from loopline.stages.train import build_inputs
    from loopline.training.metrics import compute_metrics
    from loopline.training.prepare import labels_for_task
    from loopline.training.report import evaluation_report

    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        raise StageError(f"days: must be an integer from 1 to 3650, got {days!r}")
    ctx = open_context(settings, spec)
    with ctx.store.reader() as session:
        version = registry.resolve_ref(session, f"{spec.model_name}@{ref}")
        session.expunge(version)
    verified = load_version(ctx.store, ctx.artifacts, version, actor="evaluate")
    served = _spec_for_service(spec, version.feature_service)
    params = {"model_name": spec.model_name, "version": version.version, "ref": ref, "days": days}
    with ctx.run("evaluate", flow_run_id=flow_run_id, params=params) as run:
        inputs = build_inputs(dataclasses.replace(ctx, spec=served))
        timestamp = spec.events.timestamp
        frame = inputs.training_set
        newest = frame.get_column(timestamp).max()
        assert isinstance(newest, datetime)
        window = frame.filter(pl.col(timestamp) > newest - timedelta(days=days))
        if window.height < 30:
            raise StageError(
                f"only {window.height} settled labelled rows in the last {days} day(s): too few"
            )
        inputs_matrix = transform.to_numpy(
            transform.model_inputs(window, served, version.feature_service)
        )
        y = labels_for_task(window.get_column(spec.labels.column), spec)
        predictions = verified.booster.predict(inputs_matrix)
        metrics = compute_metrics(spec.task, y, predictions, spec.metrics)
        run.log_metrics(metrics)
        report = evaluation_report(
            window,
            task=spec.task,
            y_true_col=spec.labels.column,
            pred=predictions,
            evaluation=spec.evaluation,
            metrics=spec.metrics,
            classes=spec.labels.classes,
        )
        data = json.dumps(report, sort_keys=True, allow_nan=False).encode()
        run.log_artifact_bytes("evaluation_report", data, media_type="application/json")
        trained_until = _trained_until(ctx, version.run_id)
        overlap = (
            window.filter(pl.col(timestamp) <= trained_until).height if trained_until else None
        )
        summary = {
            "model_name": spec.model_name,
            "version": version.version,
            "feature_service": version.feature_service,
            "window": {
                "start": str(window.get_column(timestamp).min()),
                "end": str(newest),
                "rows": window.height,
            },
            "overlap_rows": overlap,
            "metrics": metrics,
            "recorded_metrics": dict(version.metrics or {}),
        }
        run.set_summary(**summary)
    return summary | {"run_id": run.run_id}

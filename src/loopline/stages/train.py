"""The train stage: point-in-time training set, LightGBM, evaluation, registry, gates.

`build_inputs` reads what a training run trains on (the newest dataset versions, or the ones a
past run recorded, for `loopline reproduce`); `fit_and_record` trains inside a tracked run and
records everything a reviewer asks for; `run_train` is the stage: both, then the model version
with its gate results, committed with the run's success.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from sqlalchemy.orm import Session

from loopline.lake import tables
from loopline.registry import evidence as gate_evidence
from loopline.registry import gates as gate_rules
from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import Context, StageError, latest, open_context, parquet_bytes
from loopline.store.tables import DatasetVersion, Run
from loopline.tracking import RunHandle
from loopline.training.model import TrainedModel
from loopline.training.prepare import Prepared

PROFILE_MAX_ROWS = 50_000
"""Rows of the training side profiled as the drift reference (a seeded sample beyond that)."""


class Fitted(NamedTuple):
    """What `fit_and_record` trained and recorded."""

    model: TrainedModel
    metrics: dict[str, float]
    summary: dict[str, Any]
    report: dict[str, Any] | None


@dataclass
class TrainingInputs:
    """The dataset versions a training reads and the point-in-time training set built from
    them."""

    events: DatasetVersion
    labels: DatasetVersion
    features: dict[str, DatasetVersion]
    training_set: pl.DataFrame
    lineage: dict[str, Any]

    def params(self, spec: UseCaseSpec) -> dict[str, Any]:
        """What the run records as its data inputs."""
        return {
            "events_version": self.events.table_version,
            "labels_version": self.labels.table_version,
            "feature_service": spec.features.service,
        }


def _gate_evidence(
    ctx: Context,
    prepared: Prepared,
    model: TrainedModel,
    metrics: Mapping[str, float],
    report: Mapping[str, Any] | None,
) -> gate_evidence.Evidence:
    """What the spec's gates judge: the champion rescored on this holdout, latency, size, data."""
    gates = ctx.spec.gates
    champion = None
    if any(gate.kind == "beats_champion" for gate in gates):
        champion = gate_evidence.load_champion(ctx.store, ctx.artifacts, ctx.spec.model_name)
    return gate_evidence.collect_evidence(
        gates,
        spec=ctx.spec,
        prepared=prepared,
        model=model,
        metrics=metrics,
        champion=champion,
        report=report,
    )


def _version_of(ctx: Context, dataset: str, table_version: int | None) -> DatasetVersion:
    if table_version is None:
        return latest(ctx, dataset)
    with ctx.store.reader() as session:
        row = (
            session.query(DatasetVersion)
            .filter_by(dataset=dataset, table_version=table_version)
            .one_or_none()
        )
    if row is None:
        raise StageError(f"dataset '{dataset}' has no recorded version {table_version}")
    return row


def build_inputs(
    ctx: Context,
    *,
    events_version: int | None = None,
    labels_version: int | None = None,
    feature_versions: Mapping[str, int | None] | None = None,
) -> TrainingInputs:
    """Read the labelled events and build the point-in-time training set through Feast.

    Args:
        ctx: The stage context.
        events_version, labels_version: Delta versions to read (default: the newest).
        feature_versions: Feature source name -> Delta version to read (default: the newest).

    Raises:
        StageError: a dataset has no (such) version, or too few events are labelled.
    """
    from loopline.features import feast_ops
    from loopline.features.offline_store import pinned_sources
    from loopline.training.dataset import labelled_events

    spec = ctx.spec
    events_dv = _version_of(ctx, spec.events.table, events_version)
    labels_dv = _version_of(ctx, spec.labels.table, labels_version)
    # Lineage covers the tables behind the service's views (other tables serve older services).
    service_views = feast_ops.service_layout(spec.features.service, spec).views
    feature_dvs = {
        t.name: latest(ctx, t.name) for t in spec.features.tables if t.name in service_views
    }
    events = tables.read(events_dv.uri, events_dv.table_version)
    labels = tables.read(labels_dv.uri, labels_dv.table_version)
    as_of = events.get_column(spec.events.timestamp).max()
    assert isinstance(as_of, datetime)
    labelled = labelled_events(events, labels, spec, as_of=as_of)
    if labelled.height < 100:
        raise StageError(f"only {labelled.height} labelled events as of {as_of}: too few")
    store = feast_ops.open_store(ctx.settings)
    with pinned_sources(feature_versions or {}):
        pit = feast_ops.training_set(store, labelled, spec.features.service)
    lineage = {
        "feature_service": spec.features.service,
        "feature_views": pit.lineage(),
        "training_set": {"rows": pit.frame.height},
        "sources": {
            spec.events.table: events_dv.table_version,
            spec.labels.table: labels_dv.table_version,
        },
    }
    return TrainingInputs(events_dv, labels_dv, feature_dvs, pit.frame, lineage)


def _reference_sample(prepared: Prepared, spec: UseCaseSpec) -> tuple[pl.DataFrame, Any]:
    """The training rows profiled as the drift reference: model inputs of a seeded sample
    (at most PROFILE_MAX_ROWS; quantile sketches need no more), and their matrix rows."""
    from loopline.features import transform

    rows = prepared.train.height
    if rows > PROFILE_MAX_ROWS:
        picked = np.sort(
            np.random.default_rng(spec.training.seed).choice(rows, PROFILE_MAX_ROWS, replace=False)
        )
    else:
        picked = np.arange(rows)
    inputs = transform.model_inputs(prepared.train[picked], spec)
    return inputs, prepared.x_train[picked]


def _prediction_profile(model: TrainedModel, x_sample: Any) -> Any:
    from loopline.monitoring.profiles import profile_frame

    predictions = model.predict(x_sample)
    if predictions.ndim == 2:  # multiclass: the predicted class drifts, not a probability
        predictions = predictions.argmax(axis=1).astype(np.float64)
    return profile_frame(pl.DataFrame({"prediction": predictions}))


def _snapshot(run: RunHandle, training_set: pl.DataFrame) -> str:
    return run.log_artifact_bytes(
        "training_set", parquet_bytes(training_set), media_type="application/parquet"
    )


def _json_artifact(run: RunHandle, name: str, value: Any) -> str:
    data = json.dumps(value, sort_keys=True, allow_nan=False).encode()
    return run.log_artifact_bytes(name, data, media_type="application/json")


def fit_and_record(
    run: RunHandle,
    prepared: Prepared,
    spec: UseCaseSpec,
    *,
    overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    explain: bool = True,
) -> Fitted:
    """Train on `prepared` and record the model, its params, curves, metrics and evaluation.

    Args:
        run: The open run to record into.
        prepared: Both sides of the training set.
        spec: The use case.
        overrides: LightGBM params replacing the spec's (tuned values).
        callbacks: Extra LightGBM callbacks (tuning's pruning).
        explain: Also record importance, SHAP, the evaluation report and the drift reference
            (tuning trials skip these).

    Returns:
        The model, its holdout metrics, the summary written to the run and the evaluation
        report (None without `explain`).
    """
    from loopline.training.metrics import compute_metrics
    from loopline.training.model import train_booster
    from loopline.training.report import evaluation_report

    model = train_booster(
        prepared.x_train,
        prepared.y_train,
        prepared.x_valid,
        prepared.y_valid,
        feature_names=prepared.feature_names,
        config=spec.training,
        task=spec.task,
        num_class=prepared.num_class,
        overrides=overrides,
        callbacks=callbacks,
    )
    resolved = model.resolved_params()
    run.log_params({"lightgbm": resolved, "seed": spec.training.seed})
    for key, values in model.curves.items():
        run.log_history(key, values)
    predictions = model.predict(prepared.x_valid)
    metrics = compute_metrics(spec.task, prepared.y_valid, predictions, spec.metrics)
    run.log_metrics(metrics)
    summary: dict[str, Any] = {
        "model_name": spec.model_name,
        "task": spec.task,
        "metrics": metrics,
        "split": prepared.split_record(spec.events.timestamp),
        "train_rows": prepared.train.height,
        "valid_rows": prepared.valid.height,
        "best_iteration": model.best_iteration,
    }
    report = None
    if explain:
        # SHAP (LightGBM's C code, GIL released) on another core while the report is built.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="train-shap") as pool:
            shap_job = pool.submit(model.shap_summary, prepared.x_valid, seed=spec.training.seed)
            report = evaluation_report(
                prepared.valid,
                task=spec.task,
                y_true_col=spec.labels.column,
                pred=predictions,
                evaluation=spec.evaluation,
                metrics=spec.metrics,
                classes=spec.labels.classes,
            )
            shap = shap_job.result()
        importance = model.importance()
        run.log_artifact_bytes(
            "feature_importance", parquet_bytes(importance), media_type="application/parquet"
        )
        _json_artifact(run, "shap_summary", shap)
        _json_artifact(run, "evaluation_report", report)
        summary |= {
            "top_features": importance.head(10).to_dicts(),
            "shap_top": shap["features"][:10],
            "evaluation": _report_digest(report),
        }
    run.set_summary(**summary)
    return Fitted(model, metrics, summary, report)


def _report_digest(report: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation report's headline numbers, kept in the run summary for listing."""
    extras = report.get("extras", {})
    digest: dict[str, Any] = {"slices": len(report.get("slices", []))}
    threshold = extras.get("threshold")
    if threshold:
        digest["threshold"] = threshold.get("threshold")
    calibration = extras.get("calibration")
    if calibration:
        digest["expected_calibration_error"] = calibration.get("ece")
    fairness = report.get("fairness") or []
    if fairness:
        digest["fairness"] = {entry["attribute"]: entry.get("worst") or {} for entry in fairness}
    return digest


def run_train(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    flow_run_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Build a point-in-time training set through Feast, train, evaluate, register, gate.

    Args:
        settings: Where the platform's stores are.
        spec: The use case.
        flow_run_id: The Prefect flow run executing this, if any.
        overrides: LightGBM params replacing the spec's (e.g. a study's best trial).
        parent_run_id: The enclosing run (a tuning study), if any.
    """
    from loopline.monitoring.profiles import profile_frame, serialize
    from loopline.registry.package import PACKAGE_MEDIA_TYPE, package_model
    from loopline.training.prepare import prepare

    ctx = open_context(settings, spec)
    inputs = build_inputs(ctx)
    params = {
        "training": spec.training.model_dump(),
        **inputs.params(spec),
        "overrides": dict(overrides or {}),
    }
    tracked = ctx.run("train", flow_run_id=flow_run_id, params=params, parent_run_id=parent_run_id)
    with (
        tracked as run,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="train-record") as background,
    ):
        _json_artifact(run, "spec", spec.model_dump(mode="json"))
        try:
            prepared = prepare(inputs.training_set, spec)
        except ValueError as exc:
            raise StageError(str(exc)) from exc
        # Bookkeeping that does not need the model runs on another core while LightGBM (one
        # thread, GIL released) trains: the training-set snapshot (content-addressed: its id is
        # the sha256 of its Parquet bytes), its frame hash, the profile of the reference inputs.
        snapshot = background.submit(_snapshot, run, inputs.training_set)
        frame_hash = background.submit(tables.frame_hash, inputs.training_set)
        sample, x_sample = _reference_sample(prepared, spec)
        inputs_profile = background.submit(profile_frame, sample)
        model, metrics, summary, report = fit_and_record(run, prepared, spec, overrides=overrides)
        lineage = inputs.lineage
        lineage["training_set"] |= {
            "artifact_id": snapshot.result(),
            "frame_hash": frame_hash.result(),
        }
        run.set_summary(lineage=lineage)
        reference = inputs_profile.result().merge(_prediction_profile(model, x_sample))
        profile_id = run.log_artifact_bytes(
            "reference_profile", serialize(reference), media_type="application/x-whylogs"
        )
        model_id = run.log_artifact_bytes(
            "model", model.to_bytes(), media_type="text/x-lightgbm-model"
        )
        evidence = _gate_evidence(ctx, prepared, model, metrics, report)
        verdicts = gate_rules.evaluate_gates(spec.gates, evidence)
        _json_artifact(run, "gate_evidence", evidence.as_dict())
        datasets = {"events": inputs.events.id, "labels": inputs.labels.id}
        datasets |= {f"feature:{name}": dv.id for name, dv in inputs.features.items()}
        # The version's verifiable package: model text, signature, metadata, one sha256.
        package = package_model(
            model.to_bytes(),
            feature_names=prepared.feature_names,
            feature_types=[
                "categorical" if name in spec.features.categorical else "float64"
                for name in prepared.feature_names
            ],
            feature_service=spec.features.service,
            metadata={
                "run_id": run.run_id,
                "use_case": spec.name,
                "task": spec.task,
                "metrics": metrics,
                "datasets": datasets,
                "lineage": lineage,
            },
        )
        package_id = run.log_artifact_bytes("model_package", package, media_type=PACKAGE_MEDIA_TYPE)
        registered: dict[str, int] = {}

        def register(session: Session) -> None:
            # Committed in the transaction that closes the run as succeeded, or not at all: a
            # process killed before the end leaves a crashed run and no version pointing at it.
            version = registry.register_version(
                session,
                model_name=spec.model_name,
                use_case=spec.name,
                run_id=run.run_id,
                artifact_id=model_id,
                package_id=package_id,
                feature_service=spec.features.service,
                feature_names=prepared.feature_names,
                metrics=metrics,
                datasets=datasets,
                reference_profile_id=profile_id,
            )
            # What the model was trained on, next to its inputs: the service it is pinned to,
            # each view's definition hash and source version, the training-set snapshot.
            version.feature_names = {**version.feature_names, **lineage}
            gate_rules.record_gate_results(
                session, model_version_id=version.id, verdicts=verdicts, run_id=run.run_id
            )
            row = session.get_one(Run, run.run_id)
            row.summary = {**row.summary, "model_version": version.version}
            registered["version"] = version.version

        run.on_success(register)
        summary["gates_passed"] = all(v.passed for v in verdicts)
        run.set_summary(gates_passed=summary["gates_passed"])
    result = {k: v for k, v in summary.items() if k not in ("top_features", "shap_top")}
    result["model_version"] = registered["version"]
    result["run_id"] = run.run_id
    return result

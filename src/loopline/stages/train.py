"""The train stage: point-in-time training set, LightGBM, evaluation, registry, gates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy.orm import Session

from loopline.lake import tables
from loopline.registry import gates as gate_rules
from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import Context, StageError, latest, open_context, parquet_bytes
from loopline.store.tables import Run


def _champion_metrics(ctx: Context) -> dict[str, float] | None:
    with ctx.store.reader() as session:
        target = registry.get_alias(session, ctx.spec.model_name, registry.CHAMPION)
        return dict(target.model_version.metrics) if target else None


def run_train(
    settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Build a point-in-time training set through Feast, train, evaluate, register, gate."""
    from loopline.features import feast_ops, transform
    from loopline.monitoring.profiles import profile_frame, serialize
    from loopline.training.dataset import labelled_events
    from loopline.training.model import evaluate, time_split, train_booster

    ctx = open_context(settings, spec)
    events_dv = latest(ctx, spec.events.table)
    labels_dv = latest(ctx, spec.labels.table)
    # Lineage covers the tables behind the service's views (other tables serve older services).
    service_views = feast_ops.service_layout(spec.features.service, spec).views
    feature_dvs = {
        t.name: latest(ctx, t.name) for t in spec.features.tables if t.name in service_views
    }
    params = {
        "training": spec.training.model_dump(),
        "events_version": events_dv.table_version,
        "labels_version": labels_dv.table_version,
        "feature_service": spec.features.service,
    }
    with ctx.run("train", flow_run_id=flow_run_id, params=params) as run:
        events = tables.read(events_dv.uri, events_dv.table_version)
        labels = tables.read(labels_dv.uri, labels_dv.table_version)
        as_of = events.get_column(spec.events.timestamp).max()
        assert isinstance(as_of, datetime)
        labelled = labelled_events(events, labels, spec, as_of=as_of)
        if labelled.height < 100:
            raise StageError(f"only {labelled.height} labelled events as of {as_of}: too few")
        store = feast_ops.open_store(settings)
        pit = feast_ops.training_set(store, labelled, spec.features.service)
        training_set = pit.frame
        # The snapshot is content-addressed: its artifact id is the sha256 of its Parquet bytes.
        snapshot_id = run.log_artifact_bytes(
            "training_set", parquet_bytes(training_set), media_type="application/parquet"
        )
        lineage = {
            "feature_service": spec.features.service,
            "feature_views": pit.lineage(),
            "training_set": {
                "artifact_id": snapshot_id,
                "frame_hash": tables.frame_hash(training_set),
                "rows": training_set.height,
            },
            "sources": {
                spec.events.table: events_dv.table_version,
                spec.labels.table: labels_dv.table_version,
            },
        }
        run.set_summary(lineage=lineage)
        train_df, valid_df = time_split(
            training_set, spec.events.timestamp, spec.training.valid_fraction
        )
        names = transform.feature_names(spec)
        x_train = transform.to_numpy(transform.model_inputs(train_df, spec))
        x_valid = transform.to_numpy(transform.model_inputs(valid_df, spec))
        y_train = train_df.get_column(spec.labels.column).to_numpy()
        y_valid = valid_df.get_column(spec.labels.column).to_numpy()
        model = train_booster(
            x_train, y_train, x_valid, y_valid, feature_names=names, config=spec.training
        )
        metrics = evaluate(y_valid, model.predict(x_valid), spec.metrics)
        run.log_metrics(metrics)
        for key, values in model.curves.items():
            run.log_history(key, values)
        reference = transform.model_inputs(train_df, spec).with_columns(
            prediction=pl.Series(model.predict(x_train))
        )
        profile_id = run.log_artifact_bytes(
            "reference_profile",
            serialize(profile_frame(reference)),
            media_type="application/x-whylogs",
        )
        model_id = run.log_artifact_bytes(
            "model", model.to_bytes(), media_type="text/x-lightgbm-model"
        )
        champion = _champion_metrics(ctx)
        verdicts = gate_rules.evaluate_gates(spec.gates, metrics, champion)
        datasets = {"events": events_dv.id, "labels": labels_dv.id}
        datasets |= {f"feature:{name}": dv.id for name, dv in feature_dvs.items()}
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
                feature_service=spec.features.service,
                feature_names=names,
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
        summary = {
            "model_name": spec.model_name,
            "metrics": metrics,
            "gates_passed": all(v.passed for v in verdicts),
            "train_rows": train_df.height,
            "valid_rows": valid_df.height,
            "best_iteration": model.best_iteration,
        }
        run.set_summary(**summary)
    summary["model_version"] = registered["version"]
    summary["run_id"] = run.run_id
    return summary

"""The stages of the loop as plain functions: what each Prefect flow task calls.

Each stage opens what it needs from `Settings`, records itself as a run, does its work through
the domain modules, and returns a small JSON-able summary. No Prefect in here, so every stage
runs the same from a flow, the CLI, a test, or a Dask worker.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import select

from loopline.data.ingest import discover, ingest_files, latest_version
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.registry import gates as gate_rules
from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.store import Store
from loopline.store.tables import DatasetVersion, GateResult
from loopline.tracking import RunHandle, tracked_run


class StageError(RuntimeError):
    """A stage cannot run with what the stores hold (for example: nothing ingested yet)."""


@dataclass
class Context:
    """The stores a stage works with."""

    settings: Settings
    spec: UseCaseSpec
    store: Store
    artifacts: ArtifactStore

    def run(
        self, kind: str, *, flow_run_id: str | None, params: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[RunHandle]:
        """A tracked run of this use case."""
        return tracked_run(
            self.store,
            self.artifacts,
            kind=kind,
            use_case=self.spec.name,
            project_dir=self.settings.project_dir,
            params=params,
            flow_run_id=flow_run_id,
            tags={"use_case": self.spec.name},
        )


def open_context(settings: Settings, spec: UseCaseSpec) -> Context:
    """Open the metadata store (upgrading it) and the artifact store."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return Context(settings, spec, Store.open(settings), ArtifactStore(settings.artifacts_dir))


def write_demo_data(
    settings: Settings, *, days: int, customers: int, seed: int, drift_start_day: int | None = None
) -> tuple[int, int]:
    """Generate the demo and write `days` days of history plus one more day of live traffic
    (`<home>/raw/live/transactions.csv`, for `loopline replay`). Returns (history, live) rows.
    """
    from loopline.data.demo import DemoConfig, generate_demo, split_live, write_demo, write_live

    config = DemoConfig(
        days=days + 1, customers=customers, seed=seed, drift_start_day=drift_start_day
    )
    history, live = split_live(generate_demo(config))
    write_live(live, settings.raw_dir)
    write_demo(history, settings.raw_dir)  # its manifest last: present only when complete
    return history.transactions.height, live.height


def ensure_demo_data(settings: Settings, *, days: int, customers: int, seed: int) -> bool:
    """Write the demo's raw files under the data home unless they are there; True if written."""
    from loopline.data.demo import demo_present

    if demo_present(settings.raw_dir):
        return False
    write_demo_data(settings, days=days, customers=customers, seed=seed)
    return True


def run_ingest(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    paths: Mapping[str, list[Path]] | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Ingest new raw files of the events and label tables.

    Args:
        paths: table name -> files; default: every file under `<home>/raw/<table>/`.
    """
    ctx = open_context(settings, spec)
    table_specs = {spec.events.table: spec.events, spec.labels.table: spec.labels}
    if paths is not None:
        unknown = sorted(set(paths) - set(table_specs))
        if unknown:
            raise StageError(f"unknown table(s) {unknown}; tables: {sorted(table_specs)}")
    chosen = paths or {name: discover(settings.raw_dir / name) for name in table_specs}
    summary: dict[str, Any] = {}
    with ctx.run("ingest", flow_run_id=flow_run_id, params={"tables": sorted(chosen)}) as run:
        for name, files in chosen.items():
            result = ingest_files(
                ctx.store,
                lake_dir=settings.lake_dir,
                table=table_specs[name],
                use_case=spec.name,
                paths=list(files),
                run_id=run.run_id,
            )
            summary[name] = result.as_dict()
        run.log_metrics({f"{n}_rows": s["rows"] for n, s in summary.items()})
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary


def _builder(reference: str) -> Callable[..., pl.DataFrame]:
    module, function = reference.split(":")
    return getattr(importlib.import_module(module), function)


def _latest(ctx: Context, dataset: str) -> DatasetVersion:
    with ctx.store.reader() as session:
        row = latest_version(session, dataset)
    if row is None:
        raise StageError(f"dataset '{dataset}' has no version yet: run the ingest stage first")
    return row


def _record_version(
    ctx: Context, *, dataset: str, frame: pl.DataFrame, uri: str, version: int, run_id: str
) -> str:
    with ctx.store.session() as session:
        parent = latest_version(session, dataset)
        row = DatasetVersion(
            dataset=dataset,
            use_case=ctx.spec.name,
            table_version=version,
            uri=uri,
            content_hash=tables.frame_hash(frame),
            row_count=frame.height,
            rows_in=frame.height,
            rows_accepted=frame.height,
            schema_={name: str(dtype) for name, dtype in frame.schema.items()},
            sources={"derived_from": "events"},
            parent_id=parent.id if parent else None,
            run_id=run_id,
        )
        session.add(row)
    return row.id


def run_features(
    settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Compute the feature tables from the curated events, register them with Feast, and
    materialize them to the online store."""
    from loopline.features import feast_ops

    ctx = open_context(settings, spec)
    events_version = _latest(ctx, spec.events.table)
    with ctx.run(
        "features", flow_run_id=flow_run_id, params={"events_version": events_version.table_version}
    ) as run:
        events = tables.read(events_version.uri, events_version.table_version)
        as_of = events.get_column(spec.events.timestamp).max()
        assert isinstance(as_of, datetime)
        end = as_of + timedelta(days=1)
        summary: dict[str, Any] = {"as_of": as_of.isoformat()}
        for table in spec.features.tables:
            frame = _builder(table.builder)(events, as_of=end)
            uri = tables.table_uri(settings.lake_dir, table.name)
            version = tables.overwrite(uri, frame, metadata={"run_id": run.run_id})
            _record_version(
                ctx, dataset=table.name, frame=frame, uri=uri, version=version, run_id=run.run_id
            )
            feast_ops.publish_feature_table(frame, settings.features_dir / f"{table.name}.parquet")
            summary[table.name] = {"rows": frame.height, "table_version": version}
        store = feast_ops.open_store(settings)
        feast_ops.apply_repo(store)
        feast_ops.materialize(store, end=end)
        run.log_metrics({f"{t.name}_rows": summary[t.name]["rows"] for t in spec.features.tables})
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary


def _champion_metrics(ctx: Context) -> dict[str, float] | None:
    with ctx.store.reader() as session:
        target = registry.get_alias(session, ctx.spec.model_name, registry.CHAMPION)
        return dict(target.model_version.metrics) if target else None


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.write_parquet(sink)
    return sink.getvalue()


def run_train(
    settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Build a point-in-time training set through Feast, train, evaluate, register, gate."""
    from loopline.features import feast_ops, transform
    from loopline.monitoring.profiles import profile_frame, serialize
    from loopline.training.dataset import labelled_events
    from loopline.training.model import evaluate, time_split, train_booster

    ctx = open_context(settings, spec)
    events_dv = _latest(ctx, spec.events.table)
    labels_dv = _latest(ctx, spec.labels.table)
    feature_dvs = {t.name: _latest(ctx, t.name) for t in spec.features.tables}
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
        training_set = feast_ops.training_frame(store, labelled, spec.features.service)
        run.log_artifact_bytes(
            "training_set", _parquet_bytes(training_set), media_type="application/parquet"
        )
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
        with ctx.store.session() as session:
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
            gate_rules.record_gate_results(
                session, model_version_id=version.id, verdicts=verdicts, run_id=run.run_id
            )
        summary = {
            "model_name": spec.model_name,
            "model_version": version.version,
            "metrics": metrics,
            "gates_passed": all(v.passed for v in verdicts),
            "train_rows": train_df.height,
            "valid_rows": valid_df.height,
            "best_iteration": model.best_iteration,
        }
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary


def run_promote(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    model_version: int | None = None,
    actor: str = "pipeline",
    force: bool = False,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Move `champion` to a model version whose gates all passed (or `force`).

    Args:
        model_version: the version to promote; default the newest.
    """
    ctx = open_context(settings, spec)
    params = {"model_version": model_version, "actor": actor, "force": force}
    with ctx.run("promote", flow_run_id=flow_run_id, params=params) as run:
        with ctx.store.session() as session:
            if model_version is None:
                versions = registry.list_versions(session, spec.model_name)
                if not versions:
                    raise StageError(f"model '{spec.model_name}' has no versions: train first")
                model_version = max(v.version for v in versions)
            candidate = registry.get_version(session, spec.model_name, model_version)
            failed = list(
                session.scalars(
                    select(GateResult.gate).where(
                        GateResult.model_version_id == candidate.id,
                        GateResult.passed.is_(False),
                    )
                )
            )
            current = registry.get_alias(session, spec.model_name, registry.CHAMPION)
            summary: dict[str, Any] = {"model_version": model_version, "failed_gates": failed}
            if current is not None and current.model_version.id == candidate.id:
                summary |= {"promoted": False, "reason": "already champion"}
            elif failed and not force:
                summary |= {"promoted": False, "reason": f"gates failed: {', '.join(failed)}"}
            else:
                registry.set_alias(
                    session,
                    model_name=spec.model_name,
                    alias=registry.CHAMPION,
                    version=model_version,
                    expected_revision=current.revision if current else None,
                    actor=actor,
                    reason="forced" if failed else "all gates passed",
                )
                summary |= {
                    "promoted": True,
                    "previous": current.model_version.version if current else None,
                }
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary


def run_monitor(
    settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Compare served traffic with the serving model's training reference; store drift."""
    from loopline.monitoring.monitor import monitor_predictions

    ctx = open_context(settings, spec)
    with ctx.run("monitor", flow_run_id=flow_run_id) as run:
        drift = monitor_predictions(ctx.store, ctx.artifacts, settings, spec, run_id=run.run_id)
        drifted = sorted(d.feature for d in drift if d.drifted)
        summary = {"features_checked": len(drift), "drifted": drifted}
        run.log_metrics({"features_drifted": len(drifted)})
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary

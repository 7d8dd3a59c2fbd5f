"""Read-only queries behind the control panel: functions of a `Store` that return Polars frames.

Each function opens one read session, selects what one view needs and returns a frame with a
fixed schema, so an empty store gives empty frames with the same columns: pages test
`frame.is_empty()` instead of catching errors. Metric maps are spread into one Float64 column
per metric key after the fixed columns; `metric_columns` names them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import func, select

from loopline.store.db import Store
from loopline.store.tables import (
    Alert,
    Alias,
    AliasEvent,
    DatasetVersion,
    DriftResult,
    GateResult,
    Model,
    ModelVersion,
    ModelVersionDataset,
    Run,
    RunArtifact,
    RunMetric,
)

CHAMPION = "champion"
TS = pl.Datetime("us", "UTC")

MODEL_SCHEMA: dict[str, Any] = {
    "name": pl.String,
    "use_case": pl.String,
    "description": pl.String,
    "created_at": TS,
    "versions": pl.Int64,
}
CHAMPION_SCHEMA: dict[str, Any] = {
    "model_name": pl.String,
    "version": pl.Int64,
    "model_version_id": pl.String,
    "trained_at": TS,
    "promoted_at": TS,
    "promoted_by": pl.String,
    "action": pl.String,
    "reason": pl.String,
}
VERSION_SCHEMA: dict[str, Any] = {
    "model_name": pl.String,
    "version": pl.Int64,
    "id": pl.String,
    "status": pl.String,
    "created_at": TS,
    "aliases": pl.String,
    "is_champion": pl.Boolean,
    "gates_passed": pl.Int64,
    "gates_total": pl.Int64,
    "run_id": pl.String,
    "feature_service": pl.String,
}
RUN_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "kind": pl.String,
    "name": pl.String,
    "status": pl.String,
    "started_at": TS,
    "ended_at": TS,
    "duration_s": pl.Float64,
    "prefect_flow_run_id": pl.String,
    "use_case": pl.String,
}
RUN_COUNT_SCHEMA: dict[str, Any] = {"kind": pl.String, "status": pl.String, "runs": pl.Int64}
RUN_METRIC_SCHEMA: dict[str, Any] = {
    "key": pl.String,
    "step": pl.Int64,
    "value": pl.Float64,
    "is_final": pl.Boolean,
    "logged_at": TS,
}
DATASET_SCHEMA: dict[str, Any] = {
    "role": pl.String,
    "dataset": pl.String,
    "table_version": pl.Int64,
    "row_count": pl.Int64,
    "rows_quarantined": pl.Int64,
    "content_hash": pl.String,
    "created_at": TS,
    "uri": pl.String,
    "dataset_version_id": pl.String,
}
GATE_SCHEMA: dict[str, Any] = {
    "version": pl.Int64,
    "gate": pl.String,
    "passed": pl.Boolean,
    "observed": pl.Float64,
    "threshold": pl.Float64,
    "evaluated_at": TS,
    "detail": pl.String,
}
ALIAS_SCHEMA: dict[str, Any] = {
    "alias": pl.String,
    "version": pl.Int64,
    "revision": pl.Int64,
    "updated_at": TS,
}
ALIAS_EVENT_SCHEMA: dict[str, Any] = {
    "at": TS,
    "alias": pl.String,
    "action": pl.String,
    "from_version": pl.Int64,
    "to_version": pl.Int64,
    "revision": pl.Int64,
    "actor": pl.String,
    "reason": pl.String,
}
DRIFT_SCHEMA: dict[str, Any] = {
    "model_name": pl.String,
    "version": pl.Int64,
    "window_start": TS,
    "window_end": TS,
    "feature": pl.String,
    "method": pl.String,
    "statistic": pl.Float64,
    "threshold": pl.Float64,
    "drifted": pl.Boolean,
    "sample_size": pl.Int64,
    "reference_size": pl.Int64,
    "run_id": pl.String,
}
DRIFT_SUMMARY_SCHEMA: dict[str, Any] = {
    "model_name": pl.String,
    "version": pl.Int64,
    "window_end": TS,
    "features": pl.Int64,
    "drifted": pl.Int64,
    "worst_feature": pl.String,
    "worst_statistic": pl.Float64,
    "threshold": pl.Float64,
}
ALERT_SCHEMA: dict[str, Any] = {
    "created_at": TS,
    "severity": pl.String,
    "kind": pl.String,
    "subject": pl.String,
    "message": pl.String,
    "status": pl.String,
}

_FIXED_COLUMNS = frozenset(
    name for schema in (CHAMPION_SCHEMA, VERSION_SCHEMA, RUN_SCHEMA) for name in schema
)


@dataclass(frozen=True)
class RunDetail:
    """Everything recorded about one run except its metrics (see `run_metrics`)."""

    id: str
    kind: str
    name: str
    status: str
    use_case: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    peak_memory_mb: float | None
    prefect_flow_run_id: str | None
    parent_run_id: str | None
    git_commit: str | None
    lock_hash: str | None
    error: str | None
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from: run, feature service, inputs and dataset versions."""

    model_name: str
    version: int
    model_version_id: str
    run_id: str
    run_name: str | None
    git_commit: str | None
    feature_service: str
    feature_names: list[str]
    artifact_id: str
    datasets: pl.DataFrame


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric top-level entries of a metrics map (nested reports and flags are left out)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def metric_columns(frame: pl.DataFrame) -> list[str]:
    """Names of the metric columns a query spread after its fixed columns."""
    return [c for c, t in frame.schema.items() if c not in _FIXED_COLUMNS and t == pl.Float64]


def _frame(
    rows: list[dict[str, Any]],
    schema: Mapping[str, Any],
    metrics: Sequence[Mapping[str, float]] | None = None,
    *,
    max_metrics: int | None = None,
) -> pl.DataFrame:
    """A frame with a fixed schema, plus one Float64 column per metric key (first seen first).

    With `max_metrics`, only the keys present in the most rows are kept. A metric key equal
    to a fixed column name is dropped rather than overwrite it.
    """
    frame = pl.DataFrame(rows, schema=dict(schema), orient="row")
    if not metrics:
        return frame
    counts: dict[str, int] = {}
    for entry in metrics:
        for key in entry:
            counts[key] = counts.get(key, 0) + 1
    keys = [k for k in counts if k not in schema]
    if max_metrics is not None:
        keys = sorted(keys, key=lambda k: -counts[k])[:max_metrics]
    return frame.with_columns(
        pl.Series(key, [entry.get(key) for entry in metrics], dtype=pl.Float64) for key in keys
    )


def models(store: Store) -> pl.DataFrame:
    """Registered models with their number of versions, by name."""
    with store.reader() as session:
        rows = session.execute(
            select(Model, func.count(ModelVersion.id))
            .outerjoin(ModelVersion, ModelVersion.model_name == Model.name)
            .group_by(Model.name)
            .order_by(Model.name)
        ).all()
        data = [
            {
                "name": m.name,
                "use_case": m.use_case,
                "description": m.description,
                "created_at": m.created_at,
                "versions": n,
            }
            for m, n in rows
        ]
    return _frame(data, MODEL_SCHEMA)


def champions(store: Store) -> pl.DataFrame:
    """One row per model with a champion: its version, metrics, and who promoted it when.

    `promoted_at`/`promoted_by` come from the newest alias event that moved the champion to
    this version; without such an event (an alias set by hand) they fall back to the alias.
    """
    with store.reader() as session:
        pairs = session.execute(
            select(Alias, ModelVersion)
            .join(ModelVersion, ModelVersion.id == Alias.model_version_id)
            .where(Alias.alias == CHAMPION)
            .order_by(Alias.model_name)
        ).all()
        rows, metrics = [], []
        for alias, version in pairs:
            event = session.scalars(
                select(AliasEvent)
                .where(
                    AliasEvent.model_name == alias.model_name,
                    AliasEvent.alias == CHAMPION,
                    AliasEvent.to_version_id == version.id,
                )
                .order_by(AliasEvent.revision.desc(), AliasEvent.id.desc())
                .limit(1)
            ).first()
            rows.append(
                {
                    "model_name": alias.model_name,
                    "version": version.version,
                    "model_version_id": version.id,
                    "trained_at": version.created_at,
                    "promoted_at": event.at if event else alias.updated_at,
                    "promoted_by": event.actor if event else None,
                    "action": event.action if event else None,
                    "reason": event.reason if event else None,
                }
            )
            metrics.append(scalar_metrics(version.metrics))
    return _frame(rows, CHAMPION_SCHEMA, metrics)


def model_versions(store: Store, *, model_name: str | None = None) -> pl.DataFrame:
    """Model versions, newest first, with their aliases, gate tally and metrics.

    `gates_passed`/`gates_total` count the latest verdict of each gate on the version
    (0/0 when no gate was evaluated).
    """
    with store.reader() as session:
        query = select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.version.desc())
        alias_query = select(Alias)
        if model_name is not None:
            query = query.where(ModelVersion.model_name == model_name)
            alias_query = alias_query.where(Alias.model_name == model_name)
        versions = list(session.scalars(query))
        aliases: dict[str, list[str]] = {}
        for alias in session.scalars(alias_query.order_by(Alias.alias)):
            aliases.setdefault(alias.model_version_id, []).append(alias.alias)
        latest: dict[tuple[str, str], bool] = {}
        ids = [v.id for v in versions]
        if ids:
            for gate in session.scalars(
                select(GateResult)
                .where(GateResult.model_version_id.in_(ids))
                .order_by(GateResult.evaluated_at, GateResult.id)
            ):
                latest[(gate.model_version_id, gate.gate)] = gate.passed
        rows = []
        for v in versions:
            verdicts = [passed for (vid, _), passed in latest.items() if vid == v.id]
            names = aliases.get(v.id, [])
            rows.append(
                {
                    "model_name": v.model_name,
                    "version": v.version,
                    "id": v.id,
                    "status": v.status,
                    "created_at": v.created_at,
                    "aliases": ", ".join(names),
                    "is_champion": CHAMPION in names,
                    "gates_passed": sum(verdicts),
                    "gates_total": len(verdicts),
                    "run_id": v.run_id,
                    "feature_service": v.feature_service,
                }
            )
        metrics = [scalar_metrics(v.metrics) for v in versions]
    return _frame(rows, VERSION_SCHEMA, metrics)


def version_lineage(store: Store, *, model_version_id: str) -> Lineage | None:
    """The lineage of one model version, or None if there is no such version."""
    with store.reader() as session:
        version = session.get(ModelVersion, model_version_id)
        if version is None:
            return None
        run = session.get(Run, version.run_id)
        pairs = session.execute(
            select(ModelVersionDataset.role, DatasetVersion)
            .join(DatasetVersion, DatasetVersion.id == ModelVersionDataset.dataset_version_id)
            .where(ModelVersionDataset.model_version_id == model_version_id)
            .order_by(ModelVersionDataset.role)
        ).all()
        datasets = [
            {
                "role": role,
                "dataset": d.dataset,
                "table_version": d.table_version,
                "row_count": d.row_count,
                "rows_quarantined": d.rows_quarantined,
                "content_hash": d.content_hash,
                "created_at": d.created_at,
                "uri": d.uri,
                "dataset_version_id": d.id,
            }
            for role, d in pairs
        ]
        return Lineage(
            model_name=version.model_name,
            version=version.version,
            model_version_id=version.id,
            run_id=version.run_id,
            run_name=run.name if run else None,
            git_commit=run.git_commit if run else None,
            feature_service=version.feature_service,
            feature_names=_feature_list(version.feature_names),
            artifact_id=version.artifact_id,
            datasets=_frame(datasets, DATASET_SCHEMA),
        )


def _feature_list(feature_names: Mapping[str, Any]) -> list[str]:
    """Feature names from the registry's map ({'inputs': [...]}, or any lists it holds)."""
    if isinstance(feature_names.get("inputs"), list):
        return [str(n) for n in feature_names["inputs"]]
    return [str(n) for value in feature_names.values() if isinstance(value, list) for n in value]


def gate_results(store: Store, *, model_name: str) -> pl.DataFrame:
    """Every gate verdict on the model's versions, newest version first."""
    with store.reader() as session:
        pairs = session.execute(
            select(GateResult, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == GateResult.model_version_id)
            .where(ModelVersion.model_name == model_name)
            .order_by(ModelVersion.version.desc(), GateResult.evaluated_at, GateResult.id)
        ).all()
        rows = [
            {
                "version": version,
                "gate": g.gate,
                "passed": g.passed,
                "observed": g.observed,
                "threshold": g.threshold,
                "evaluated_at": g.evaluated_at,
                "detail": _brief(g.detail),
            }
            for g, version in pairs
        ]
    return _frame(rows, GATE_SCHEMA)


def _brief(detail: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in detail.items())


def aliases(store: Store, *, model_name: str) -> pl.DataFrame:
    """The model's aliases now: which version each points at, and its revision."""
    with store.reader() as session:
        pairs = session.execute(
            select(Alias, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == Alias.model_version_id)
            .where(Alias.model_name == model_name)
            .order_by(Alias.alias)
        ).all()
        rows = [
            {
                "alias": a.alias,
                "version": version,
                "revision": a.revision,
                "updated_at": a.updated_at,
            }
            for a, version in pairs
        ]
    return _frame(rows, ALIAS_SCHEMA)


def alias_events(store: Store, *, model_name: str) -> pl.DataFrame:
    """The history of the model's alias moves, oldest first."""
    with store.reader() as session:
        numbers = dict(
            session.execute(
                select(ModelVersion.id, ModelVersion.version).where(
                    ModelVersion.model_name == model_name
                )
            ).all()
        )
        events = session.scalars(
            select(AliasEvent)
            .where(AliasEvent.model_name == model_name)
            .order_by(AliasEvent.at, AliasEvent.id)
        )
        rows = [
            {
                "at": e.at,
                "alias": e.alias,
                "action": e.action,
                "from_version": numbers.get(e.from_version_id) if e.from_version_id else None,
                "to_version": numbers.get(e.to_version_id) if e.to_version_id else None,
                "revision": e.revision,
                "actor": e.actor,
                "reason": e.reason,
            }
            for e in events
        ]
    return _frame(rows, ALIAS_EVENT_SCHEMA)


def run_counts(store: Store) -> pl.DataFrame:
    """Number of runs per kind and status."""
    with store.reader() as session:
        rows = session.execute(
            select(Run.kind, Run.status, func.count(Run.id))
            .group_by(Run.kind, Run.status)
            .order_by(Run.kind, Run.status)
        ).all()
    return _frame([{"kind": k, "status": s, "runs": n} for k, s, n in rows], RUN_COUNT_SCHEMA)


def runs(
    store: Store,
    *,
    kinds: Sequence[str] = (),
    statuses: Sequence[str] = (),
    limit: int = 500,
    max_metrics: int = 6,
) -> pl.DataFrame:
    """The newest runs (optionally of some kinds/statuses) with their most common final metrics."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    with store.reader() as session:
        query = select(Run).order_by(Run.started_at.desc(), Run.id).limit(limit)
        if kinds:
            query = query.where(Run.kind.in_(list(kinds)))
        if statuses:
            query = query.where(Run.status.in_(list(statuses)))
        found = list(session.scalars(query))
        finals: dict[str, dict[str, float]] = {r.id: {} for r in found}
        if found:
            for run_id, key, value in session.execute(
                select(RunMetric.run_id, RunMetric.key, RunMetric.value)
                .where(RunMetric.run_id.in_(list(finals)), RunMetric.is_final.is_(True))
                .order_by(RunMetric.step)
            ):
                finals[run_id][key] = value  # the highest final step wins
        rows = [{name: getattr(r, name) for name in RUN_SCHEMA} for r in found]
    return _frame(rows, RUN_SCHEMA, [finals[r["id"]] for r in rows], max_metrics=max_metrics)


def run_detail(store: Store, *, run_id: str) -> RunDetail | None:
    """Everything recorded about a run (params, tags, environment, artifacts), or None."""
    with store.reader() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        artifacts = dict(
            session.execute(
                select(RunArtifact.name, RunArtifact.artifact_id)
                .where(RunArtifact.run_id == run_id)
                .order_by(RunArtifact.name)
            ).all()
        )
        return RunDetail(
            id=run.id,
            kind=run.kind,
            name=run.name,
            status=run.status,
            use_case=run.use_case,
            started_at=run.started_at,
            ended_at=run.ended_at,
            duration_s=run.duration_s,
            peak_memory_mb=run.peak_memory_mb,
            prefect_flow_run_id=run.prefect_flow_run_id,
            parent_run_id=run.parent_run_id,
            git_commit=run.git_commit,
            lock_hash=run.lock_hash,
            error=run.error,
            params=dict(run.params),
            tags=dict(run.tags),
            summary=dict(run.summary),
            environment=dict(run.environment),
            artifacts=artifacts,
        )


def run_metrics(store: Store, *, run_id: str) -> pl.DataFrame:
    """Every metric value a run logged, by key and step."""
    with store.reader() as session:
        rows = [
            {
                "key": m.key,
                "step": m.step,
                "value": m.value,
                "is_final": m.is_final,
                "logged_at": m.logged_at,
            }
            for m in session.scalars(
                select(RunMetric)
                .where(RunMetric.run_id == run_id)
                .order_by(RunMetric.key, RunMetric.step)
            )
        ]
    return _frame(rows, RUN_METRIC_SCHEMA)


def final_metrics(metrics: pl.DataFrame) -> pl.DataFrame:
    """From `run_metrics`: the final value of each key (its highest final step)."""
    return (
        metrics.filter(pl.col("is_final"))
        .sort("key", "step")
        .group_by("key", maintain_order=True)
        .last()
        .select("key", "value")
    )


def metric_history(metrics: pl.DataFrame) -> pl.DataFrame:
    """From `run_metrics`: the per-step series of keys that have more than one step.

    A key's history is its non-final rows (a learning curve logged beside its final value);
    a key logged only as final values at several steps is its own history.
    """
    with_history = metrics.filter(~pl.col("is_final")).get_column("key").unique()
    series = metrics.filter(~pl.col("is_final") | ~pl.col("key").is_in(with_history.implode()))
    return (
        series.filter(pl.len().over("key") > 1).select("key", "step", "value").sort("key", "step")
    )


def drift_results(
    store: Store, *, model_name: str | None = None, limit: int = 20_000
) -> pl.DataFrame:
    """Drift statistics per feature and window (newest windows kept), oldest window first."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    with store.reader() as session:
        query = (
            select(DriftResult, ModelVersion.model_name, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == DriftResult.model_version_id)
            .order_by(DriftResult.window_end.desc(), DriftResult.feature)
            .limit(limit)
        )
        if model_name is not None:
            query = query.where(ModelVersion.model_name == model_name)
        rows = [
            {
                "model_name": name,
                "version": version,
                "window_start": d.window_start,
                "window_end": d.window_end,
                "feature": d.feature,
                "method": d.method,
                "statistic": d.statistic,
                "threshold": d.threshold,
                "drifted": d.drifted,
                "sample_size": d.sample_size,
                "reference_size": d.reference_size,
                "run_id": d.run_id,
            }
            for d, name, version in session.execute(query)
        ]
    return _frame(rows, DRIFT_SCHEMA).sort("window_end", "model_name", "version", "feature")


def latest_drift(drift: pl.DataFrame) -> pl.DataFrame:
    """From `drift_results`: per model version, its newest window in one row.

    The worst feature is the one whose statistic is furthest above (or closest to) its
    threshold, relative to the threshold.
    """
    if drift.is_empty():
        return pl.DataFrame(schema=DRIFT_SUMMARY_SCHEMA)
    keys = ["model_name", "version"]
    newest = drift.filter(pl.col("window_end") == pl.col("window_end").max().over(keys))
    ranked = newest.with_columns(
        ratio=pl.col("statistic") / pl.when(pl.col("threshold") > 0).then("threshold").otherwise(1)
    ).sort("ratio", descending=True)
    return (
        ranked.group_by(keys, maintain_order=True)
        .agg(
            pl.col("window_end").first(),
            pl.len().alias("features"),
            pl.col("drifted").sum().alias("drifted"),
            pl.col("feature").first().alias("worst_feature"),
            pl.col("statistic").first().alias("worst_statistic"),
            pl.col("threshold").first(),
        )
        .sort(keys)
        .cast(DRIFT_SUMMARY_SCHEMA)
    )


def alerts(store: Store, *, status: str | None = "open", limit: int = 200) -> pl.DataFrame:
    """Alerts, newest first, with a given status (None: any)."""
    with store.reader() as session:
        query = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Alert.status == status)
        rows = [
            {
                "created_at": a.created_at,
                "severity": a.severity,
                "kind": a.kind,
                "subject": f"{a.subject_type}:{a.subject_id}",
                "message": a.message,
                "status": a.status,
            }
            for a in session.scalars(query)
        ]
    return _frame(rows, ALERT_SCHEMA)

"""Read-only queries behind the control panel: functions of a `Store` that return Polars frames.

Each function opens one read session, selects what one view needs and returns a frame with a
fixed schema, so an empty store gives empty frames with the same columns: pages test
`frame.is_empty()` instead of catching errors. Metric maps are spread into one Float64 column
per metric key after the fixed columns; `metric_columns` names them.

Run search and comparison go through `loopline.runs_query` (`search`, `compare`), and a
training run's evaluation is read from its artifacts in the artifact store (`run_evaluation`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, select

from loopline.lake.artifacts import ArtifactStore
from loopline.runs_query import (
    RunComparison,
    compare_runs,
    compile_query,
    count_runs,
    known_keys,
    parse_order_by,
    search_runs,
)
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
from loopline.tracking import RUN_STATUSES
from loopline.training.report import RATE_MEASURES, report_to_frames

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


# --- run search and comparison (the query language of loopline.runs_query) --------------------

SORT_FIELDS = ("started_at", "ended_at", "duration_s", "peak_memory_mb", "name", "kind", "status")
"""Run fields offered for sorting before the metric keys (any query field can be typed)."""


@dataclass(frozen=True)
class RunSearch:
    """One page of a run search.

    `runs` has the run fields of `RunPage.to_frame` and one Float64 column per shown metric,
    named as the query names it (`metrics.roc_auc`); `total` counts every matching run;
    `query` is the query that ran (the typed one and the filters, combined).
    """

    runs: pl.DataFrame
    next_page_token: str | None
    total: int
    query: str


def quote(text: str) -> str:
    """`text` as a run-query string literal (single quotes, an inner quote doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _like_literal(text: str) -> str:
    """A `like` pattern matching `text` exactly."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_query(*, kinds: Sequence[str] = (), statuses: Sequence[str] = ()) -> str:
    """The run-query text of the page's kind and status filters ('' when none is set).

    A status the tracker no longer writes (a store older than its status set) is matched with
    `like`, since `status = ...` only accepts the current statuses.
    """
    parts = []
    if kinds:
        parts.append(f"kind in ({', '.join(quote(k) for k in kinds)})")
    if statuses:
        known = [s for s in statuses if s in RUN_STATUSES]
        alternatives = [f"status in ({', '.join(quote(s) for s in known)})"] if known else []
        alternatives += [
            f"status like {quote(_like_literal(s))}" for s in statuses if s not in RUN_STATUSES
        ]
        either = " or ".join(alternatives)
        parts.append(either if len(alternatives) == 1 else f"({either})")
    return " and ".join(parts)


def combine_queries(query: str, filters: str) -> str:
    """`query` and `filters` joined by `and` (the typed query in parentheses)."""
    query = query.strip()
    if not filters:
        return query
    return f"({query}) and {filters}" if query else filters


def _shown_metrics(frame: pl.DataFrame, named: str, max_metrics: int) -> list[str]:
    """Metric columns to keep: those the query or sort names, then the most filled ones."""
    columns = [c for c in frame.columns if c.startswith("metrics.")]
    first = [c for c in columns if c in named]
    counts = {c: frame.height - frame[c].null_count() for c in columns if c not in first}
    rest = sorted(counts, key=lambda c: (-counts[c], c))
    return first + rest[: max(0, max_metrics - len(first))]


def search(
    store: Store,
    *,
    text: str = "",
    kinds: Sequence[str] = (),
    statuses: Sequence[str] = (),
    order_by: str = "started_at desc",
    page_token: str | None = None,
    limit: int = 50,
    max_metrics: int = 8,
) -> RunSearch:
    """One page of the runs matching a run query and the kind/status filters.

    The typed query is checked on its own first, so an error's position points into the text
    the person typed. The panel never reaps crashed runs (it only reads); the tracker and the
    CLI do.

    Args:
        store: The metadata store.
        text: Run-query text (see `loopline.runs_query`); empty matches every run. (Not
            `query`: `Panel.query` takes that name.)
        kinds, statuses: Runs of these kinds / with these statuses only (none: all).
        order_by: Up to 3 sort keys, e.g. 'metrics.roc_auc desc'.
        page_token: The previous page's `next_page_token`.
        limit: Page size (1 to 1,000).
        max_metrics: Metric columns to show at most (those the query or sort names first).

    Raises:
        QueryError: A bad query, sort order, page token or limit, with its position.
    """
    compile_query(text, dialect=store.engine.dialect.name)
    parse_order_by(order_by)
    effective = combine_queries(text, filter_query(kinds=kinds, statuses=statuses))
    page = search_runs(
        store, effective, order_by=order_by, limit=limit, page_token=page_token, reap=False
    )
    frame = page.to_frame()
    keep = set(_shown_metrics(frame, f"{text} {order_by}", max_metrics))
    frame = frame.select(c for c in frame.columns if not c.startswith("metrics.") or c in keep)
    return RunSearch(frame, page.next_page_token, count_runs(store, effective), effective)


def sort_fields(store: Store) -> list[str]:
    """Fields the sort box offers: the run fields, then `metrics.<key>` per known metric."""
    return [*SORT_FIELDS, *(f"metrics.{key}" for key in known_keys(store)["metrics"])]


def query_pointer(query: str, position: int | None) -> str | None:
    """The query with a caret under the character at `position` (None without a position)."""
    if position is None:
        return None
    lines = query.split("\n")
    offset = 0
    for line in lines:
        if position <= offset + len(line):
            return f"{line}\n{' ' * (position - offset)}^"
        offset += len(line) + 1
    return f"{lines[-1]}\n{' ' * len(lines[-1])}^"


def compare(store: Store, *, run_ids: Sequence[str]) -> RunComparison:
    """`loopline.runs_query.compare_runs` for the panel (2 to 50 runs)."""
    return compare_runs(store, list(run_ids))


def run_titles(comparison: RunComparison) -> dict[str, str]:
    """Per run label of a comparison, a unique display title: 'name (label)'."""
    return {
        label: f"{name} ({label})" if name else label
        for label, name in comparison.runs.select("label", "name").iter_rows()
    }


def param_diff(comparison: RunComparison, *, every_param: bool = False) -> pl.DataFrame:
    """The comparison's params, one column per run: only those that differ unless asked."""
    params = comparison.params if every_param else comparison.params.filter(pl.col("differs"))
    return params.drop("differs").rename(run_titles(comparison))


def metric_table(comparison: RunComparison) -> pl.DataFrame:
    """The comparison's final metrics, one column per run, and which differ."""
    return comparison.metrics.rename(run_titles(comparison))


def comparison_curves(comparison: RunComparison) -> pl.DataFrame:
    """The comparison's learning curves with each run's display title in `run`."""
    titles = pl.DataFrame(
        {"label": list(run_titles(comparison)), "run": list(run_titles(comparison).values())},
        schema={"label": pl.String, "run": pl.String},
    )
    return comparison.curves.join(titles, on="label", how="left").select(
        "run", "key", "step", "value"
    )


# --- a training run's evaluation (artifacts written by loopline.stages.train) -----------------

EVALUATION_ARTIFACTS = ("evaluation_report", "feature_importance", "shap_summary")
MEASURE_TITLES = {
    "selection_rate": "Selection rate",
    "tpr": "True positive rate",
    "fpr": "False positive rate",
}

IMPORTANCE_SCHEMA: dict[str, Any] = {
    "feature": pl.String,
    "gain": pl.Float64,
    "gain_share": pl.Float64,
    "split": pl.Int64,
}
SHAP_SCHEMA: dict[str, Any] = {"feature": pl.String, "mean_abs": pl.Float64, "mean": pl.Float64}
CALIBRATION_SCHEMA: dict[str, Any] = {
    "bin_lower": pl.Float64,
    "bin_upper": pl.Float64,
    "count": pl.Int64,
    "mean_predicted": pl.Float64,
    "observed_rate": pl.Float64,
}
ROC_SCHEMA: dict[str, Any] = {"fpr": pl.Float64, "tpr": pl.Float64, "threshold": pl.Float64}
PR_SCHEMA: dict[str, Any] = {"recall": pl.Float64, "precision": pl.Float64, "threshold": pl.Float64}
RESIDUAL_SCHEMA: dict[str, Any] = {"prediction": pl.Float64, "residual": pl.Float64}
CONFUSION_SCHEMA: dict[str, Any] = {
    "actual": pl.String,
    "predicted": pl.String,
    "count": pl.Int64,
    "share": pl.Float64,
}
PER_CLASS_SCHEMA: dict[str, Any] = {
    "class": pl.String,
    "support": pl.Int64,
    "predicted": pl.Int64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "f1": pl.Float64,
}
FAIRNESS_SCHEMA: dict[str, Any] = {
    "attribute": pl.String,
    "group": pl.String,
    "rows": pl.Int64,
    "small": pl.Boolean,
    "measure": pl.String,
    "rate": pl.Float64,
    "ratio": pl.Float64,
    "difference": pl.Float64,
    "worst": pl.Boolean,
}
FAIRNESS_SUMMARY_SCHEMA: dict[str, Any] = {
    "attribute": pl.String,
    "measure": pl.String,
    "worst_group": pl.String,
    "worst_ratio": pl.Float64,
    "worst_difference": pl.Float64,
    "threshold": pl.Float64,
    "basis": pl.String,
}


@dataclass(frozen=True)
class RunEvaluation:
    """A training run's evaluation as frames for charts (empty frames where not recorded).

    `overall` holds the holdout rows and metrics; `threshold` the binary decision threshold
    with the confusion at it (empty for other tasks); `fairness` one row per (attribute,
    group, measure) with `worst` marking the group whose ratio to the best group is the
    lowest (over the groups not flagged small); `problems` the artifacts that could not be
    read, with why.
    """

    task: str | None
    overall: dict[str, Any]
    notes: list[str]
    problems: list[str]
    importance: pl.DataFrame
    shap: pl.DataFrame
    shap_rows: int | None
    threshold: dict[str, Any]
    calibration: pl.DataFrame
    calibration_error: dict[str, float | None]
    roc: pl.DataFrame
    pr: pl.DataFrame
    residuals: pl.DataFrame
    residual_stats: dict[str, Any]
    confusion: pl.DataFrame
    per_class: pl.DataFrame
    slices: pl.DataFrame
    fairness_groups: pl.DataFrame
    fairness: pl.DataFrame
    fairness_summary: pl.DataFrame
    fairness_notes: dict[str, str]

    @property
    def metric_names(self) -> list[str]:
        """The task metrics of the report, in its order."""
        return [k for k in self.overall if k != "rows"]


def _calibration(calibration: Mapping[str, Any] | None) -> pl.DataFrame:
    if not calibration:
        return pl.DataFrame(schema=CALIBRATION_SCHEMA)
    edges = calibration["edges"]
    return pl.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": calibration["count"],
            "mean_predicted": calibration["mean_predicted"],
            "observed_rate": calibration["observed_rate"],
        },
        schema=CALIBRATION_SCHEMA,
    )


def _curve(
    points: Mapping[str, Any] | None, x: str, y: str, schema: dict[str, Any]
) -> pl.DataFrame:
    if not points:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(
        {x: points[x], y: points[y], "threshold": points["thresholds"]}, schema=schema
    )


def _confusion(matrix: Mapping[str, Any] | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    if not matrix:
        return pl.DataFrame(schema=CONFUSION_SCHEMA), pl.DataFrame(schema=PER_CLASS_SCHEMA)
    classes = [str(c) for c in matrix["classes"]]
    rows = []
    for actual, counts in zip(classes, matrix["matrix"], strict=True):
        total = sum(counts)
        for predicted, count in zip(classes, counts, strict=True):
            rows.append((actual, predicted, int(count), count / total if total else None))
    per_class = pl.DataFrame(
        [{k: c.get(k) for k in PER_CLASS_SCHEMA} for c in matrix.get("per_class", [])],
        schema=PER_CLASS_SCHEMA,
    )
    return pl.DataFrame(rows, schema=CONFUSION_SCHEMA, orient="row"), per_class


def _fairness(report: Mapping[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, str]]:
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for entry in report.get("fairness") or []:
        attribute, groups, worst = entry["attribute"], entry["groups"], entry.get("worst") or {}
        if entry.get("note"):
            notes[attribute] = entry["note"]
        if not worst:
            continue
        reference = [g for g in groups if not g["small"]] or groups
        for measure in RATE_MEASURES:
            ratios = [g for g in reference if g.get(f"{measure}_ratio") is not None]
            lowest = min(ratios, key=lambda g: g[f"{measure}_ratio"]) if ratios else None
            for group in groups:
                rows.append(
                    {
                        "attribute": attribute,
                        "group": group["group"],
                        "rows": group["rows"],
                        "small": group["small"],
                        "measure": measure,
                        "rate": group.get(measure),
                        "ratio": group.get(f"{measure}_ratio"),
                        "difference": group.get(f"{measure}_difference"),
                        "worst": group is lowest,
                    }
                )
            summary.append(
                {
                    "attribute": attribute,
                    "measure": measure,
                    "worst_group": lowest["group"] if lowest else None,
                    "worst_ratio": worst.get(f"{measure}_ratio"),
                    "worst_difference": worst.get(f"{measure}_difference"),
                    "threshold": entry.get("threshold"),
                    "basis": entry.get("best_and_worst_over"),
                }
            )
    return (
        pl.DataFrame(rows, schema=FAIRNESS_SCHEMA, orient="row"),
        pl.DataFrame(summary, schema=FAIRNESS_SUMMARY_SCHEMA, orient="row"),
        notes,
    )


def evaluation_view(
    report: Mapping[str, Any] | None,
    *,
    importance: pl.DataFrame | None = None,
    shap: Mapping[str, Any] | None = None,
    problems: Sequence[str] = (),
) -> RunEvaluation:
    """The frames the Evaluation tab charts, from a run's evaluation artifacts.

    Args:
        report: The `evaluation_report` artifact (`loopline.training.report`), if any.
        importance: The `feature_importance` artifact (feature, gain, gain_share, split).
        shap: The `shap_summary` artifact ({"rows", "expected_value", "features"}).
        problems: Artifacts that could not be read, shown as warnings.
    """
    report = report or {}
    extras = report.get("extras") or {}
    frames = report_to_frames(dict(report)) if report else {}
    calibration = extras.get("calibration") or {}
    residuals = extras.get("residuals") or {}
    confusion, per_class = _confusion(extras.get("confusion_matrix"))
    fairness, fairness_summary, fairness_notes = _fairness(report)
    shap_features = (shap or {}).get("features") or []
    return RunEvaluation(
        task=report.get("task"),
        overall=dict(report.get("overall") or {}),
        notes=list(report.get("notes") or []),
        problems=list(problems),
        importance=(
            importance.select(list(IMPORTANCE_SCHEMA)).cast(IMPORTANCE_SCHEMA)
            if importance is not None
            else pl.DataFrame(schema=IMPORTANCE_SCHEMA)
        ),
        shap=pl.DataFrame(
            [{k: f.get(k) for k in SHAP_SCHEMA} for f in shap_features], schema=SHAP_SCHEMA
        ),
        shap_rows=(shap or {}).get("rows"),
        threshold=dict(extras.get("threshold") or {}),
        calibration=_calibration(calibration),
        calibration_error={"ece": calibration.get("ece"), "mce": calibration.get("mce")},
        roc=_curve(extras.get("roc"), "fpr", "tpr", ROC_SCHEMA),
        pr=_curve(extras.get("pr"), "recall", "precision", PR_SCHEMA),
        residuals=pl.DataFrame(
            {
                "prediction": residuals.get("prediction", []),
                "residual": residuals.get("residual", []),
            },
            schema=RESIDUAL_SCHEMA,
        ),
        residual_stats={k: v for k, v in residuals.items() if k not in RESIDUAL_SCHEMA},
        confusion=confusion,
        per_class=per_class,
        slices=frames.get("slices", pl.DataFrame()),
        fairness_groups=frames.get("fairness", pl.DataFrame()),
        fairness=fairness,
        fairness_summary=fairness_summary,
        fairness_notes=fairness_notes,
    )


def run_evaluation(store: Store, *, run_id: str, artifacts_dir: str) -> RunEvaluation | None:
    """A run's evaluation read from its artifacts, or None if it recorded none of them.

    An artifact that is missing from the store or unreadable is reported in `problems`
    instead of failing the view.

    Args:
        store: The metadata store.
        run_id: The run.
        artifacts_dir: The artifact store's root (`Settings.artifacts_dir`).
    """
    with store.reader() as session:
        ids = dict(
            session.execute(
                select(RunArtifact.name, RunArtifact.artifact_id).where(
                    RunArtifact.run_id == run_id, RunArtifact.name.in_(EVALUATION_ARTIFACTS)
                )
            ).all()
        )
    if not ids:
        return None
    artifacts = ArtifactStore(Path(artifacts_dir))
    problems: list[str] = []

    def read(name: str, parse: Any) -> Any:
        if name not in ids:
            return None
        try:
            return parse(artifacts.get_bytes(ids[name]))
        except Exception as exc:  # a lost or damaged artifact: say so, show the rest
            problems.append(f"{name} ({ids[name][:15]}…) cannot be read: {exc}")
            return None

    report = read("evaluation_report", json.loads)
    importance = read("feature_importance", lambda data: pl.read_parquet(io.BytesIO(data)))
    shap = read("shap_summary", json.loads)
    try:
        return evaluation_view(report, importance=importance, shap=shap, problems=problems)
    except (KeyError, TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        problems.append(f"the evaluation artifacts do not have the expected layout: {exc!r}")
        return evaluation_view(None, problems=problems)


# --- the registry's promotion view (Models page actions) ---------------------------------------

GATE_KINDS = frozenset(
    {"min", "max", "beats_champion", "fairness", "calibration", "latency", "model_size", "data"}
)
GATE_TABLE_SCHEMA: dict[str, Any] = {
    "gate": pl.String,
    "kind": pl.String,
    "verdict": pl.String,
    "measures": pl.String,
    "observed": pl.Float64,
    "threshold": pl.Float64,
    "note": pl.String,
    "evaluated_at": TS,
}
REQUEST_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "version": pl.Int64,
    "from_version": pl.Int64,
    "status": pl.String,
    "override": pl.Boolean,
    "reason": pl.String,
    "requested_by": pl.String,
    "requester_role": pl.String,
    "created_at": TS,
    "expires_at": TS,
    "decided_by": pl.String,
    "decision_note": pl.String,
    "decided_at": TS,
}
_EVIDENCE_SKIP = frozenset({"kind", "error"})


@dataclass(frozen=True)
class GateEvidence:
    """One gate verdict's evidence, ready to show: scalar facts and tables of its lists.

    Attributes:
        gate: The gate's name.
        kind: Its kind (`min`, `beats_champion`, `fairness`, ...; empty when not recorded).
        facts: Label -> value as text (nested maps flattened to `outer.inner`).
        tables: Label -> frame, one per list of records (windows, groups, checks, ...).
    """

    gate: str
    kind: str
    facts: dict[str, str]
    tables: dict[str, pl.DataFrame]

    @property
    def is_empty(self) -> bool:
        """Whether nothing beyond the gate's kind was recorded."""
        return not self.facts and not self.tables


def version_gates(store: Store, *, model_version_id: str) -> Any:
    """The latest verdict of each gate of a version, as the promotion policy judges them.

    Returns:
        `loopline.registry.policy.GateStatus` (`passed`, `failed`, `explain()`, `results`:
        dicts with gate, passed, observed, threshold, evaluated_at, run_id, detail), or None
        if there is no such version.
    """
    from loopline.registry.policy import gate_status

    with store.reader() as session:
        version = session.get(ModelVersion, model_version_id)
        return None if version is None else gate_status(session, version)


def gate_kind(result: Mapping[str, Any]) -> str:
    """A verdict's gate kind: recorded in its detail, else its name when that is a kind."""
    kind = (result.get("detail") or {}).get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return result["gate"] if result["gate"] in GATE_KINDS else ""


def _shown_check(detail: Mapping[str, Any]) -> str | None:
    """The check whose value a fairness or data verdict reports (the first failing one)."""
    checks = [c for c in detail.get("checks") or [] if isinstance(c, Mapping)]
    failing = [c for c in checks if not c.get("passed")]
    shown = (failing or checks or [None])[0]
    return None if shown is None else str(shown.get("check"))


def gate_measures(result: Mapping[str, Any]) -> str:
    """What a verdict's `observed` and `threshold` are, e.g. "improvement vs margin"."""
    detail = result.get("detail") or {}
    metric = detail.get("metric") or "metric"
    kind = gate_kind(result)
    if kind in ("fairness", "data"):
        check = _shown_check(detail)
        return f"{check} vs limit" if check else "value vs limit"
    return {
        "min": f"{metric} vs floor",
        "max": f"{metric} vs ceiling",
        "beats_champion": "improvement vs margin",
        "calibration": "calibration error (ECE) vs max",
        "latency": "p99 ms vs budget",
        "model_size": "MB vs budget",
    }.get(kind, "observed vs threshold")


def _gate_note(result: Mapping[str, Any]) -> str:
    detail = result.get("detail") or {}
    if detail.get("error"):
        return str(detail["error"])
    if detail.get("basis") == "no_champion":
        return "no champion to beat"
    return str(detail.get("note") or "")


def _timestamp(value: Any) -> datetime | None:
    """An ISO text or datetime as an aware UTC datetime (naive values are taken as UTC)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def gate_table(results: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Gate verdicts as a readable table: verdict, what is measured, observed vs threshold.

    Args:
        results: `GateStatus.results` (see `version_gates`).
    """
    rows = [
        {
            "gate": r["gate"],
            "kind": gate_kind(r),
            "verdict": "passed" if r["passed"] else "FAILED",
            "measures": gate_measures(r),
            "observed": r.get("observed"),
            "threshold": r.get("threshold"),
            "note": _gate_note(r),
            "evaluated_at": _timestamp(r.get("evaluated_at")),
        }
        for r in results
    ]
    return _frame(rows, GATE_TABLE_SCHEMA)


def _fact(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fact(v) for v in value) or "—"
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return str(value)


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are, anything nested as compact text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _fact(value)


def _records_frame(records: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    columns = list(dict.fromkeys(key for record in records for key in record))
    cells = [{c: _cell(record.get(c)) for c in columns} for record in records]
    for column in columns:
        kinds = {type(row[column]) for row in cells if row[column] is not None}
        if len(kinds - {int, float}) > 1 or (kinds & {int, float} and kinds - {int, float}):
            for row in cells:  # mixed types in one column: show them all as text
                row[column] = None if row[column] is None else _fact(row[column])
    return pl.DataFrame(cells, infer_schema_length=None, strict=False)


def gate_evidence(result: Mapping[str, Any]) -> GateEvidence:
    """The evidence behind one verdict (its `detail`) as facts and tables.

    Lists of records (beats_champion windows, fairness groups, fairness and data checks) become
    tables; maps are flattened one level into facts (`champion.version`); `kind` and `error`
    are left out (the gate table shows them).
    """
    detail = result.get("detail") or {}
    facts: dict[str, str] = {}
    tables: dict[str, pl.DataFrame] = {}
    for key, value in detail.items():
        if key in _EVIDENCE_SKIP:
            continue
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables[key] = _records_frame(value)
        elif isinstance(value, Mapping) and value:
            facts.update({f"{key}.{k}": _fact(v) for k, v in value.items()})
        else:
            facts[key] = _fact(value)
    return GateEvidence(gate=result["gate"], kind=gate_kind(result), facts=facts, tables=tables)


def version_record(store: Store, *, model_version_id: str) -> dict[str, Any] | None:
    """Everything the registry says about one version (`registry.describe.describe_version`:
    status, aliases, package and model hashes, ...), or None if there is no such version."""
    from loopline.registry.describe import describe_version

    with store.reader() as session:
        version = session.get(ModelVersion, model_version_id)
        return None if version is None else describe_version(session, version)


def promotion_requests(store: Store, *, model_name: str, status: str | None = None) -> pl.DataFrame:
    """The model's promotion requests (two-person rule), newest first, optionally of a status.

    `status` is effective: a pending request past its expiry reads `expired`.
    """
    from loopline.registry.policy import list_requests

    with store.reader() as session:
        requests = list_requests(session, model_name, status=status)
    rows = [
        {
            **{key: r.get(key) for key in REQUEST_SCHEMA},
            **{key: _timestamp(r.get(key)) for key in ("created_at", "expires_at", "decided_at")},
        }
        for r in requests
    ]
    return _frame(rows, REQUEST_SCHEMA)


def alias_moment(store: Store, *, model_name: str, alias: str, at: datetime) -> Any:
    """The move that put `alias` where it stood at `at` (aware), or None if it was not set.

    Returns:
        `loopline.registry.history.AliasChange` (to_version, actor, at, action, reason) or None.
    """
    from loopline.registry.history import alias_change_at

    with store.reader() as session:
        return alias_change_at(session, model_name, alias, at)


def previous_holder(events: pl.DataFrame, alias: str) -> int | None:
    """The version a rollback of `alias` would return to: the source of its last move.

    Args:
        events: A `alias_events` frame (oldest first).
    """
    moves = events.filter(pl.col("alias") == alias).sort("revision")
    return None if moves.is_empty() else moves["from_version"][-1]

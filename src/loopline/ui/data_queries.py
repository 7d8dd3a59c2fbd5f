"""Read-only queries behind the control panel's Data page: ingest batches and feature freshness.

Like `loopline.ui.queries`, each function returns frames with a fixed schema, so an empty store
gives empty frames with the same columns. Batches come from the `data_batches` table (one row
per ingest batch, with its contract results); freshness comes from the feature store itself
(`stages.features.feature_status`: the online watermark per view and the offline Delta table
behind it), so it shows what serving would read now, not what a past run reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.store.db import Store
from loopline.store.tables import DataBatch

TS = pl.Datetime("us", "UTC")
BATCH_STATUSES = ("committed", "rejected", "pending", "rolled_back")
OUTCOMES = ("accepted", "quarantined", "rejected")

BATCH_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "created_at": TS,
    "dataset": pl.String,
    "status": pl.String,
    "rows_in": pl.Int64,
    "rows_accepted": pl.Int64,
    "rows_quarantined": pl.Int64,
    "rows_rejected": pl.Int64,
    "rules_broken": pl.Int64,
    "hard_failures": pl.Int64,
    "files": pl.Int64,
    "table_version": pl.Int64,
    "contract_version": pl.Int64,
    "duration_s": pl.Float64,
    "message": pl.String,
    "run_id": pl.String,
}
RULE_SCHEMA: dict[str, Any] = {
    "column": pl.String,
    "rule": pl.String,
    "severity": pl.String,
    "failures": pl.Int64,
    "examples": pl.String,
}
SOURCE_SCHEMA: dict[str, Any] = {
    "path": pl.String,
    "format": pl.String,
    "bytes": pl.Int64,
    "rows": pl.Int64,
    "sha256": pl.String,
}
FRESHNESS_SCHEMA: dict[str, Any] = {
    "view": pl.String,
    "registered": pl.Boolean,
    "online": pl.Boolean,
    "online_watermark": TS,
    "lag_h": pl.Float64,
    "table_version": pl.Int64,
    "table_rows": pl.Int64,
    "table_watermark": TS,
    "pending_h": pl.Float64,
}


@dataclass(frozen=True)
class BatchDetail:
    """One batch as its detail view shows it: counts, broken rules, source files, changes."""

    id: str
    dataset: str
    status: str
    created_at: datetime
    message: str
    rules: pl.DataFrame
    sources: pl.DataFrame
    schema_changes: dict[str, Any] = field(default_factory=dict)
    report_id: str | None = None


def _rule_results(rules: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list((rules or {}).get("results") or [])


def _rows_rejected(batch: DataBatch) -> int:
    # A rejected batch writes nothing: every row it read is rejected.
    return batch.rows_in if batch.status == "rejected" else 0


def batches(
    store: Store,
    *,
    datasets: Sequence[str] = (),
    statuses: Sequence[str] = (),
    limit: int = 1000,
) -> pl.DataFrame:
    """The newest ingest batches (optionally of some datasets/statuses), newest first.

    Args:
        store: the metadata store.
        datasets: keep only batches of these raw tables (all when empty).
        statuses: keep only batches in these states (all when empty).
        limit: at most this many batches.

    Raises:
        ValueError: `limit` is not positive.
    """
    if limit <= 0:
        raise ValueError(f"limit: must be positive, got {limit}")
    query = select(DataBatch).order_by(DataBatch.created_at.desc(), DataBatch.id).limit(limit)
    if datasets:
        query = query.where(DataBatch.dataset.in_(list(datasets)))
    if statuses:
        query = query.where(DataBatch.status.in_(list(statuses)))
    with store.reader() as session:
        rows = [
            {
                "id": b.id,
                "created_at": b.created_at,
                "dataset": b.dataset,
                "status": b.status,
                "rows_in": b.rows_in,
                "rows_accepted": b.rows_accepted,
                "rows_quarantined": b.rows_quarantined,
                "rows_rejected": _rows_rejected(b),
                "rules_broken": len(_rule_results(b.rules)),
                "hard_failures": sum(
                    int(r.get("failures") or 0)
                    for r in _rule_results(b.rules)
                    if r.get("severity") == "hard"
                ),
                "files": len((b.sources or {}).get("files") or []),
                "table_version": b.table_version,
                "contract_version": b.contract_version,
                "duration_s": (
                    (b.finished_at - b.created_at).total_seconds() if b.finished_at else None
                ),
                "message": b.message or "",
                "run_id": b.run_id,
            }
            for b in session.scalars(query)
        ]
    return pl.DataFrame(rows, schema=BATCH_SCHEMA, orient="row")


def batch_datasets(store: Store) -> list[str]:
    """Names of the raw tables that have at least one batch, sorted."""
    with store.reader() as session:
        return list(session.scalars(select(DataBatch.dataset).distinct().order_by("dataset")))


def batch_volumes(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows per batch and outcome (accepted, quarantined, rejected), long, for a stacked chart.

    Args:
        frame: a `batches` frame.
    """
    return (
        frame.select("id", "created_at", "dataset", "status", *(f"rows_{o}" for o in OUTCOMES))
        .unpivot(
            index=["id", "created_at", "dataset", "status"],
            on=[f"rows_{o}" for o in OUTCOMES],
            variable_name="outcome",
            value_name="rows",
        )
        .with_columns(pl.col("outcome").str.strip_prefix("rows_"))
        .filter(pl.col("rows") > 0)
        .sort("created_at", "outcome")
    )


def _examples(examples: Sequence[Mapping[str, Any]], *, shown: int = 3) -> str:
    """The first failing values of a rule as one line: `value (file:row)`."""
    parts = []
    for example in examples[:shown]:
        where = ":".join(str(p) for p in (example.get("source"), example.get("row")) if p)
        value = json.dumps(example.get("value"), default=str)
        parts.append(f"{value} ({where})" if where else value)
    return "; ".join(parts)


def rule_table(rules: Mapping[str, Any] | None) -> pl.DataFrame:
    """A batch's broken rules, hard ones first, then by failures (most first).

    Args:
        rules: a batch's `rules` record (`{"results": [rule result, ...]}`).
    """
    rows = [
        {
            "column": r.get("column"),
            "rule": r.get("rule"),
            "severity": r.get("severity"),
            "failures": int(r.get("failures") or 0),
            "examples": _examples(r.get("examples") or []),
        }
        for r in _rule_results(rules)
    ]
    frame = pl.DataFrame(rows, schema=RULE_SCHEMA, orient="row")
    return frame.sort(pl.col("severity") != "hard", pl.col("failures"), descending=[False, True])


def source_table(sources: Mapping[str, Any] | None) -> pl.DataFrame:
    """The files a batch read: path, format, size, rows (None if unreadable) and sha256."""
    rows = [
        {name: f.get(name) for name in SOURCE_SCHEMA} for f in (sources or {}).get("files") or []
    ]
    return pl.DataFrame(rows, schema=SOURCE_SCHEMA, orient="row")


def batch_detail(store: Store, *, batch_id: str) -> BatchDetail | None:
    """One batch's broken rules, source files and schema changes, or None if it is gone."""
    with store.reader() as session:
        batch = session.get(DataBatch, batch_id)
        if batch is None:
            return None
        return BatchDetail(
            id=batch.id,
            dataset=batch.dataset,
            status=batch.status,
            created_at=batch.created_at,
            message=batch.message or "",
            rules=rule_table(batch.rules),
            sources=source_table(batch.sources),
            schema_changes=dict(batch.schema_changes or {}),
            report_id=batch.report_id,
        )


def batch_report(store: Store, *, report_id: str, artifacts_dir: str) -> bytes | None:
    """The batch report's JSON bytes from the artifact store (hash verified), or None."""
    artifacts = ArtifactStore(Path(artifacts_dir))
    if not artifacts.exists(report_id):
        return None
    return artifacts.get_bytes(report_id)


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 3600


def freshness_table(status: Mapping[str, Any], *, now: datetime | None = None) -> pl.DataFrame:
    """Per feature view: how far the online store and its offline table are behind `now`.

    Args:
        status: what `stages.features.feature_status` returned.
        now: the instant lags are measured to (default: the clock).
    """
    now = now or datetime.now(UTC)
    rows = []
    for view in status.get("views", []):
        online = _instant(view.get("watermark"))
        built = _instant(view.get("table_watermark"))
        rows.append(
            {
                "view": view["view"],
                "registered": bool(view.get("registered")),
                "online": bool(view.get("online")),
                "online_watermark": online,
                "lag_h": _hours((now - online).total_seconds()) if online else None,
                "table_version": view.get("table_version"),
                "table_rows": view.get("table_rows"),
                "table_watermark": built,
                "pending_h": _hours((built - online).total_seconds()) if built and online else None,
            }
        )
    return pl.DataFrame(rows, schema=FRESHNESS_SCHEMA, orient="row")


def feature_freshness(settings: Settings) -> pl.DataFrame:
    """The live freshness of the use case's feature views (opens the Feast store).

    Raises:
        loopline.spec.SpecError: the use case's spec cannot be loaded.
        FileNotFoundError: the feature repo has no YAML for the profile.
    """
    from loopline.spec import load_spec
    from loopline.stages.features import feature_status

    return freshness_table(feature_status(settings, load_spec(settings.use_case)))

"""Read-only listings of the metadata store for the CLI (and anything else that prints)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loopline.store import Store
from loopline.store.tables import Alias, GateResult, ModelVersion, Run, RunMetric


def list_runs(store: Store, *, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs (optionally of one kind) with their final metrics."""
    with store.reader() as session:
        query = select(Run).order_by(Run.started_at.desc()).limit(limit)
        if kind:
            query = query.where(Run.kind == kind)
        runs = list(session.scalars(query))
        metrics: dict[str, dict[str, float]] = {r.id: {} for r in runs}
        for run_id, key, value in session.execute(
            select(RunMetric.run_id, RunMetric.key, RunMetric.value).where(
                RunMetric.run_id.in_(list(metrics)), RunMetric.is_final.is_(True)
            )
        ):
            metrics[run_id][key] = value
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "status": r.status,
                "use_case": r.use_case,
                "started_at": r.started_at.isoformat(),
                "duration_s": r.duration_s,
                "metrics": metrics[r.id],
                "prefect_flow_run_id": r.prefect_flow_run_id,
                "error": r.error,
            }
            for r in runs
        ]


def list_model_versions(store: Store) -> list[dict[str, Any]]:
    """Every model version, newest first, with metrics, aliases and whether its gates passed."""
    with store.reader() as session:
        versions = list(
            session.scalars(
                select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.version.desc())
            )
        )
        aliases: dict[str, list[str]] = {}
        for alias, version_id in session.execute(select(Alias.alias, Alias.model_version_id)):
            aliases.setdefault(version_id, []).append(alias)
        failed = set(
            session.scalars(select(GateResult.model_version_id).where(GateResult.passed.is_(False)))
        )
        return [
            {
                "model_name": v.model_name,
                "version": v.version,
                "id": v.id,
                "aliases": sorted(aliases.get(v.id, [])),
                "metrics": v.metrics,
                "gates_passed": v.id not in failed,
                "run_id": v.run_id,
                "feature_service": v.feature_service,
                "created_at": v.created_at.isoformat(),
            }
            for v in versions
        ]

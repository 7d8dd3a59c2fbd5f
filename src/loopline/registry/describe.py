"""Read models of the registry for listings and detail views (CLI, app): plain dicts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loopline.registry.history import AliasChange, alias_history
from loopline.registry.models import list_versions
from loopline.store.tables import (
    Alias,
    DatasetVersion,
    GateResult,
    ModelVersion,
    ModelVersionDataset,
)


def version_rows(
    session: Session, model_name: str | None = None, *, include_archived: bool = True
) -> list[dict[str, Any]]:
    """Versions (newest first) with status, aliases, metrics and whether every gate passed."""
    versions = sorted(
        list_versions(session, model_name, include_archived=include_archived),
        key=lambda v: (v.model_name, -v.version),
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
            "status": v.status,
            "aliases": sorted(aliases.get(v.id, [])),
            "metrics": v.metrics,
            "gates_passed": v.id not in failed,
            "run_id": v.run_id,
            "feature_service": v.feature_service,
            "package_id": v.package_id,
            "created_at": v.created_at.isoformat(),
        }
        for v in versions
    ]


def describe_version(session: Session, version: ModelVersion) -> dict[str, Any]:
    """Everything the registry knows about one version: aliases (now and past), metrics,
    lineage, model and package hashes, gate results."""
    current = sorted(
        session.scalars(select(Alias.alias).where(Alias.model_version_id == version.id))
    )
    moves: list[AliasChange] = [
        change
        for change in alias_history(session, version.model_name)
        if version.version in (change.to_version, change.from_version)
    ]
    datasets = session.execute(
        select(ModelVersionDataset.role, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.id == ModelVersionDataset.dataset_version_id)
        .where(ModelVersionDataset.model_version_id == version.id)
        .order_by(ModelVersionDataset.role)
    ).all()
    gates = session.scalars(
        select(GateResult)
        .where(GateResult.model_version_id == version.id)
        .order_by(GateResult.evaluated_at, GateResult.id)
    ).all()
    recorded = dict(version.feature_names or {})
    inputs = recorded.pop("inputs", [])
    return {
        "model_name": version.model_name,
        "version": version.version,
        "id": version.id,
        "status": version.status,
        "created_at": version.created_at.isoformat(),
        "aliases": current,
        "alias_moves": [change.as_dict() for change in moves],
        "metrics": version.metrics,
        "lineage": {
            "run_id": version.run_id,
            "feature_service": version.feature_service,
            "inputs": inputs,
            "datasets": [
                {
                    "role": role,
                    "dataset": dv.dataset,
                    "table_version": dv.table_version,
                    "id": dv.id,
                    "content_hash": dv.content_hash,
                }
                for role, dv in datasets
            ],
            "training": recorded,
            "reference_profile_id": version.reference_profile_id,
        },
        "model_artifact_id": version.artifact_id,
        "package_id": version.package_id,
        "gates": [
            {
                "gate": g.gate,
                "passed": g.passed,
                "observed": g.observed,
                "threshold": g.threshold,
                "detail": g.detail,
                "evaluated_at": g.evaluated_at.isoformat(),
            }
            for g in gates
        ],
        "gates_passed": all(g.passed for g in gates),
    }

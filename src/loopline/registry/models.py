"""Model versions and aliases.

A model version is immutable: a model file (artifact) plus its lineage (run, dataset versions,
feature service). Aliases (`champion`, `challenger`) are movable names; every move is a
compare-and-swap on the alias revision, written with its history row and audit event in the
caller's single transaction, so a move is all-or-nothing and two racing promoters cannot both
win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loopline.store.tables import (
    Alias,
    AliasEvent,
    AuditEvent,
    Model,
    ModelVersion,
    ModelVersionDataset,
    utcnow,
)

CHAMPION = "champion"


class RegistryError(ValueError):
    """A registry request names something that does not exist or breaks a rule."""


class AliasConflict(RegistryError):
    """The alias moved since the caller read it (compare-and-swap lost)."""


@dataclass(frozen=True)
class AliasTarget:
    """Where an alias points, and the revision a move must expect."""

    model_version: ModelVersion
    revision: int


def ensure_model(session: Session, *, name: str, use_case: str, description: str = "") -> Model:
    """Get or create a registered model name."""
    model = session.get(Model, name)
    if model is None:
        model = Model(name=name, use_case=use_case, description=description)
        session.add(model)
        session.flush()
    return model


def register_version(
    session: Session,
    *,
    model_name: str,
    use_case: str,
    run_id: str,
    artifact_id: str,
    feature_service: str,
    feature_names: list[str],
    metrics: Mapping[str, float],
    datasets: Mapping[str, str],
    reference_profile_id: str | None = None,
    actor: str = "loopline",
) -> ModelVersion:
    """Register a new model version (number = previous + 1) with its lineage.

    Args:
        datasets: role (e.g. 'events', 'labels', 'feature:customer_stats') -> dataset version id.
    """
    ensure_model(session, name=model_name, use_case=use_case)
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    version = ModelVersion(
        model_name=model_name,
        version=(latest or 0) + 1,
        run_id=run_id,
        artifact_id=artifact_id,
        feature_service=feature_service,
        feature_names={"inputs": list(feature_names)},
        metrics=dict(metrics),
        reference_profile_id=reference_profile_id,
    )
    session.add(version)
    session.flush()
    session.add_all(
        ModelVersionDataset(model_version_id=version.id, dataset_version_id=dv_id, role=role)
        for role, dv_id in datasets.items()
    )
    audit(
        session,
        actor=actor,
        action="register",
        subject_type="model_version",
        subject_id=f"{model_name}/{version.version}",
        detail={"run_id": run_id, "artifact_id": artifact_id},
    )
    return version


def get_version(session: Session, model_name: str, version: int) -> ModelVersion:
    """A model version by name and number.

    Raises:
        RegistryError: no such version.
    """
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.version == version
        )
    )
    if row is None:
        raise RegistryError(f"model '{model_name}' has no version {version}")
    return row


def list_versions(session: Session, model_name: str | None = None) -> list[ModelVersion]:
    """Model versions, newest first, optionally of one model."""
    query = select(ModelVersion).order_by(
        ModelVersion.created_at.desc(), ModelVersion.version.desc()
    )
    if model_name is not None:
        query = query.where(ModelVersion.model_name == model_name)
    return list(session.scalars(query))


def get_alias(session: Session, model_name: str, alias: str) -> AliasTarget | None:
    """Where `alias` points for a model, or None if it is not set."""
    row = session.get(Alias, (model_name, alias))
    if row is None:
        return None
    return AliasTarget(session.get_one(ModelVersion, row.model_version_id), row.revision)


def aliases_of(session: Session, model_name: str) -> dict[str, int]:
    """Alias name -> version number for a model."""
    rows = session.execute(
        select(Alias.alias, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Alias.model_version_id)
        .where(Alias.model_name == model_name)
    ).all()
    return {alias: version for alias, version in rows}


def set_alias(
    session: Session,
    *,
    model_name: str,
    alias: str,
    version: int,
    expected_revision: int | None,
    actor: str,
    reason: str = "",
    action: str = "promote",
) -> AliasEvent:
    """Point `alias` at `version` if it is still at `expected_revision` (None: not set yet).

    Raises:
        RegistryError: the version does not exist.
        AliasConflict: the alias moved since the caller read it.
    """
    target = get_version(session, model_name, version)
    current = session.get(Alias, (model_name, alias))
    if expected_revision is None:
        if current is not None:
            raise AliasConflict(f"alias '{alias}' is already set (revision {current.revision})")
        session.add(Alias(model_name=model_name, alias=alias, model_version_id=target.id))
        from_id, revision = None, 1
    else:
        if current is None:
            raise AliasConflict(
                f"alias '{alias}' is not set; expected revision {expected_revision}"
            )
        from_id = current.model_version_id
        moved = session.execute(
            update(Alias)
            .where(
                Alias.model_name == model_name,
                Alias.alias == alias,
                Alias.revision == expected_revision,
            )
            .values(model_version_id=target.id, revision=expected_revision + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:
            raise AliasConflict(f"alias '{alias}' moved since revision {expected_revision}")
        revision = expected_revision + 1
    event = AliasEvent(
        model_name=model_name,
        alias=alias,
        from_version_id=from_id,
        to_version_id=target.id,
        revision=revision,
        action=action,
        actor=actor,
        reason=reason,
    )
    session.add(event)
    audit(
        session,
        actor=actor,
        action=f"alias.{action}",
        subject_type="alias",
        subject_id=f"{model_name}@{alias}",
        detail={"to_version": version, "revision": revision, "reason": reason},
    )
    session.flush()
    return event


def rollback_alias(
    session: Session, *, model_name: str, alias: str, actor: str, reason: str = ""
) -> AliasEvent:
    """Move `alias` back to the version it pointed at before its last move.

    Raises:
        RegistryError: the alias is not set or has no earlier version to return to.
    """
    current = get_alias(session, model_name, alias)
    if current is None:
        raise RegistryError(f"alias '{alias}' of '{model_name}' is not set")
    last = session.scalar(
        select(AliasEvent)
        .where(AliasEvent.model_name == model_name, AliasEvent.alias == alias)
        .order_by(AliasEvent.revision.desc())
        .limit(1)
    )
    if last is None or last.from_version_id is None:
        raise RegistryError(f"alias '{alias}' of '{model_name}' has no earlier version")
    previous = session.get_one(ModelVersion, last.from_version_id)
    return set_alias(
        session,
        model_name=model_name,
        alias=alias,
        version=previous.version,
        expected_revision=current.revision,
        actor=actor,
        reason=reason,
        action="rollback",
    )


def audit(
    session: Session,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append an audit event in the caller's transaction."""
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            detail=dict(detail or {}),
        )
    )

"""Model versions and aliases.

A model version is immutable: a model file (artifact), usually its verified package, and its
lineage (run, dataset versions, feature service). Version numbers come from a counter on the
model's row, incremented in the registering transaction: concurrent registrations queue on that
row, and a registration that rolls back takes its number with it, so numbers are gap-free.
Model names and aliases are normalised (`loopline.registry.names`), so one model has one name.

Aliases (`champion`, `challenger`, custom ones) are movable names; every move is a
compare-and-swap on the alias revision, written with its history row and audit event in the
caller's single transaction, so a move is all-or-nothing and two racing promoters cannot both
win. `move_alias` runs one move in its own transaction and records a lost race or a refusal in
the audit log too. An archived version cannot take an alias.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loopline.registry.names import (
    AliasConflict,
    InvalidName,
    RegistryError,
    VersionArchived,
    normalise_alias,
    normalise_model_name,
)
from loopline.store import Store
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
CHALLENGER = "challenger"
READY = "ready"
ARCHIVED = "archived"
LATEST = "latest"
_REF = re.compile(r"^(?P<name>[^@]+)@(?P<ref>[^@]+)$")


@dataclass(frozen=True)
class AliasTarget:
    """Where an alias points, and the revision a move must expect."""

    model_version: ModelVersion
    revision: int


# --- models ------------------------------------------------------------------------------------


def resolve_model(session: Session, name: str) -> Model | None:
    """The registered model a name means (any spelling with the same key), or None.

    Raises:
        InvalidName: the name breaks the naming rules.
    """
    display, key = normalise_model_name(name)
    model = session.get(Model, display)
    if model is not None and model.name_key == key:
        return model
    return session.scalar(select(Model).where(Model.name_key == key))


def get_model(session: Session, name: str) -> Model:
    """The registered model a name means.

    Raises:
        InvalidName: the name breaks the naming rules.
        RegistryError: no model has that name.
    """
    model = resolve_model(session, name)
    if model is None:
        raise RegistryError(f"no model named '{name}'")
    return model


def _insert_ignoring_duplicates(session: Session, table: Table, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
    else:
        try:
            with session.begin_nested():
                session.execute(insert(table).values(**values))
        except IntegrityError:
            pass


def ensure_model(session: Session, *, name: str, use_case: str, description: str = "") -> Model:
    """Get or create a registered model name; safe when many processes create it at once.

    A spelling with the same key as an existing model (`Churn` for `churn`) returns that model.

    Raises:
        InvalidName: the name breaks the naming rules.
    """
    display, key = normalise_model_name(name)
    model = session.scalar(select(Model).where(Model.name_key == key))
    if model is not None:
        return model
    # A racing creator may insert the same key first: the insert then does nothing and the
    # select below finds its row (committed: PostgreSQL makes the insert wait for it).
    _insert_ignoring_duplicates(
        session,
        Model.__table__,  # type: ignore[arg-type]
        {
            "name": display,
            "name_key": key,
            "use_case": use_case,
            "description": description,
            "created_at": utcnow(),
            "last_version": 0,
        },
    )
    return session.scalars(select(Model).where(Model.name_key == key)).one()


def _next_version(session: Session, model_name: str) -> int:
    # The UPDATE locks the model's row until commit: registrations of one model queue here.
    number = session.execute(
        update(Model)
        .where(Model.name == model_name)
        .values(last_version=Model.last_version + 1)
        .returning(Model.last_version)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    highest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    if highest is not None and highest >= number:
        # Versions written around the counter (before migration 0004, or inserted directly).
        number = highest + 1
        session.execute(
            update(Model)
            .where(Model.name == model_name)
            .values(last_version=number)
            .execution_options(synchronize_session=False)
        )
    model = session.get(Model, model_name)
    if model is not None:
        session.expire(model, ["last_version"])
    return number


# --- versions ----------------------------------------------------------------------------------


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
    package_id: str | None = None,
) -> ModelVersion:
    """Register a new model version (number = the model's counter + 1) with its lineage.

    Args:
        model_name: any spelling of the model's name; a new name creates the model.
        artifact_id: the LightGBM text model's artifact id.
        datasets: role (e.g. 'events', 'labels', 'feature:customer_stats') -> dataset version id.
        package_id: the artifact id of the version's model package (`registry.package`);
            serving loads and verifies the package when it is set.

    Raises:
        InvalidName: the model name breaks the naming rules.
    """
    model = ensure_model(session, name=model_name, use_case=use_case)
    version = ModelVersion(
        model_name=model.name,
        version=_next_version(session, model.name),
        run_id=run_id,
        artifact_id=artifact_id,
        package_id=package_id,
        feature_service=feature_service,
        feature_names={"inputs": list(feature_names)},
        metrics=dict(metrics),
        reference_profile_id=reference_profile_id,
        status=READY,
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
        subject_id=f"{model.name}/{version.version}",
        detail={"run_id": run_id, "artifact_id": artifact_id, "package_id": package_id},
    )
    return version


def _version_query(model_name: str, version: int) -> Any:
    return select(ModelVersion).where(
        ModelVersion.model_name == model_name, ModelVersion.version == version
    )


def get_version(
    session: Session, model_name: str, version: int, *, lock: bool = False
) -> ModelVersion:
    """A model version by name (any spelling) and number.

    Args:
        lock: lock the version's row until commit (PostgreSQL; SQLite writers are serial).

    Raises:
        RegistryError: no such model or version.
    """
    model = get_model(session, model_name)
    query = _version_query(model.name, version)
    # FOR NO KEY UPDATE: serialises moves and archives of one version without blocking the
    # key-share locks that foreign-key checks (alias events naming it) take; FOR UPDATE would,
    # and two promoters could deadlock on each other's versions.
    row = session.scalar(query.with_for_update(key_share=True) if lock else query)
    if row is None:
        raise RegistryError(f"model '{model.name}' has no version {version}")
    return row


def list_versions(
    session: Session, model_name: str | None = None, *, include_archived: bool = True
) -> list[ModelVersion]:
    """Model versions, newest first, optionally of one model (none if it is not registered)."""
    query = select(ModelVersion).order_by(
        ModelVersion.created_at.desc(), ModelVersion.version.desc()
    )
    if model_name is not None:
        model = resolve_model(session, model_name)
        if model is None:
            return []
        query = query.where(ModelVersion.model_name == model.name)
    if not include_archived:
        query = query.where(ModelVersion.status != ARCHIVED)
    return list(session.scalars(query))


def resolve_ref(session: Session, ref: str) -> ModelVersion:
    """The version a reference names: `NAME@VERSION`, `NAME@ALIAS` or `NAME@latest`.

    Raises:
        InvalidName: the reference is malformed or names break the rules.
        RegistryError: no such model, version or alias.
    """
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise InvalidName(f"model reference {ref!r}: expected NAME@VERSION or NAME@ALIAS")
    name, target = match["name"], match["ref"].strip()
    if target.isdigit():
        return get_version(session, name, int(target))
    model = get_model(session, name)
    if target.casefold() == LATEST:
        newest = session.scalar(
            select(ModelVersion)
            .where(ModelVersion.model_name == model.name)
            .order_by(ModelVersion.version.desc())
            .limit(1)
        )
        if newest is None:
            raise RegistryError(f"model '{model.name}' has no versions")
        return newest
    found = get_alias(session, model.name, target)
    if found is None:
        raise RegistryError(f"alias '{normalise_alias(target)}' of '{model.name}' is not set")
    return found.model_version


def _holders(session: Session, version: ModelVersion) -> list[str]:
    return sorted(session.scalars(select(Alias.alias).where(Alias.model_version_id == version.id)))


def archive_version(
    session: Session, *, model_name: str, version: int, actor: str, reason: str = ""
) -> ModelVersion:
    """Archive a version: it stays readable but cannot take an alias.

    Raises:
        RegistryError: no such version, already archived, or an alias still points at it.
    """
    row = get_version(session, model_name, version, lock=True)
    if row.status == ARCHIVED:
        raise RegistryError(f"version {version} of '{row.model_name}' is already archived")
    holders = _holders(session, row)
    if holders:
        raise RegistryError(
            f"version {version} of '{row.model_name}' holds alias(es) {', '.join(holders)}; "
            "move them to another version first"
        )
    row.status = ARCHIVED
    audit(
        session,
        actor=actor,
        action="version.archive",
        subject_type="model_version",
        subject_id=f"{row.model_name}/{version}",
        detail={"reason": reason},
    )
    session.flush()
    return row


def unarchive_version(
    session: Session, *, model_name: str, version: int, actor: str, reason: str = ""
) -> ModelVersion:
    """Return an archived version to `ready`.

    Raises:
        RegistryError: no such version, or it is not archived.
    """
    row = get_version(session, model_name, version, lock=True)
    if row.status != ARCHIVED:
        raise RegistryError(f"version {version} of '{row.model_name}' is not archived")
    row.status = READY
    audit(
        session,
        actor=actor,
        action="version.unarchive",
        subject_type="model_version",
        subject_id=f"{row.model_name}/{version}",
        detail={"reason": reason},
    )
    session.flush()
    return row


# --- aliases -----------------------------------------------------------------------------------


def get_alias(session: Session, model_name: str, alias: str) -> AliasTarget | None:
    """Where `alias` points for a model, or None if it is not set (or the model is unknown)."""
    alias = normalise_alias(alias)
    row = session.get(Alias, (model_name, alias))
    if row is None:
        model = resolve_model(session, model_name)
        if model is None or model.name == model_name:
            return None
        row = session.get(Alias, (model.name, alias))
        if row is None:
            return None
    return AliasTarget(session.get_one(ModelVersion, row.model_version_id), row.revision)


def aliases_of(session: Session, model_name: str) -> dict[str, int]:
    """Alias name -> version number for a model."""
    model = resolve_model(session, model_name)
    if model is None:
        return {}
    rows = session.execute(
        select(Alias.alias, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Alias.model_version_id)
        .where(Alias.model_name == model.name)
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
    detail: Mapping[str, Any] | None = None,
) -> AliasEvent:
    """Point `alias` at `version` if it is still at `expected_revision` (None: not set yet).

    Args:
        detail: more to record in the audit event (e.g. the gate evidence and an override);
            it cannot replace the move's own fields (from, to, revisions, reason).

    Raises:
        RegistryError: the model or version does not exist.
        VersionArchived: the version is archived.
        AliasConflict: the alias moved since the caller read it.
    """
    alias = normalise_alias(alias)
    # Locking the target row orders this move against an archive of the same version.
    target = get_version(session, model_name, version, lock=True)
    model_name = target.model_name
    if target.status == ARCHIVED:
        raise VersionArchived(
            f"version {version} of '{model_name}' is archived; unarchive it before "
            f"pointing '{alias}' at it"
        )
    current = session.get(Alias, (model_name, alias))
    if expected_revision is None:
        if current is not None:
            raise AliasConflict(
                f"alias '{alias}' of '{model_name}' is already set "
                f"(revision {current.revision}); expected it unset"
            )
        try:
            with session.begin_nested():
                session.add(Alias(model_name=model_name, alias=alias, model_version_id=target.id))
        except IntegrityError as exc:
            raise AliasConflict(
                f"alias '{alias}' of '{model_name}' was set by someone else meanwhile"
            ) from exc
        from_id, revision = None, 1
    else:
        if current is None:
            raise AliasConflict(
                f"alias '{alias}' of '{model_name}' is not set; "
                f"expected revision {expected_revision}"
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
        session.expire(current)
        if moved.rowcount != 1:
            raise AliasConflict(
                f"alias '{alias}' of '{model_name}' moved since revision {expected_revision}"
            )
        revision = expected_revision + 1
    from_version = None if from_id is None else session.get_one(ModelVersion, from_id).version
    return _record_alias_move(
        session,
        model_name=model_name,
        alias=alias,
        from_id=from_id,
        to_id=target.id,
        revision=revision,
        action=action,
        actor=actor,
        reason=reason,
        detail={
            **(detail or {}),
            "from_version": from_version,
            "to_version": version,
            "expected_revision": expected_revision,
            "revision": revision,
            "reason": reason,
        },
    )


def _record_alias_move(
    session: Session,
    *,
    model_name: str,
    alias: str,
    from_id: str | None,
    to_id: str | None,
    revision: int,
    action: str,
    actor: str,
    reason: str,
    detail: Mapping[str, Any],
) -> AliasEvent:
    """The history event and the audit record of an alias move, in the caller's transaction."""
    event = AliasEvent(
        model_name=model_name,
        alias=alias,
        from_version_id=from_id,
        to_version_id=to_id,
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
        detail=detail,
    )
    session.flush()
    return event


def delete_alias(
    session: Session,
    *,
    model_name: str,
    alias: str,
    actor: str,
    reason: str = "",
) -> AliasEvent:
    """Remove an alias (ending a canary or a shadow), with its history event and audit record.

    Raises:
        RegistryError: the alias is `champion` (roll back or promote instead) or is not set.
    """
    alias = normalise_alias(alias)
    if alias == CHAMPION:
        raise RegistryError(f"alias '{CHAMPION}' cannot be deleted: promote or roll back instead")
    model = get_model(session, model_name)
    current = session.get(Alias, (model.name, alias))
    if current is None:
        raise RegistryError(f"alias '{alias}' of '{model.name}' is not set")
    from_id, revision = current.model_version_id, current.revision + 1
    from_version = session.get_one(ModelVersion, from_id).version
    session.delete(current)
    return _record_alias_move(
        session,
        model_name=model.name,
        alias=alias,
        from_id=from_id,
        to_id=None,
        revision=revision,
        action="delete",
        actor=actor,
        reason=reason,
        detail={"from_version": from_version, "to_version": None, "reason": reason},
    )


def rollback_alias(
    session: Session,
    *,
    model_name: str,
    alias: str,
    actor: str,
    reason: str = "",
    detail: Mapping[str, Any] | None = None,
) -> AliasEvent:
    """Move `alias` back to the version it pointed at before its last move.

    Args:
        detail: more to record in the audit event (see `set_alias`).

    Raises:
        RegistryError: the alias is not set or has no earlier version to return to.
        VersionArchived: that earlier version has been archived since.
    """
    alias = normalise_alias(alias)
    current = get_alias(session, model_name, alias)
    if current is None:
        raise RegistryError(f"alias '{alias}' of '{model_name}' is not set")
    model_name = current.model_version.model_name
    last = session.scalar(
        select(AliasEvent)
        .where(AliasEvent.model_name == model_name, AliasEvent.alias == alias)
        .order_by(AliasEvent.revision.desc(), AliasEvent.id.desc())
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
        detail=detail,
    )


@dataclass(frozen=True)
class AliasMove:
    """The outcome of a committed alias move."""

    model_name: str
    alias: str
    from_version: int | None
    to_version: int
    revision: int
    action: str


def _subject(session: Session, model_name: str, alias: str) -> str:
    """`name@alias` as a successful move would record it, or as given when it is invalid."""
    try:
        model = resolve_model(session, model_name)
        name = model.name if model is not None else normalise_model_name(model_name)[0]
    except InvalidName:
        name = str(model_name)[:100]
    try:
        alias = normalise_alias(alias)
    except InvalidName:
        alias = str(alias)[:64]
    return f"{name}@{alias}"[:200]


MoveGuard = Callable[[Session, ModelVersion], Mapping[str, Any] | None]
"""A check run inside a move's transaction on the locked target version (see `move_alias`)."""
AfterMove = Callable[[Session, "AliasMove"], None]
"""Bookkeeping run inside a move's transaction once the alias moved (see `move_alias`)."""


def _version_label(version: int | None) -> str:
    return "unset" if version is None else f"version {version}"


def _check_expected_version(session: Session, model_name: str, alias: str, expected: int) -> None:
    found = get_alias(session, model_name, alias)
    now = None if found is None else found.model_version.version
    wanted = expected or None
    if now != wanted:
        raise AliasConflict(
            f"alias '{normalise_alias(alias)}' of '{model_name}' is {_version_label(now)}, "
            f"expected {_version_label(wanted)}"
        )


def move_alias(
    store: Store,
    *,
    model_name: str,
    alias: str,
    version: int | None,
    expected_revision: int | None,
    actor: str,
    reason: str = "",
    rollback: bool = False,
    expect_version: int | None = None,
    detail: Mapping[str, Any] | None = None,
    guard: MoveGuard | None = None,
    after: AfterMove | None = None,
) -> AliasMove:
    """Move an alias in its own transaction; a lost race or a refusal is audited too.

    Every attempt leaves one audit event: `alias.promote`/`alias.rollback` when it committed,
    `alias.conflict` when the compare-and-swap lost, `alias.refused` for any other refusal
    (unknown or archived version, bad name, a guard's refusal).

    Args:
        version: the target version (ignored when `rollback`).
        expected_revision: the alias revision the caller read (None: expected unset); with
            `rollback`, None means "whatever it is now".
        rollback: return the alias to its previous version instead.
        expect_version: the version the caller believes holds the alias now (0: unset); a
            different holder is a conflict. None: no such expectation.
        detail: more to record in the audit event, whatever the outcome.
        guard: called in the transaction with the locked target version before a move (not a
            rollback); it refuses by raising `RegistryError` (an `error.detail` mapping is
            audited too) and returns more audit detail.
        after: called in the transaction after the move; raising rolls the move back.

    Raises:
        AliasConflict: the alias moved since `expected_revision` (or is not `expect_version`).
        RegistryError: the move was refused.
    """
    extra: dict[str, Any] = dict(detail or {})
    try:
        with store.session() as session:
            if expect_version is not None:
                _check_expected_version(session, model_name, alias, expect_version)
            if rollback:
                if expected_revision is not None:
                    found = get_alias(session, model_name, alias)
                    if found is None or found.revision != expected_revision:
                        raise AliasConflict(
                            f"alias '{alias}' of '{model_name}' moved since revision "
                            f"{expected_revision}"
                        )
                event = rollback_alias(
                    session,
                    model_name=model_name,
                    alias=alias,
                    actor=actor,
                    reason=reason,
                    detail=extra,
                )
            else:
                if version is None:
                    raise RegistryError("a version to move the alias to is required")
                if guard is not None:
                    target = get_version(session, model_name, version, lock=True)
                    extra |= dict(guard(session, target) or {})
                event = set_alias(
                    session,
                    model_name=model_name,
                    alias=alias,
                    version=version,
                    expected_revision=expected_revision,
                    actor=actor,
                    reason=reason,
                    detail=extra,
                )
            from_version = (
                None
                if event.from_version_id is None
                else session.get_one(ModelVersion, event.from_version_id).version
            )
            move = AliasMove(
                model_name=event.model_name,
                alias=event.alias,
                from_version=from_version,
                to_version=session.get_one(ModelVersion, event.to_version_id).version,
                revision=event.revision,
                action=event.action,
            )
            if after is not None:
                after(session, move)
            return move
    except RegistryError as exc:
        with store.session() as session:
            audit(
                session,
                actor=actor,
                action="alias.conflict" if isinstance(exc, AliasConflict) else "alias.refused",
                subject_type="alias",
                subject_id=_subject(session, model_name, alias),
                detail={
                    **extra,
                    **dict(getattr(exc, "detail", None) or {}),
                    "to_version": None if rollback else version,
                    "rollback": rollback,
                    "expected_revision": expected_revision,
                    "expect_version": expect_version,
                    "reason": reason,
                    "error": str(exc),
                },
            )
        raise


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

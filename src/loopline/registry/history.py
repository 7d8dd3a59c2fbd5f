"""Alias history: where an alias pointed at any past moment, and who moved it there.

Every alias move writes an `alias_events` row in the move's own transaction, so the events are
the complete history. Moves of one alias are serial (each is a compare-and-swap on the alias
row), so their order is the order of `at`, then of the event id; the alias at time T is the
target of the last event at or before T.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from loopline.registry.models import get_model
from loopline.registry.names import RegistryError, normalise_alias
from loopline.store.tables import AliasEvent, ModelVersion


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias: when, from which version to which, by whom and why."""

    at: datetime
    model_name: str
    alias: str
    from_version: int | None
    to_version: int | None
    revision: int
    action: str
    actor: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO time)."""
        return {**asdict(self), "at": self.at.isoformat()}


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and value.tzinfo is None:
        raise RegistryError(f"{name} must be timezone-aware (e.g. 2026-03-01T14:00:00+00:00)")


def _changes(session: Session, query: Any) -> list[AliasChange]:
    source, target = aliased(ModelVersion), aliased(ModelVersion)
    rows = session.execute(
        query.add_columns(source.version, target.version)
        .outerjoin(source, source.id == AliasEvent.from_version_id)
        .outerjoin(target, target.id == AliasEvent.to_version_id)
    ).all()
    return [
        AliasChange(
            at=event.at,
            model_name=event.model_name,
            alias=event.alias,
            from_version=from_version,
            to_version=to_version,
            revision=event.revision,
            action=event.action,
            actor=event.actor,
            reason=event.reason,
        )
        for event, from_version, to_version in rows
    ]


def alias_history(
    session: Session,
    model_name: str,
    alias: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[AliasChange]:
    """Moves of one alias (or every alias) of a model, oldest first.

    Args:
        since, until: inclusive bounds on the move time (timezone-aware).
        limit: keep only the newest `limit` moves.

    Raises:
        RegistryError: unknown model, bad alias, naive times, or a limit below 1.
    """
    _aware(since, "since")
    _aware(until, "until")
    if limit is not None and limit < 1:
        raise RegistryError(f"limit must be at least 1, got {limit}")
    model = get_model(session, model_name)
    query = select(AliasEvent).where(AliasEvent.model_name == model.name)
    if alias is not None:
        query = query.where(AliasEvent.alias == normalise_alias(alias))
    if since is not None:
        query = query.where(AliasEvent.at >= since)
    if until is not None:
        query = query.where(AliasEvent.at <= until)
    query = query.order_by(AliasEvent.at.desc(), AliasEvent.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(reversed(_changes(session, query)))


def alias_change_at(
    session: Session, model_name: str, alias: str, at: datetime
) -> AliasChange | None:
    """The move that put `alias` where it was at time `at` (None: it was not set then).

    Raises:
        RegistryError: unknown model, bad alias, or a naive `at`.
    """
    _aware(at, "at")
    model = get_model(session, model_name)
    query = (
        select(AliasEvent)
        .where(
            AliasEvent.model_name == model.name,
            AliasEvent.alias == normalise_alias(alias),
            AliasEvent.at <= at,
        )
        .order_by(AliasEvent.at.desc(), AliasEvent.id.desc())
        .limit(1)
    )
    found = _changes(session, query)
    return found[0] if found else None


def alias_at(session: Session, model_name: str, alias: str, at: datetime) -> int | None:
    """The version number `alias` pointed at at time `at`, or None if it was not set.

    Raises:
        RegistryError: unknown model, bad alias, or a naive `at`.
    """
    change = alias_change_at(session, model_name, alias, at)
    return None if change is None else change.to_version


def aliases_at(session: Session, model_name: str, at: datetime) -> dict[str, AliasChange]:
    """Every alias of a model as it stood at time `at`: alias -> the move in force."""
    _aware(at, "at")
    model = get_model(session, model_name)
    names = session.scalars(
        select(AliasEvent.alias)
        .where(AliasEvent.model_name == model.name, AliasEvent.at <= at)
        .distinct()
    ).all()
    found = {name: alias_change_at(session, model.name, name, at) for name in sorted(names)}
    return {name: change for name, change in found.items() if change and change.to_version}

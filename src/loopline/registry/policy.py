"""Promotion policy: gates decide, overrides are explicit, `champion` may need two people.

The use case's `promotion:` block (`loopline.spec.PromotionSpec`) is the policy:

- **Gates**: a version takes an alias only when its latest result of every recorded gate
  passed; a version with no gate results counts as failing. An override needs a reason and an
  actor whose role is one of `approver_roles`; it is recorded as an override in the audit
  event, with the failed gates and their evidence.
- **Two-person rule** (`two_person_rule`, for `champion` only): a direct promotion of
  `champion` is refused. Someone requests it (`request_promotion`: version, reason, gate
  snapshot, and the alias revision seen); someone else with an approver role approves it
  (`approve_request`), which moves the alias with a compare-and-swap against that revision: if
  `champion` moved since, the request is stale and refused. Requests can be rejected, and
  expire after `request_ttl`.
- **Rollback**: `champion` (or any alias) returns to its previous holder in one step.

Every move goes through `models.move_alias` (one transaction, compare-and-swap, an audit event
for every attempt, committed or not); policy refusals happen inside that transaction, so they
are audited as `alias.refused` with the evidence. Input that breaks a rule (an override without
a reason, a malformed role) is refused before anything is written. After each committed change
a Prefect event is sent (`loopline.registry.events`); sending never undoes a change.
"""

from __future__ import annotations

import getpass
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from loopline.registry import events
from loopline.registry.models import (
    ARCHIVED,
    CHAMPION,
    AliasMove,
    audit,
    get_alias,
    get_model,
    get_version,
    move_alias,
)
from loopline.registry.names import (
    AliasConflict,
    RegistryError,
    VersionArchived,
    normalise_alias,
)
from loopline.spec import PromotionSpec
from loopline.store import Store
from loopline.store.tables import GateResult, ModelVersion, PromotionRequest, utcnow

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
STALE = "stale"
EXPIRED = "expired"
REQUEST_STATUSES = (PENDING, APPROVED, REJECTED, STALE, EXPIRED)
MAX_REASON = 2000
MAX_ACTOR = 200
_REQUEST_ID = re.compile(r"^[0-9a-f]{6,32}$")


class PolicyError(RegistryError):
    """Input to a promotion action breaks a rule; nothing was written."""


class PromotionRefused(RegistryError):
    """The policy refuses the change; `detail` (audited) says why, with the evidence."""

    def __init__(self, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail: dict[str, Any] = dict(detail or {})


class GatesFailed(PromotionRefused):
    """The version's gates did not pass and no override was given."""

    def __init__(
        self, message: str, failed: list[str], detail: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, detail)
        self.failed = failed


# --- who ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who acts, and in which role (None: no role)."""

    actor: str
    role: str | None

    @property
    def key(self) -> str:
        """The actor compared across spellings (`Alice` and `alice` are one person)."""
        return self.actor.casefold()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def identity(actor: str | None = None, role: str | None = None) -> Identity:
    """The normalised actor (default: the OS user) and role (empty: none).

    Raises:
        PolicyError: the actor is too long or has control characters; the role breaks the
            role rule (letters, digits, '.', '_', '-', starting with a letter).
    """
    name = _os_user() if actor is None or not str(actor).strip() else actor
    if not isinstance(name, str):
        raise PolicyError(f"actor must be a string, got {type(name).__name__}")
    name = unicodedata.normalize("NFKC", name).strip()
    if len(name) > MAX_ACTOR:
        raise PolicyError(f"actor {name[:40]!r}...: longer than {MAX_ACTOR} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise PolicyError(f"actor {name!r}: control or invisible characters are not allowed")
    if role is None or (isinstance(role, str) and not role.strip()):
        return Identity(name, None)
    try:
        return Identity(name, PromotionSpec.normalise_role(role))
    except ValueError as exc:
        raise PolicyError(str(exc)) from None


def _reason(reason: object, *, required: str | None = None) -> str:
    if not isinstance(reason, str):
        raise PolicyError(f"reason must be a string, got {type(reason).__name__}")
    text = reason.strip()
    if required and not text:
        raise PolicyError(f"{required} needs a reason (--reason)")
    if len(text) > MAX_REASON:
        raise PolicyError(f"reason is longer than {MAX_REASON} characters")
    return text


def version_number(version: object, what: str = "version") -> int:
    """`version` if it is a version number (a whole number >= 1).

    Raises:
        PolicyError: anything else, naming `what`.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PolicyError(f"{what} must be a positive whole number, got {version!r}")
    return version


def _expectation(expect_version: object) -> int | None:
    if expect_version is None:
        return None
    if isinstance(expect_version, bool) or not isinstance(expect_version, int):
        raise PolicyError(f"expected version must be a whole number, got {expect_version!r}")
    if expect_version < 0:
        raise PolicyError("expected version must be >= 0 (0: the alias is expected unset)")
    return expect_version


def _roles(policy: PromotionSpec) -> str:
    return ", ".join(policy.approver_roles) or "none: the spec's promotion.approver_roles is empty"


def _require_approver(
    policy: PromotionSpec, who: Identity, action: str, detail: Mapping[str, Any]
) -> None:
    if who.role is None:
        raise PromotionRefused(
            f"{action} needs an approver role (--role / LOOPLINE_ROLE; approver roles: "
            f"{_roles(policy)})",
            detail,
        )
    if who.role not in policy.approver_roles:
        raise PromotionRefused(
            f"{action}: role '{who.role}' is not an approver role ({_roles(policy)})", detail
        )


def two_person_applies(policy: PromotionSpec, alias: str) -> bool:
    """Whether moving `alias` needs a request and someone else's approval."""
    return policy.two_person_rule and normalise_alias(alias) == CHAMPION


# --- gates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateStatus:
    """The latest recorded result of each gate of one version."""

    version: int
    results: tuple[dict[str, Any], ...]

    @property
    def passed(self) -> bool:
        """Every gate passed; no results at all count as failing."""
        return bool(self.results) and all(r["passed"] for r in self.results)

    @property
    def failed(self) -> list[str]:
        """Names of the gates whose latest result failed."""
        return [r["gate"] for r in self.results if not r["passed"]]

    def explain(self) -> str:
        """One line: why the gates do not pass (or that they do)."""
        if not self.results:
            return f"version {self.version} has no gate results recorded (counts as failing)"
        if self.failed:
            return f"gates failed: {', '.join(self.failed)}"
        return "all gates passed"

    def evidence(self) -> dict[str, Any]:
        """The audit record: every gate's verdict, and the full evidence of failed ones."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "results": [
                r if not r["passed"] else {k: v for k, v in r.items() if k != "detail"}
                for r in self.results
            ],
        }


def gate_status(session: Session, version: ModelVersion) -> GateStatus:
    """The gate verdicts recorded for `version`, the latest per gate."""
    rows = session.scalars(
        select(GateResult)
        .where(GateResult.model_version_id == version.id)
        .order_by(GateResult.evaluated_at, GateResult.id)
    )
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row.gate] = {
            "gate": row.gate,
            "passed": bool(row.passed),
            "observed": row.observed,
            "threshold": row.threshold,
            "evaluated_at": row.evaluated_at.isoformat(),
            "run_id": row.run_id,
            "detail": row.detail,
        }
    return GateStatus(version.version, tuple(latest.values()))


# --- promote and rollback ----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyChange:
    """A committed promotion or rollback, as the policy made it."""

    move: AliasMove
    actor: str
    role: str | None
    reason: str
    override: bool = False
    failed_gates: tuple[str, ...] = ()
    request_id: str | None = None
    event_sent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The Prefect event payload (and the CLI's JSON)."""
        return {
            "model": self.move.model_name,
            "alias": self.move.alias,
            "action": self.move.action,
            "from": self.move.from_version,
            "to": self.move.to_version,
            "revision": self.move.revision,
            "actor": self.actor,
            "role": self.role,
            "reason": self.reason,
            "override": self.override,
            "failed_gates": list(self.failed_gates),
            "request_id": self.request_id,
            **self.extra,
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything about the change, JSON-able."""
        return {**self.payload(), "event_sent": self.event_sent}


def _announce(change: PolicyChange, use_case: str | None) -> PolicyChange:
    name = events.MODEL_ROLLED_BACK if change.move.action == "rollback" else events.MODEL_PROMOTED
    sent = events.emit(
        name,
        model_name=change.move.model_name,
        alias=change.move.alias,
        payload=change.payload(),
        to_version=change.move.to_version,
        from_version=change.move.from_version,
        use_case=use_case,
    )
    return replace(change, event_sent=sent)


def _current_revision(store: Store, model_name: str, alias: str) -> int | None:
    with store.reader() as session:
        found = get_alias(session, model_name, alias)
        return None if found is None else found.revision


def promote(
    store: Store,
    policy: PromotionSpec,
    *,
    model_name: str,
    version: int,
    alias: str = CHAMPION,
    actor: str | None = None,
    role: str | None = None,
    override: bool = False,
    reason: str = "",
    expect_version: int | None = None,
    use_case: str | None = None,
) -> PolicyChange:
    """Point `alias` at `version` if the policy allows it; audited, then announced.

    Args:
        policy: the use case's `promotion:` block.
        actor: who (default: the OS user); role: their role (for overrides).
        override: promote although gates failed (needs `reason` and an approver role).
        expect_version: the version the caller believes holds the alias (0: unset); anything
            else holding it is a conflict. None: the holder read just before the move.
        use_case: labels the Prefect event.

    Raises:
        PolicyError: bad input (nothing written).
        GatesFailed: gates failed and no override (audited as `alias.refused`).
        PromotionRefused: an override without an approver role, `champion` under the
            two-person rule, or the version already holds the alias (audited).
        AliasConflict: the alias moved meanwhile (audited as `alias.conflict`).
        RegistryError: unknown model or version, archived version (audited).
    """
    alias = normalise_alias(alias)
    version = version_number(version)
    who = identity(actor, role)
    why = _reason(reason, required="an override of failed gates" if override else None)
    expect_version = _expectation(expect_version)
    base = {"role": who.role, "override_requested": bool(override)}
    judged: list[GateStatus] = []

    def guard(session: Session, target: ModelVersion) -> dict[str, Any]:
        status = gate_status(session, target)
        judged.append(status)
        detail = {"override": False, "gates": status.evidence()}
        current = get_alias(session, target.model_name, alias)
        if current is not None and current.model_version.id == target.id:
            raise PromotionRefused(
                f"version {target.version} of '{target.model_name}' already holds '{alias}'",
                detail,
            )
        if two_person_applies(policy, alias):
            raise PromotionRefused(
                f"the two-person rule is on for '{alias}' of '{target.model_name}': request it "
                f"(loopline models request {target.model_name}@{target.version} --reason ...) "
                "and have another approver approve it",
                detail,
            )
        if not status.passed:
            if not override:
                raise GatesFailed(
                    f"version {target.version} of '{target.model_name}' cannot take '{alias}': "
                    f"{status.explain()} (an override needs --override, a reason and an "
                    f"approver role: {_roles(policy)})",
                    status.failed,
                    detail,
                )
            _require_approver(policy, who, "an override of failed gates", detail)
            detail["override"] = True
        return detail

    revision = _current_revision(store, model_name, alias)
    move = move_alias(
        store,
        model_name=model_name,
        alias=alias,
        version=version,
        expected_revision=revision,
        actor=who.actor,
        reason=why,
        expect_version=expect_version,
        detail=base,
        guard=guard,
    )
    overridden = not judged[-1].passed
    change = PolicyChange(
        move=move,
        actor=who.actor,
        role=who.role,
        reason=why,
        override=overridden,
        failed_gates=tuple(judged[-1].failed) if overridden else (),
    )
    return _announce(change, use_case)


def rollback(
    store: Store,
    *,
    model_name: str,
    alias: str = CHAMPION,
    actor: str | None = None,
    role: str | None = None,
    reason: str = "",
    expect_version: int | None = None,
    use_case: str | None = None,
) -> PolicyChange:
    """Return `alias` to the version it pointed at before its last move, in one step.

    The alias revision is read first and the move is a compare-and-swap on it: if someone moves
    the alias in between, this is a conflict rather than a rollback of their move.

    Raises:
        PolicyError: bad input (nothing written).
        AliasConflict: the alias moved meanwhile, or is not `expect_version` (audited).
        RegistryError: the alias is not set, has no earlier version, or that version is
            archived (audited).
    """
    alias = normalise_alias(alias)
    who = identity(actor, role)
    why = _reason(reason)
    expect_version = _expectation(expect_version)
    revision = _current_revision(store, model_name, alias)
    move = move_alias(
        store,
        model_name=model_name,
        alias=alias,
        version=None,
        expected_revision=revision,
        actor=who.actor,
        reason=why,
        rollback=True,
        expect_version=expect_version,
        detail={"role": who.role},
    )
    return _announce(PolicyChange(move=move, actor=who.actor, role=who.role, reason=why), use_case)


# --- the two-person rule -----------------------------------------------------------------------


def _version_of(session: Session, version_id: str | None) -> int | None:
    return None if version_id is None else session.get_one(ModelVersion, version_id).version


def _effective_status(row: PromotionRequest, now: datetime) -> str:
    return EXPIRED if row.status == PENDING and row.expires_at <= now else row.status


def request_dict(
    session: Session, row: PromotionRequest, now: datetime | None = None
) -> dict[str, Any]:
    """A promotion request as plain JSON values (status `expired` once past its expiry)."""
    return {
        "id": row.id,
        "model_name": row.model_name,
        "alias": row.alias,
        "version": _version_of(session, row.model_version_id),
        "from_version": _version_of(session, row.from_version_id),
        "expected_revision": row.expected_revision,
        "status": _effective_status(row, now or utcnow()),
        "override": row.override,
        "reason": row.reason,
        "requested_by": row.requested_by,
        "requester_role": row.requester_role,
        "gates": row.gates,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "decided_by": row.decided_by,
        "decider_role": row.decider_role,
        "decision_note": row.decision_note,
        "decided_at": None if row.decided_at is None else row.decided_at.isoformat(),
    }


def list_requests(
    session: Session,
    model_name: str | None = None,
    *,
    status: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Promotion requests, newest first, optionally of one model and in one status.

    Raises:
        PolicyError: an unknown status.
    """
    if status is not None and status not in REQUEST_STATUSES:
        raise PolicyError(f"status {status!r}: expected one of {', '.join(REQUEST_STATUSES)}")
    now = now or utcnow()
    query = select(PromotionRequest).order_by(
        PromotionRequest.created_at.desc(), PromotionRequest.id
    )
    if model_name is not None:
        query = query.where(PromotionRequest.model_name == get_model(session, model_name).name)
    rows = [request_dict(session, row, now) for row in session.scalars(query)]
    return [r for r in rows if status is None or r["status"] == status]


def _find_request(session: Session, request_id: str) -> PromotionRequest:
    row = session.get(PromotionRequest, request_id)
    if row is not None:
        return row
    matches = list(
        session.scalars(
            select(PromotionRequest).where(PromotionRequest.id.startswith(request_id)).limit(2)
        )
    )
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise PolicyError(f"request id {request_id!r} is ambiguous: give more characters")
    raise RegistryError(f"no promotion request {request_id!r}")


def _load_request(store: Store, request_id: str, model_name: str | None) -> dict[str, Any]:
    with store.reader() as session:
        request = request_dict(session, _find_request(session, request_id))
        if model_name is not None and get_model(session, model_name).name != request["model_name"]:
            raise PolicyError(
                f"request {request['id']} is for model '{request['model_name']}', not "
                f"'{model_name}' (whose policy was given)"
            )
    return request


def _request_id(request_id: object) -> str:
    text = request_id.strip().lower() if isinstance(request_id, str) else ""
    if not _REQUEST_ID.match(text):
        raise PolicyError(
            f"request id {request_id!r}: expected 6 to 32 hex characters (from `models requests`)"
        )
    return text


def _refused(
    store: Store,
    who: Identity,
    subject: str,
    error: RegistryError,
    *,
    subject_type: str = "promotion_request",
    **detail: Any,
) -> None:
    """Audit a refused request, approval or rejection (`promotion.refused`)."""
    with store.session() as session:
        audit(
            session,
            actor=who.actor,
            action="promotion.refused",
            subject_type=subject_type,
            subject_id=subject[:200],
            detail={
                **detail,
                **getattr(error, "detail", {}),
                "role": who.role,
                "error": str(error),
            },
        )


def _close(
    store: Store,
    request_id: str,
    status: str,
    *,
    who: Identity,
    note: str,
    action: str,
    detail: Mapping[str, Any] | None = None,
) -> bool:
    """Move a pending request to `status` and audit it; False if it was not pending."""
    with store.session() as session:
        closed = session.execute(
            update(PromotionRequest)
            .where(PromotionRequest.id == request_id, PromotionRequest.status == PENDING)
            .values(
                status=status,
                decided_by=who.actor,
                decider_role=who.role,
                decision_note=note,
                decided_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if closed != 1:
            return False
        audit(
            session,
            actor=who.actor,
            action=action,
            subject_type="promotion_request",
            subject_id=request_id,
            detail={"status": status, "note": note, "role": who.role, **(detail or {})},
        )
    return True


def _announce_request(event: str, request: Mapping[str, Any], use_case: str | None) -> bool:
    return events.emit(
        event,
        model_name=request["model_name"],
        alias=request["alias"],
        payload={
            "request_id": request["id"],
            "model": request["model_name"],
            "alias": request["alias"],
            "from": request["from_version"],
            "to": request["version"],
            "status": request["status"],
            "actor": request["decided_by"] or request["requested_by"],
            "requested_by": request["requested_by"],
            "reason": request["reason"],
            "decision_note": request["decision_note"],
            "override": request["override"],
        },
        to_version=request["version"],
        from_version=request["from_version"],
        use_case=use_case,
    )


def _reload(store: Store, request_id: str) -> dict[str, Any]:
    with store.reader() as session:
        return request_dict(session, session.get_one(PromotionRequest, request_id))


def _expire(store: Store, row: dict[str, Any], who: Identity, use_case: str | None) -> NoReturn:
    if _close(store, row["id"], EXPIRED, who=who, note="expired", action="promotion.expire"):
        _announce_request(events.PROMOTION_EXPIRED, _reload(store, row["id"]), use_case)
    raise PromotionRefused(f"request {row['id']} expired at {row['expires_at'][:19]}")


def request_promotion(
    store: Store,
    policy: PromotionSpec,
    *,
    model_name: str,
    version: int,
    reason: str,
    alias: str = CHAMPION,
    actor: str | None = None,
    role: str | None = None,
    override: bool = False,
    use_case: str | None = None,
) -> dict[str, Any]:
    """Ask for `version` to become champion; someone else with an approver role approves it.

    The request records the champion's revision now (the approval's compare-and-swap), who
    asks and why, and the gate snapshot. A version whose gates fail needs `override` (the
    approver then approves the override).

    Returns:
        The request (`request_dict`); `event_sent` says whether Prefect took the event.

    Raises:
        PolicyError: bad input, or an alias other than `champion` (nothing written).
        GatesFailed / PromotionRefused: gates failed without override, the version already
            holds the alias, or a request for it is already pending (audited).
        RegistryError: unknown model or version, archived version (audited).
    """
    alias = normalise_alias(alias)
    if alias != CHAMPION:
        raise PolicyError(
            f"promotion requests are for '{CHAMPION}' (the alias the two-person rule covers), "
            f"not '{alias}': promote '{alias}' directly"
        )
    version = version_number(version)
    who = identity(actor, role)
    why = _reason(reason, required="a promotion request")
    subject = f"{model_name}@{alias}"
    try:
        with store.session() as session:
            target = get_version(session, model_name, version, lock=True)
            subject = f"{target.model_name}@{alias}"
            status = gate_status(session, target)
            snapshot = status.evidence()
            if target.status == ARCHIVED:
                raise VersionArchived(
                    f"version {version} of '{target.model_name}' is archived; unarchive it first"
                )
            current = get_alias(session, target.model_name, alias)
            if current is not None and current.model_version.id == target.id:
                raise PromotionRefused(
                    f"version {version} of '{target.model_name}' already holds '{alias}'"
                )
            if not status.passed and not override:
                raise GatesFailed(
                    f"version {version} of '{target.model_name}': {status.explain()}; request "
                    "it with an override (and a reason) for an approver to decide",
                    status.failed,
                    {"gates": snapshot},
                )
            now = utcnow()
            for other in session.scalars(
                select(PromotionRequest).where(
                    PromotionRequest.model_version_id == target.id,
                    PromotionRequest.alias == alias,
                    PromotionRequest.status == PENDING,
                )
            ):
                if _effective_status(other, now) == PENDING:
                    raise PromotionRefused(
                        f"request {other.id} for version {version} of '{target.model_name}' is "
                        f"already pending (by {other.requested_by})"
                    )
            row = PromotionRequest(
                model_name=target.model_name,
                alias=alias,
                model_version_id=target.id,
                from_version_id=None if current is None else current.model_version.id,
                expected_revision=None if current is None else current.revision,
                status=PENDING,
                override=bool(override) and not status.passed,
                reason=why,
                requested_by=who.actor,
                requester_role=who.role,
                gates=snapshot,
                created_at=now,
                expires_at=now + policy.request_ttl,
            )
            session.add(row)
            session.flush()
            request = request_dict(session, row, now)
            audit(
                session,
                actor=who.actor,
                action="promotion.request",
                subject_type="promotion_request",
                subject_id=row.id,
                detail={
                    "model": target.model_name,
                    "alias": alias,
                    "version": version,
                    "from_version": request["from_version"],
                    "expected_revision": row.expected_revision,
                    "override": row.override,
                    "reason": why,
                    "role": who.role,
                    "gates": snapshot,
                    "expires_at": request["expires_at"],
                },
            )
    except RegistryError as exc:
        _refused(
            store, who, subject, exc, subject_type="alias", action="request", version=version,
            reason=why,
        )  # fmt: skip
        raise
    request["event_sent"] = _announce_request(events.PROMOTION_REQUESTED, request, use_case)
    return request


def approve_request(
    store: Store,
    policy: PromotionSpec,
    request_id: str,
    *,
    actor: str | None = None,
    role: str | None = None,
    note: str = "",
    model_name: str | None = None,
    use_case: str | None = None,
) -> PolicyChange:
    """Approve a pending request: its version takes the alias, if nothing moved it since.

    The approver must hold an approver role and not be the requester. The move is one
    transaction with the request's status: a compare-and-swap against the alias revision the
    request recorded. If the alias moved since, the request becomes `stale`.

    Args:
        request_id: the request's id, or a unique prefix of 6+ characters.
        note: the approver's note (audit trail).
        model_name: the model whose policy `policy` is; a request of another model is refused.

    Raises:
        PolicyError: bad input (nothing written).
        PromotionRefused: not an approver, the requester themselves, the request is not
            pending or has expired, or the gates fail now and the request was no override.
        AliasConflict: the alias moved since the request (the request is now stale).
        RegistryError: unknown request, archived version (audited).
    """
    request_id = _request_id(request_id)
    who = identity(actor, role)
    note = _reason(note)
    request = _load_request(store, request_id, model_name)
    request_id = request["id"]
    detail = {
        "request_id": request_id,
        "requested_by": request["requested_by"],
        "approved_by": who.actor,
        "approver_role": who.role,
        "approval_note": note,
    }
    try:
        if request["status"] == EXPIRED:
            _expire(store, request, who, use_case)
        if request["status"] != PENDING:
            by = f" by {request['decided_by']}" if request["decided_by"] else ""
            raise PromotionRefused(f"request {request_id} is already {request['status']}{by}")
        _require_approver(policy, who, "approving a promotion request", detail)
        if who.key == request["requested_by"].casefold():
            raise PromotionRefused(
                f"{who.actor} requested {request_id} and cannot approve it too: the two-person "
                "rule needs someone else"
            )
    except PromotionRefused as exc:
        _refused(store, who, request_id, exc, action="approve")
        raise

    judged: list[GateStatus] = []

    def guard(session: Session, target: ModelVersion) -> dict[str, Any]:
        status = gate_status(session, target)
        judged.append(status)
        found = {"override": not status.passed, "gates": status.evidence()}
        if not status.passed and not request["override"]:
            raise GatesFailed(
                f"version {target.version} of '{target.model_name}': {status.explain()} since "
                f"request {request_id} was made; reject it, or request again with an override",
                status.failed,
                found,
            )
        return found

    def mark_approved(session: Session, move: AliasMove) -> None:
        approved = session.execute(
            update(PromotionRequest)
            .where(
                PromotionRequest.id == request_id,
                PromotionRequest.status == PENDING,
                PromotionRequest.expires_at > utcnow(),
            )
            .values(
                status=APPROVED,
                decided_by=who.actor,
                decider_role=who.role,
                decision_note=note,
                decided_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if approved != 1:
            raise PromotionRefused(
                f"request {request_id} expired or was decided by someone else meanwhile"
            )
        audit(
            session,
            actor=who.actor,
            action="promotion.approve",
            subject_type="promotion_request",
            subject_id=request_id,
            detail={**detail, "from_version": move.from_version, "to_version": move.to_version},
        )

    try:
        move = move_alias(
            store,
            model_name=request["model_name"],
            alias=request["alias"],
            version=request["version"],
            expected_revision=request["expected_revision"],
            actor=who.actor,
            reason=request["reason"],
            detail={**detail, "role": who.role},
            guard=guard,
            after=mark_approved,
        )
    except AliasConflict as exc:
        if not _close(store, request_id, STALE, who=who, note=str(exc), action="promotion.stale"):
            now = _reload(store, request_id)
            raise PromotionRefused(
                f"request {request_id} was {now['status']} by {now['decided_by']} meanwhile"
            ) from exc
        _announce_request(events.PROMOTION_STALE, _reload(store, request_id), use_case)
        raise AliasConflict(
            f"request {request_id} is stale: '{request['alias']}' of '{request['model_name']}' "
            "moved since it was requested; request again"
        ) from exc
    overridden = not judged[-1].passed
    change = PolicyChange(
        move=move,
        actor=who.actor,
        role=who.role,
        reason=request["reason"],
        override=overridden,
        failed_gates=tuple(judged[-1].failed) if overridden else (),
        request_id=request_id,
        extra={"requested_by": request["requested_by"], "approval_note": note},
    )
    return _announce(change, use_case)


def reject_request(
    store: Store,
    policy: PromotionSpec,
    request_id: str,
    *,
    reason: str,
    actor: str | None = None,
    role: str | None = None,
    model_name: str | None = None,
    use_case: str | None = None,
) -> dict[str, Any]:
    """Reject a pending request (an approver), or withdraw it (its requester).

    Args:
        request_id: the request's id, or a unique prefix of 6+ characters.
        reason: why (required).
        model_name: the model whose policy `policy` is; a request of another model is refused.

    Raises:
        PolicyError: bad input, e.g. no reason (nothing written).
        PromotionRefused: neither an approver nor the requester, or the request is not
            pending (audited).
        RegistryError: unknown request.
    """
    request_id = _request_id(request_id)
    who = identity(actor, role)
    why = _reason(reason, required="rejecting a promotion request")
    request = _load_request(store, request_id, model_name)
    request_id = request["id"]
    try:
        if request["status"] == EXPIRED:
            _expire(store, request, who, use_case)
        if request["status"] != PENDING:
            raise PromotionRefused(f"request {request_id} is already {request['status']}")
        if who.key != request["requested_by"].casefold():
            _require_approver(policy, who, "rejecting a promotion request", {})
        if not _close(store, request_id, REJECTED, who=who, note=why, action="promotion.reject"):
            raise PromotionRefused(f"request {request_id} was decided by someone else meanwhile")
    except PromotionRefused as exc:
        _refused(store, who, request_id, exc, action="reject", reason=why)
        raise
    rejected = _reload(store, request_id)
    rejected["event_sent"] = _announce_request(events.PROMOTION_REJECTED, rejected, use_case)
    return rejected

"""Helpers of the promotion-policy tests: versions with recorded gate verdicts, audit reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registry_helpers import register
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.spec import PromotionSpec
from loopline.store import Store
from loopline.store.tables import AuditEvent, GateResult

MODEL = "fraud-detector"
POLICY = PromotionSpec(approver_roles=["model-risk"])
TWO_PERSON = PromotionSpec(approver_roles=["model-risk"], two_person_rule=True)


def record_gates(store: Store, version: int, verdicts: Mapping[str, bool]) -> None:
    """Record gate verdicts (name -> passed) on a version, with evidence in `detail`."""
    with store.session() as session:
        row = registry.get_version(session, MODEL, version)
        session.add_all(
            GateResult(
                model_version_id=row.id,
                gate=gate,
                passed=passed,
                observed=0.9 if passed else 0.4,
                threshold=0.7,
                detail={"kind": "min", "evidence": f"{gate} of v{version}"},
            )
            for gate, passed in verdicts.items()
        )


def versions(
    store: Store,
    artifacts: ArtifactStore,
    n: int,
    *,
    failing: Mapping[int, list[str]] | None = None,
    ungated: tuple[int, ...] = (),
) -> None:
    """Register versions 1..n; each records `auc_floor` and `latency` verdicts (passed unless
    named in `failing[version]`), except the `ungated` ones, which record none."""
    failing = failing or {}
    for seed in range(n):
        register(store, artifacts, seed=seed)
    for version in range(1, n + 1):
        if version not in ungated:
            failed = failing.get(version, [])
            record_gates(store, version, {g: g not in failed for g in ("auc_floor", "latency")})


def audits(store: Store, action: str | None = None) -> list[dict[str, Any]]:
    """Audit events (oldest first) as dicts, optionally of one action."""
    query = select(AuditEvent).order_by(AuditEvent.id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    with store.reader() as session:
        return [
            {"action": e.action, "actor": e.actor, "subject": e.subject_id, "detail": e.detail}
            for e in session.scalars(query)
        ]


def champion(store: Store) -> int | None:
    """The champion's version number now."""
    with store.reader() as session:
        found = registry.get_alias(session, MODEL, registry.CHAMPION)
        return None if found is None else found.model_version.version

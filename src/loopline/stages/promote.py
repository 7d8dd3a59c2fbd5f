"""The promote and rollback stages: move an alias as the use case's promotion policy allows.

Both are tracked runs over `loopline.registry.policy`, the same code the CLI and the app call.
A version whose gates failed is not promoted (the summary says which gates; the attempt is
audited); that is an outcome, not an error, so a pipeline that trained a worse model goes on.
Bad input and policy refusals (an override without a reason or an approver role) raise.
Under the two-person rule, promoting `champion` files a request for someone else to approve.
"""

from __future__ import annotations

from typing import Any

from loopline.registry import models as registry
from loopline.registry import policy
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import StageError, open_context


def run_promote(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    model_version: int | None = None,
    actor: str | None = "pipeline",
    force: bool = False,
    flow_run_id: str | None = None,
    alias: str = registry.CHAMPION,
    override: bool = False,
    reason: str = "",
    role: str | None = None,
    expect_version: int | None = None,
) -> dict[str, Any]:
    """Point `alias` (champion) at a model version whose gates passed, or by override.

    Args:
        model_version: the version to promote; default the newest.
        actor: who promotes (None: the OS user); role: their role, for an override.
        force: the old name of `override`.
        override: promote although gates failed; needs `reason` and an approver role of the
            spec's `promotion.approver_roles`.
        expect_version: the version the caller believes holds the alias (0: unset).

    Returns:
        The summary: `promoted`, `model_version`, `failed_gates`, `previous`, `override`,
        `reason`, and `blocked` when failed gates stopped it; under the two-person rule
        `requested` and `request_id` instead.

    Raises:
        RegistryError: bad input, a refused override, a lost race (audited).
        StageError: the model has no versions.
    """
    override = override or force
    who = policy.identity(actor, role)
    alias = registry.normalise_alias(alias)
    if model_version is not None:
        policy.version_number(model_version, "model_version")
    if override and not reason.strip():
        raise policy.PolicyError("an override of failed gates needs a reason (--reason)")
    ctx = open_context(settings, spec)
    params = {
        "model_version": model_version,
        "alias": alias,
        "actor": who.actor,
        "role": who.role,
        "override": override,
        "reason": reason,
    }
    with ctx.run("promote", flow_run_id=flow_run_id, params=params) as run:
        with ctx.store.reader() as session:
            if model_version is None:
                versions = registry.list_versions(session, spec.model_name)
                if not versions:
                    raise StageError(f"model '{spec.model_name}' has no versions: train first")
                model_version = max(v.version for v in versions)
            candidate = registry.get_version(session, spec.model_name, model_version)
            gates = policy.gate_status(session, candidate)
            current = registry.get_alias(session, spec.model_name, alias)
        summary: dict[str, Any] = {
            "model_version": model_version,
            "alias": alias,
            "failed_gates": gates.failed,
            "gates_passed": gates.passed,
        }
        if current is not None and current.model_version.id == candidate.id:
            summary |= {"promoted": False, "reason": f"already {alias}"}
        elif policy.two_person_applies(spec.promotion, alias):
            summary |= _request(ctx.store, spec, who, model_version, override, reason, gates)
        else:
            summary |= _promote(
                ctx.store, spec, who, model_version, alias, override, reason, expect_version
            )
        run.set_summary(**{k: v for k, v in summary.items() if k != "event_sent"})
    summary["run_id"] = run.run_id
    return summary


def _promote(
    store: Any,
    spec: UseCaseSpec,
    who: policy.Identity,
    version: int,
    alias: str,
    override: bool,
    reason: str,
    expect_version: int | None,
) -> dict[str, Any]:
    try:
        change = policy.promote(
            store,
            spec.promotion,
            model_name=spec.model_name,
            version=version,
            alias=alias,
            actor=who.actor,
            role=who.role,
            override=override,
            reason=reason or "all gates passed",
            expect_version=expect_version,
            use_case=spec.name,
        )
    except policy.GatesFailed as refused:
        return {
            "promoted": False,
            "blocked": True,
            "failed_gates": refused.failed,
            "reason": str(refused),
        }
    return {
        "promoted": True,
        "previous": change.move.from_version,
        "revision": change.move.revision,
        "override": change.override,
        "reason": change.reason,
        "event_sent": change.event_sent,
    }


def _request(
    store: Any,
    spec: UseCaseSpec,
    who: policy.Identity,
    version: int,
    override: bool,
    reason: str,
    gates: policy.GateStatus,
) -> dict[str, Any]:
    try:
        request = policy.request_promotion(
            store,
            spec.promotion,
            model_name=spec.model_name,
            version=version,
            actor=who.actor,
            role=who.role,
            override=override,
            reason=reason or ("all gates passed" if gates.passed else ""),
            use_case=spec.name,
        )
    except policy.GatesFailed as refused:
        return {"promoted": False, "blocked": True, "requested": False, "reason": str(refused)}
    return {
        "promoted": False,
        "requested": True,
        "request_id": request["id"],
        "reason": (
            f"two-person rule: promotion requested ({request['id']}); another approver "
            f"approves it with `loopline models approve {request['id']}`"
        ),
        "event_sent": request["event_sent"],
    }


def run_rollback(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    alias: str = registry.CHAMPION,
    actor: str | None = None,
    role: str | None = None,
    reason: str = "",
    expect_version: int | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Return `alias` (champion) to the version it pointed at before its last move.

    Returns:
        The summary: `rolled_back`, `from_version`, `to_version`, `revision`, `reason`.

    Raises:
        RegistryError: bad input, nothing to return to, an archived previous version, a lost
            race (audited).
    """
    who = policy.identity(actor, role)
    alias = registry.normalise_alias(alias)
    ctx = open_context(settings, spec)
    params = {"alias": alias, "actor": who.actor, "role": who.role, "reason": reason}
    with ctx.run("rollback", flow_run_id=flow_run_id, params=params) as run:
        change = policy.rollback(
            ctx.store,
            model_name=spec.model_name,
            alias=alias,
            actor=who.actor,
            role=who.role,
            reason=reason,
            expect_version=expect_version,
            use_case=spec.name,
        )
        summary = {
            "rolled_back": True,
            "alias": change.move.alias,
            "from_version": change.move.from_version,
            "to_version": change.move.to_version,
            "revision": change.move.revision,
            "reason": change.reason,
        }
        run.set_summary(**summary)
    return {**summary, "event_sent": change.event_sent, "run_id": run.run_id}

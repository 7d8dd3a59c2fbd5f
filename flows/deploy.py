"""Promote and rollback flows: move the `champion` alias as the use case's policy allows.

Both call the stages (`loopline.stages.promote`), the same code as the CLI and the app. Each
committed change is audited and sent as a Prefect event (`loopline.model.promoted`,
`loopline.model.rolled_back`) that automations can react to. Who acts is the `actor`
parameter, else LOOPLINE_ACTOR, else the worker's OS user; `role` likewise (LOOPLINE_ROLE).
Neither is retried: a promotion that lost a compare-and-swap must not be replayed blindly.
"""

from __future__ import annotations

import os
from typing import Any

import tasks
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from loopline.settings import Settings
from loopline.spec import UseCaseSpec

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


def _who(actor: str | None, role: str | None) -> tuple[str | None, str | None]:
    """The parameters, else LOOPLINE_ACTOR / LOOPLINE_ROLE (None: the OS user / no role)."""
    return actor or os.environ.get("LOOPLINE_ACTOR"), role or os.environ.get("LOOPLINE_ROLE")


@task(name="promote-version", **_TASK)
def promote_version(settings: Settings, spec: UseCaseSpec, **kwargs: Any) -> dict[str, Any]:
    """Move the alias to a version if the policy allows it (see `run_promote`)."""
    from loopline.stages.promote import run_promote

    return run_promote(settings, spec, **kwargs)


@task(name="rollback-alias", **_TASK)
def rollback_alias(settings: Settings, spec: UseCaseSpec, **kwargs: Any) -> dict[str, Any]:
    """Return the alias to its previous holder (see `run_rollback`)."""
    from loopline.stages.promote import run_rollback

    return run_rollback(settings, spec, **kwargs)


@flow(name="promote", log_prints=True)
def promote_flow(
    use_case: str | None = None,
    version: int | None = None,
    alias: str = "champion",
    override: bool = False,
    reason: str = "",
    actor: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """Promote `version` (default: the newest) if its gates passed, or by override.

    Args:
        use_case: use case name or spec path (default LOOPLINE_USE_CASE).
        version: version to promote; None picks the newest.
        alias: alias to move.
        override: promote although gates failed; needs `reason` and an approver `role`.
        reason: why (audit trail and event).
        actor: who promotes (default LOOPLINE_ACTOR, else the worker's OS user).
        role: the actor's role (default LOOPLINE_ROLE).
    """
    settings, spec = tasks.context(use_case)
    actor, role = _who(actor, role)
    return promote_version(
        settings, spec, model_version=version, alias=alias, override=override, reason=reason,
        actor=actor, role=role, flow_run_id=flow_run.id,
    )  # fmt: skip


@flow(name="rollback", log_prints=True)
def rollback_flow(
    use_case: str | None = None,
    reason: str = "",
    actor: str | None = None,
    alias: str = "champion",
) -> dict[str, Any]:
    """Return `alias` (champion) to the version it pointed at before its last move.

    Args:
        use_case: use case name or spec path (default LOOPLINE_USE_CASE).
        reason: why (audit trail and event).
        actor: who rolls back (default LOOPLINE_ACTOR, else the worker's OS user).
        alias: alias to move back.
    """
    settings, spec = tasks.context(use_case)
    actor, role = _who(actor, None)
    return rollback_alias(
        settings, spec, alias=alias, reason=reason, actor=actor, role=role,
        flow_run_id=flow_run.id,
    )  # fmt: skip


if __name__ == "__main__":
    promote_flow()

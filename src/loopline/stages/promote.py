"""The promote stage: move `champion` to a version whose gates passed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import StageError, open_context
from loopline.store.tables import GateResult


def run_promote(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    model_version: int | None = None,
    actor: str = "pipeline",
    force: bool = False,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Move `champion` to a model version whose gates all passed (or `force`).

    Args:
        model_version: the version to promote; default the newest.
    """
    ctx = open_context(settings, spec)
    params = {"model_version": model_version, "actor": actor, "force": force}
    with ctx.run("promote", flow_run_id=flow_run_id, params=params) as run:
        with ctx.store.session() as session:
            if model_version is None:
                versions = registry.list_versions(session, spec.model_name)
                if not versions:
                    raise StageError(f"model '{spec.model_name}' has no versions: train first")
                model_version = max(v.version for v in versions)
            candidate = registry.get_version(session, spec.model_name, model_version)
            failed = list(
                session.scalars(
                    select(GateResult.gate).where(
                        GateResult.model_version_id == candidate.id,
                        GateResult.passed.is_(False),
                    )
                )
            )
            current = registry.get_alias(session, spec.model_name, registry.CHAMPION)
            summary: dict[str, Any] = {"model_version": model_version, "failed_gates": failed}
            if current is not None and current.model_version.id == candidate.id:
                summary |= {"promoted": False, "reason": "already champion"}
            elif failed and not force:
                summary |= {"promoted": False, "reason": f"gates failed: {', '.join(failed)}"}
            else:
                registry.set_alias(
                    session,
                    model_name=spec.model_name,
                    alias=registry.CHAMPION,
                    version=model_version,
                    expected_revision=current.revision if current else None,
                    actor=actor,
                    reason="forced" if failed else "all gates passed",
                )
                summary |= {
                    "promoted": True,
                    "previous": current.model_version.version if current else None,
                }
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary

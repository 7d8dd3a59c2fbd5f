"""Promote flow: move the `champion` alias to a model version whose gates passed."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run


@flow(name="promote", log_prints=True)
def promote_flow(
    use_case: str | None = None,
    model_version: int | None = None,
    actor: str = "prefect",
    force: bool = False,
) -> dict[str, Any]:
    """Promote `model_version` (default: the newest) if its gates passed, or if `force`.

    Args:
        use_case: use case name or spec path.
        model_version: version to promote; None picks the newest.
        actor: who promotes, for the audit trail.
        force: promote even if gates failed (recorded as forced).
    """
    settings, spec = tasks.context(use_case)
    return tasks.promote(
        settings, spec, model_version=model_version, actor=actor, force=force,
        flow_run_id=flow_run.id,
    )  # fmt: skip


if __name__ == "__main__":
    promote_flow()

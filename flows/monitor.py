"""Monitor flow (scheduled): drift of served traffic; a retrain when the monitor asks for one."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

RETRAIN_DEPLOYMENT = "retrain/loopline"


@flow(name="monitor", log_prints=True)
def monitor_flow(use_case: str | None = None, trigger_retrain: bool = True) -> dict[str, Any]:
    """Profile served traffic; start the retrain deployment if the result says `retrain`.

    The decision (effect size, persistence across windows, cooldown) is the monitor stage's;
    this flow only acts on it, without waiting for the retrain to finish.

    Args:
        use_case: use case name or spec path.
        trigger_retrain: start the retrain deployment when the monitor asks for it.
    """
    settings, spec = tasks.context(use_case)
    result = tasks.monitor(settings, spec, flow_run_id=flow_run.id)
    if trigger_retrain and result.get("retrain"):
        from prefect.deployments import run_deployment

        try:
            retrain = run_deployment(
                RETRAIN_DEPLOYMENT, parameters={"use_case": use_case}, timeout=0
            )
        except Exception as exc:  # the monitor's own result stands; say why no retrain
            get_run_logger().warning("could not start %s: %s", RETRAIN_DEPLOYMENT, exc)
        else:
            result = {**result, "retrain_flow_run_id": str(retrain.id)}
    return result


if __name__ == "__main__":
    monitor_flow()

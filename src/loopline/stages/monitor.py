"""The monitor stage: served traffic against the serving model's training reference."""

from __future__ import annotations

from typing import Any

from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import open_context


def run_monitor(
    settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Compare served traffic with the serving model's training reference; store drift."""
    from loopline.monitoring.monitor import monitor_predictions

    ctx = open_context(settings, spec)
    with ctx.run("monitor", flow_run_id=flow_run_id) as run:
        drift = monitor_predictions(ctx.store, ctx.artifacts, settings, spec, run_id=run.run_id)
        drifted = sorted(d.feature for d in drift if d.drifted)
        summary = {"features_checked": len(drift), "drifted": drifted}
        run.log_metrics({"features_drifted": len(drifted)})
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary

"""The whole loop once: demo data if absent, ingest, features, train, promote, monitor."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    use_case: str | None = None,
    days: int = 90,
    customers: int = 2000,
    seed: int = 7,
    demo: bool = True,
    monitor: bool = True,
) -> dict[str, Any]:
    """Run every stage in order; each stage's summary is returned under its name.

    Args:
        use_case: use case name or spec path.
        days: days of demo transactions to generate if there is no raw data yet.
        customers: demo customers to generate if there is no raw data yet.
        seed: seed of the demo generator.
        demo: write the fraud demo's raw files when there are none (off for real data).
        monitor: end with a monitoring pass.
    """
    settings, spec = tasks.context(use_case)
    run_id = flow_run.id
    summary: dict[str, Any] = {}
    if demo:
        summary["demo_data_written"] = tasks.demo_data(
            settings, days=days, customers=customers, seed=seed
        )
    summary["ingest"] = tasks.ingest(settings, spec, flow_run_id=run_id)
    summary["features"] = tasks.features(settings, spec, flow_run_id=run_id)
    summary["train"] = tasks.train(settings, spec, flow_run_id=run_id)
    summary["promote"] = tasks.promote(
        settings, spec, model_version=summary["train"]["model_version"], actor="pipeline",
        flow_run_id=run_id,
    )  # fmt: skip
    if monitor:
        summary["monitor"] = tasks.monitor(settings, spec, flow_run_id=run_id)
    return summary


if __name__ == "__main__":
    pipeline_flow()

"""Features flow: build the feature tables (incrementally), apply Feast, materialize online, and
optionally check training-serving skew.

Build and materialize are idempotent (a build appends only what is new; a materialization starts
at the view's watermark, which only advances once a write finished), so both retry on transient
failures; a rerun after a failure half-way leaves no gap.
"""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow, task
from prefect.runtime import flow_run

from loopline.settings import Settings
from loopline.spec import UseCaseSpec


@task(name="features-build", **tasks._TASK, **tasks._RETRY)
def build(settings: Settings, spec: UseCaseSpec, *, full: bool, flow_run_id: str | None) -> dict:
    """Feature tables and `feast apply`."""
    from loopline.stages.features import run_feature_build

    return run_feature_build(settings, spec, full=full, flow_run_id=flow_run_id)


@task(name="features-materialize", **tasks._TASK, **tasks._RETRY)
def materialize(settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None) -> dict:
    """Online store up to each table's watermark."""
    from loopline.stages.features import run_feature_materialize

    return run_feature_materialize(settings, spec, flow_run_id=flow_run_id)


@task(name="features-skew", **tasks._TASK)
def skew(settings: Settings, spec: UseCaseSpec, *, sample: int, flow_run_id: str | None) -> dict:
    """Online against offline values for sampled entities."""
    from loopline.stages.features import run_feature_skew

    return run_feature_skew(settings, spec, sample=sample, flow_run_id=flow_run_id)


@flow(name="features", log_prints=True)
def features_flow(
    use_case: str | None = None, full: bool = False, online: bool = True, skew_sample: int = 0
) -> dict[str, Any]:
    """Build the use case's feature tables and publish them through Feast.

    Args:
        use_case: use case name or spec path.
        full: rebuild every table from scratch instead of appending what is new.
        online: materialize the online store after the build.
        skew_sample: entities per view to compare online and offline (0: no check).
    """
    settings, spec = tasks.context(use_case)
    run_id = flow_run.id
    summary: dict[str, Any] = {"build": build(settings, spec, full=full, flow_run_id=run_id)}
    if online:
        summary["materialize"] = materialize(settings, spec, flow_run_id=run_id)
    if skew_sample:
        summary["skew"] = skew(settings, spec, sample=skew_sample, flow_run_id=run_id)
    return summary


if __name__ == "__main__":
    features_flow()

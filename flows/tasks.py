"""Prefect tasks of the loopline flows: each is a one-line call into `loopline.stages`.

The stages import the heavy libraries (Polars, Feast, LightGBM), so each task imports them when
it runs: loading a flow file, as `prefect deploy` and the worker do, stays fast.

Retries: ingest and features are idempotent (same input, same result), so a transient failure
(a locked SQLite file, a busy disk) is retried. Training is expensive and deterministic, and a
promotion that lost a compare-and-swap must not be replayed blindly: neither retries. Errors
that no retry can fix (bad input, a stage with nothing to work on) are never retried.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from loopline.settings import Settings
from loopline.spec import UseCaseSpec, load_spec


def context(use_case: str | None) -> tuple[Settings, UseCaseSpec]:
    """Settings from the environment and the use case: the one named, else LOOPLINE_USE_CASE."""
    settings = Settings()
    return settings, load_spec(use_case or settings.use_case)


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry unless the failure is bad input or a stage that cannot run."""
    from loopline.stages import StageError

    error = state.result(raise_on_failure=False)
    return not isinstance(error, ValueError | TypeError | LookupError | StageError)


# The stages read and write the stores themselves: their inputs are not cache keys.
_TASK = {"cache_policy": NO_CACHE, "persist_result": False}
_RETRY = {"retries": 2, "retry_delay_seconds": [5, 20], "retry_condition_fn": _transient}


@task(name="demo-data", **_TASK)
def demo_data(settings: Settings, *, days: int, customers: int, seed: int) -> bool:
    """Write the demo's raw files unless they exist; True if written."""
    from loopline.stages import ensure_demo_data

    return ensure_demo_data(settings, days=days, customers=customers, seed=seed)


@task(name="ingest", **_TASK, **_RETRY)
def ingest(settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None) -> dict[str, Any]:
    """Validate and append new raw batches."""
    from loopline.stages import run_ingest

    return run_ingest(settings, spec, flow_run_id=flow_run_id)


@task(name="features", **_TASK, **_RETRY)
def features(settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None) -> dict[str, Any]:
    """Compute feature tables, apply Feast, materialize online."""
    from loopline.stages import run_features

    return run_features(settings, spec, flow_run_id=flow_run_id)


@task(name="train", **_TASK)
def train(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    flow_run_id: str | None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register a model version with its gate results."""
    from loopline.stages import run_train

    return run_train(settings, spec, flow_run_id=flow_run_id, overrides=overrides)


@task(name="promote", **_TASK)
def promote(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    model_version: int | None,
    actor: str,
    force: bool = False,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Make a model version champion if its gates passed (or `force`)."""
    from loopline.stages import run_promote

    return run_promote(
        settings, spec, model_version=model_version, actor=actor, force=force,
        flow_run_id=flow_run_id,
    )  # fmt: skip


@task(name="monitor", **_TASK, retries=1, retry_delay_seconds=10, retry_condition_fn=_transient)
def monitor(settings: Settings, spec: UseCaseSpec, *, flow_run_id: str | None) -> dict[str, Any]:
    """Profile served traffic against the champion's training reference."""
    from loopline.stages import run_monitor

    return run_monitor(settings, spec, flow_run_id=flow_run_id)


@task(name="score", **_TASK)
def score(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    source: str | None,
    model: str | None,
    out: str | None,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Batch-score events into a new predictions table version (not retried: a retry would
    write a second version)."""
    from loopline.stages.score import run_score

    result = run_score(
        settings, spec, source=source, model_ref=model, out=out, flow_run_id=flow_run_id
    )
    return result.as_dict()

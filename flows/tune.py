"""Tune flow: an Optuna study whose workers run as Prefect tasks, then the final model.

The stage (`loopline.stages.tune.run_tune`) does the work; this flow only says where its
workers run: `parallelism` tasks on a task runner started for the study, a thread pool by
default, or Dask (`task_runner="dask"`: a local cluster of one single-threaded process per
worker, or the scheduler at `dask_address`, as in the scale profile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tasks
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from loopline.stages.tune import TuneJob, Worker, run_tune, run_worker
from loopline.training.prepare import Prepared

TASK_RUNNERS = ("threads", "dask")

# Built from the stage's function (not one defined here) so Dask workers unpickle it by
# importing loopline, which they have, rather than this flow file, which they may not.
tune_worker = task(run_worker, name="tune-worker", cache_policy=NO_CACHE, persist_result=False)


def check_task_runner(kind: str, dask_address: str | None = None) -> None:
    """Raises ValueError naming the parameter: an unknown kind, or an address without Dask."""
    if kind not in TASK_RUNNERS:
        raise ValueError(f"task_runner: must be one of {list(TASK_RUNNERS)}, got {kind!r}")
    if dask_address and kind != "dask":
        raise ValueError("dask_address: only applies with task_runner='dask'")


def make_task_runner(kind: str, workers: int, dask_address: str | None = None) -> TaskRunner:
    """The task runner the study's workers run on (`workers` at once).

    Raises:
        ValueError: see `check_task_runner`.
    """
    check_task_runner(kind, dask_address)
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})


@flow(name="tune", log_prints=True)
def tune_flow(
    use_case: str | None = None,
    n_trials: int | None = None,
    timeout_minutes: float | None = None,
    parallelism: int | None = None,
    task_runner: str = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Tune LightGBM params within a budget, then train and register the final model.

    Args:
        use_case: Use-case spec name or YAML path (default: LOOPLINE_USE_CASE).
        n_trials: Trials in total (default: the spec's `tuning.n_trials`).
        timeout_minutes: No trial starts after this (default: the spec's).
        parallelism: Trials running at once, one task each (default: the spec's).
        task_runner: Where the workers run: `threads` or `dask`.
        dask_address: A running Dask scheduler (`task_runner="dask"` only).
    """
    check_task_runner(task_runner, dask_address)
    settings, spec = tasks.context(use_case)

    def map_workers(
        worker: Worker, jobs: Sequence[TuneJob], prepared: Prepared
    ) -> list[dict[str, Any]]:
        # `worker` is `run_worker`; it runs here as the `tune_worker` task that wraps it.
        with make_task_runner(task_runner, len(jobs), dask_address) as runner:
            futures = [
                runner.submit(tune_worker, {"job": job, "prepared": prepared}) for job in jobs
            ]
            return [future.result() for future in futures]

    return run_tune(
        settings, spec, n_trials=n_trials, timeout_minutes=timeout_minutes,
        parallelism=parallelism, flow_run_id=flow_run.id, map_workers=map_workers,
    )  # fmt: skip


if __name__ == "__main__":
    tune_flow()

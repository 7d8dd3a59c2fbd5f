"""The tune stage: an Optuna study over LightGBM params, every trial a child run, then the
final model trained with the best params.

`run_tune` checks the budget, builds the point-in-time training set once, opens the study run
(kind `tune`) and the Optuna study (in the metadata database's server, see
`loopline.training.tuning`), hands one `TuneJob` per worker to a *worker map*, and finally
trains and registers a model version with the best trial's params (`run_train`, as a child of
the study run).

A worker (`run_worker`) loads the shared study and runs its share of the trials with
`study.optimize`; each trial is a run of kind `tune-trial` whose parent is the study run, tagged
`trial_state`: `complete` and `pruned` trials end `succeeded` (a pruned one with its curves and
metrics up to the iteration it was stopped at), a `failed` one ends `failed` with its error.
Trials register no model version.

The worker map decides where workers run: a thread pool here (`thread_map`, what the CLI uses),
the Prefect flow's task runner in `flows/tune.py` (threads, or Dask processes). Jobs are plain
picklable data and each worker opens its own stores, so the same function runs in a thread, a
Dask worker process, or another machine sharing the stores. The training set is built once and
handed to every worker (shared in-process by threads, shipped to Dask processes). The final
`run_train` builds its own, recording its snapshot, from the newest dataset versions again: the
trials' ones unless an ingest landed during the study.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna

from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import Context, StageError, open_context
from loopline.tracking import RunHandle
from loopline.training import tuning
from loopline.training.prepare import Prepared

Progress = Callable[[str, int, int], None]
"""Called as (phase, done, total): phase `trials` (trials finished of the budget), then
`final` (training the final model)."""


@dataclass(frozen=True)
class TuneJob:
    """What one worker needs to run its share of a study (picklable: it may cross processes).

    Attributes:
        settings, spec: Where the stores are, and the use case.
        study_name: The Optuna study, already created in the study storage.
        study_run_id: The `tune` run the trials are children of.
        flow_run_id: The Prefect flow run, if any.
        worker: Index of this worker (seeds its sampler).
        n_trials: Trials this worker runs at most.
        total_trials: Trials of the whole study's budget.
        deadline: Epoch seconds after which no trial starts (None: no time limit).
        parallel: Whether other workers share the study.
        pruner: A pruner replacing the spec's (None: `tuning.make_pruner(spec)`).
    """

    settings: Settings
    spec: UseCaseSpec
    study_name: str
    study_run_id: str
    flow_run_id: str | None
    worker: int
    n_trials: int
    total_trials: int
    deadline: float | None
    parallel: bool
    pruner: optuna.pruners.BasePruner | None = field(default=None, compare=False)


Worker = Callable[..., dict[str, Any]]
"""`run_worker`: (job, prepared, progress=None) -> {"worker": index, "trials": ran}."""
WorkerMap = Callable[[Worker, Sequence[TuneJob], Prepared], list[dict[str, Any]]]
"""Runs `worker(job, prepared)` for every job, in parallel, and returns the results in order."""


def _objective(ctx: Context, job: TuneJob, prepared: Prepared) -> Callable[[optuna.Trial], float]:
    from loopline.stages.train import fit_and_record

    spec = ctx.spec
    metric = spec.primary_metric
    direction = tuning.study_direction(metric)
    lgb_metric = tuning.pruning_metric(spec.task, metric)

    def objective(trial: optuna.Trial) -> float:
        params = tuning.suggest_params(trial, spec.tuning.search_space)
        callback = tuning.PruningCallback(trial, lgb_metric, direction)
        handle: RunHandle | None = None
        pruned: optuna.TrialPruned | None = None
        value = math.nan
        try:
            with ctx.run(
                "tune-trial",
                flow_run_id=job.flow_run_id,
                params={"study": job.study_name, "trial": trial.number, "overrides": params},
                parent_run_id=job.study_run_id,
                tags={"study": job.study_name, "trial": str(trial.number)},
                name=f"trial {trial.number}",
            ) as handle:
                trial.set_user_attr("run_id", handle.run_id)
                try:
                    metrics = fit_and_record(
                        handle, prepared, spec, overrides=params, callbacks=[callback],
                        explain=False,
                    ).metrics  # fmt: skip
                except optuna.TrialPruned as exc:
                    _record_pruned(handle, callback, prepared, spec, trial.number, str(exc))
                    pruned = exc
                else:
                    value = metrics[metric]
                    if not math.isfinite(value):
                        raise StageError(f"trial {trial.number}: {metric} is {value}")
                    handle.set_summary(trial=trial.number, trial_state="complete", value=value)
                    handle.set_tags({"trial_state": "complete"})
        except Exception:
            if handle is not None:
                handle.set_tags({"trial_state": "failed"})
                handle.set_summary(trial=trial.number, trial_state="failed")
            raise
        if pruned is not None:
            raise pruned
        return value

    return objective


def _record_pruned(
    run: RunHandle,
    callback: tuning.PruningCallback,
    prepared: Prepared,
    spec: UseCaseSpec,
    number: int,
    reason: str,
) -> None:
    """What a pruned trial leaves: curves up to the pruning, params, metrics at that point."""
    from loopline.training.metrics import compute_metrics_or_none
    from loopline.training.model import TrainedModel

    for key, values in callback.history.items():
        run.log_history(key, values)
    summary: dict[str, Any] = {
        "trial": number,
        "trial_state": "pruned",
        "pruned_at_iteration": callback.step,
        "pruning_metric": f"valid_{callback.metric}",
        "pruning_value": callback.value,
        "reason": reason,
    }
    if callback.booster is not None:
        model = TrainedModel(
            callback.booster, prepared.feature_names, callback.step, spec.task, callback.history
        )
        run.log_params({"lightgbm": model.resolved_params(), "seed": spec.training.seed})
        predictions = model.predict(prepared.x_valid)
        metrics, _ = compute_metrics_or_none(spec.task, prepared.y_valid, predictions, spec.metrics)
        run.log_metrics({k: v for k, v in metrics.items() if v is not None})
        summary["metrics"] = metrics
    run.set_summary(**summary)
    run.set_tags({"trial_state": "pruned"})


def run_worker(
    job: TuneJob, prepared: Prepared, progress: Progress | None = None
) -> dict[str, Any]:
    """Run one worker's share of a study's trials on the shared training set.

    Stops after `job.n_trials` trials, at the deadline (a running trial finishes), or when the
    study holds `job.total_trials` trials. A failing trial is recorded (failed run, FAIL trial)
    and the worker goes on.

    Args:
        job: The worker's share of the study.
        prepared: The training set, shared by every trial.
        progress: Called after each trial with ("trials", finished trials, budget).

    Returns:
        {"worker": index, "trials": trials this worker ran}.
    """
    ctx = open_context(job.settings, job.spec)
    storage = tuning.open_storage(job.settings.metadata_url, create=False)
    try:
        study = optuna.load_study(
            study_name=job.study_name,
            storage=storage,
            sampler=tuning.make_sampler(
                job.spec.training.seed, worker=job.worker, parallel=job.parallel
            ),
            pruner=job.pruner or tuning.make_pruner(job.spec),
        )
        timeout = None if job.deadline is None else job.deadline - time.time()
        if timeout is not None and timeout <= 0:
            return {"worker": job.worker, "trials": 0}
        ran = 0

        def count(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
            nonlocal ran
            ran += 1
            if progress is not None:
                progress("trials", tuning.finished_trials(study), job.total_trials)

        study.optimize(
            _objective(ctx, job, prepared),
            n_trials=job.n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[optuna.study.MaxTrialsCallback(job.total_trials, states=None), count],
        )
        return {"worker": job.worker, "trials": ran}
    finally:
        tuning.close_storage(storage)
        ctx.store.dispose()


def thread_map(
    worker: Worker,
    jobs: Sequence[TuneJob],
    prepared: Prepared,
    *,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run every job in its own thread of this process (LightGBM trains outside the GIL)."""
    call = worker if progress is None else partial(worker, progress=progress)
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="loopline-tune") as pool:
        futures = [pool.submit(call, job, prepared) for job in jobs]
        return [future.result() for future in futures]


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError:
        counts = tuning.trial_counts(study)
        raise StageError(
            f"study '{study.study_name}': no trial completed ({counts['pruned']} pruned, "
            f"{counts['failed']} failed): see the failed tune-trial runs for errors"
        ) from None


def run_study(
    ctx: Context,
    prepared: Prepared,
    budget: tuning.Budget,
    *,
    study_run: RunHandle,
    flow_run_id: str | None = None,
    map_workers: WorkerMap | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Create the study `<use case>-<study run id>` and run its trials within the budget.

    Args:
        ctx: The stage context (its settings name the stores).
        prepared: The training set every trial trains on.
        budget: Trials, minutes and workers.
        study_run: The open `tune` run the trials are children of.
        flow_run_id: The Prefect flow run, if any.
        map_workers: Where workers run (default: `thread_map`).
        pruner: Replaces the spec's pruner (e.g. in tests).
        progress: Called with ("trials", finished, budget) as trials end (thread map only).

    Returns:
        The study's outcome (name, storage, best trial, counts), also written to the run.

    Raises:
        StageError: no trial completed.
    """
    spec = ctx.spec
    direction = tuning.study_direction(spec.primary_metric)
    name = f"{spec.name}-{study_run.run_id}"
    storage = tuning.open_storage(ctx.settings.metadata_url)
    storage_url = tuning.display_url(tuning.study_storage_url(ctx.settings.metadata_url))
    study_run.set_summary(study_name=name, storage=storage_url, budget=budget.as_dict())
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=direction,
            sampler=tuning.make_sampler(spec.training.seed),
            pruner=pruner or tuning.make_pruner(spec),
        )
        study.set_user_attr("loopline_run_id", study_run.run_id)
        study.set_user_attr("use_case", spec.name)
        study.set_user_attr("metric", spec.primary_metric)
        deadline = (
            None if budget.timeout_minutes is None else time.time() + budget.timeout_minutes * 60
        )
        jobs = [
            TuneJob(
                settings=ctx.settings,
                spec=spec,
                study_name=name,
                study_run_id=study_run.run_id,
                flow_run_id=flow_run_id,
                worker=i,
                n_trials=quota,
                total_trials=budget.n_trials,
                deadline=deadline,
                parallel=budget.workers > 1,
                pruner=pruner,
            )
            for i, quota in enumerate(budget.quotas())
        ]
        started = time.perf_counter()
        if progress is not None:
            progress("trials", 0, budget.n_trials)
        runner = map_workers or partial(thread_map, progress=progress)
        workers = runner(run_worker, jobs, prepared)
        elapsed = time.perf_counter() - started
        counts = tuning.trial_counts(study)
        finished = counts["complete"] + counts["pruned"] + counts["failed"]
        outcome: dict[str, Any] = {
            "study_name": name,
            "storage": storage_url,
            "metric": spec.primary_metric,
            "direction": direction,
            "budget": budget.as_dict(),
            "trials": counts,
            "stopped_by": "trials" if finished >= budget.n_trials else "timeout",
            "tuning_seconds": round(elapsed, 3),
            "workers": [dict(w) for w in workers],
        }
        study_run.set_summary(**outcome)
        best = _best(study)
        outcome |= {
            "best_trial": best.number,
            "best_trial_run_id": best.user_attrs.get("run_id"),
            "best_value": best.value,
            "best_params": dict(best.params),
        }
        study_run.set_summary(**outcome)
        study_run.log_metrics({f"best_{spec.primary_metric}": float(best.value or 0.0)})
        study_run.log_history(f"best_{spec.primary_metric}", _best_so_far(study, direction))
        return outcome
    finally:
        tuning.close_storage(storage)


def _best_so_far(study: optuna.Study, direction: str) -> list[float]:
    """Best value after each completed trial, in trial order (the optimisation history)."""
    pick = min if direction == "minimize" else max
    values: list[float] = []
    states = (optuna.trial.TrialState.COMPLETE,)
    for trial in sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number):
        assert trial.value is not None
        values.append(trial.value if not values else pick(values[-1], trial.value))
    return values


def run_tune(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    n_trials: int | None = None,
    timeout_minutes: float | None = None,
    parallelism: int | None = None,
    flow_run_id: str | None = None,
    map_workers: WorkerMap | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Tune LightGBM params with Optuna within a budget, then train the final model with the
    best ones.

    Args:
        settings: Where the platform's stores are.
        spec: The use case (its `tuning` section: budget, search space, pruning).
        n_trials, timeout_minutes, parallelism: Budget overrides (default: the spec's).
        flow_run_id: The Prefect flow run executing this, if any.
        map_workers: Where the workers run (default: threads of this process).
        pruner: Replaces the spec's pruner.
        progress: Called with (phase, done, total) while it runs.

    Returns:
        The study's outcome plus the final model's version, run id, metrics and gate result.

    Raises:
        TuningConfigError: a bad budget or search space (nothing is written).
        StageError: nothing to train on, or no trial completed.
    """
    from loopline.stages.train import build_inputs, run_train
    from loopline.training.prepare import prepare

    budget = tuning.resolve_budget(
        spec.tuning, n_trials=n_trials, timeout_minutes=timeout_minutes, parallelism=parallelism
    )
    tuning.validate_search_space(spec)
    tuning.study_storage_url(settings.metadata_url)
    ctx = open_context(settings, spec)
    inputs = build_inputs(ctx)
    try:
        prepared = prepare(inputs.training_set, spec)
    except ValueError as exc:
        raise StageError(str(exc)) from exc
    params = {
        "budget": budget.as_dict(),
        "search_space": {k: v.model_dump() for k, v in spec.tuning.search_space.items()},
        "metric": spec.primary_metric,
        "direction": tuning.study_direction(spec.primary_metric),
        "pruning": spec.tuning.pruning if pruner is None else type(pruner).__name__,
        "sampler": {"name": "TPESampler", "seed": spec.training.seed},
        "training": spec.training.model_dump(),
        **inputs.params(spec),
    }
    with ctx.run("tune", flow_run_id=flow_run_id, params=params) as study_run:
        outcome = run_study(
            ctx, prepared, budget, study_run=study_run, flow_run_id=flow_run_id,
            map_workers=map_workers, pruner=pruner, progress=progress,
        )  # fmt: skip
        if progress is not None:
            progress("final", 0, 1)
        final = run_train(
            settings, spec, flow_run_id=flow_run_id, overrides=outcome["best_params"],
            parent_run_id=study_run.run_id,
        )  # fmt: skip
        if progress is not None:
            progress("final", 1, 1)
        result = {
            "model_version": final["model_version"],
            "final_run_id": final["run_id"],
            "final_metrics": final["metrics"],
            "gates_passed": final.get("gates_passed"),
        }
        study_run.set_summary(**result)
    ctx.store.dispose()
    return {"run_id": study_run.run_id, **outcome, **result}

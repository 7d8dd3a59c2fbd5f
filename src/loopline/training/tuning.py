"""Hyper-parameter search with Optuna: budget, search space, sampler, pruner, study storage.

The pieces a tuning stage assembles, kept free of loopline's run tracking:

- `resolve_budget` and `validate_search_space` check what a study is asked to do before anything
  is written (errors name the field).
- `suggest_params` turns the spec's search space into a trial's LightGBM params.
- `PruningCallback` is a LightGBM callback reporting the holdout metric that tracks the primary
  metric at every iteration, and pruning the trial when the pruner says so.
- `study_storage_url` / `open_storage` put the study next to loopline's metadata.

Where the study lives: Optuna's RDB storage keeps its schema version in Alembic's default
`alembic_version` table, the same table loopline's migrations use. One table cannot hold both
(each side would see the other's revision and refuse to start, or try to "upgrade" to it), so
Optuna's tables get their own namespace on the same server: on PostgreSQL a sibling schema of
loopline's (`<schema>_optuna`, or `optuna` beside `public`), on SQLite a sibling file of the
metadata database (`loopline.optuna.db` beside `loopline.db`; SQLite has no schemas inside one
file). The other table names do not collide (Optuna: studies, trials, trial_*, study_*,
version_info; loopline: runs, run_*, models, ...). Both URLs are plain SQLAlchemy URLs, so
`optuna.load_study(storage=study_storage_url(url))` or optuna-dashboard open the study as is.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.pool import NullPool

from loopline.registry.gates import LOWER_IS_BETTER
from loopline.spec import ParamRange, Task, TuningSpec, UseCaseSpec

if TYPE_CHECKING:
    from lightgbm.callback import CallbackEnv

Direction = Literal["minimize", "maximize"]

# `mape` is lower-is-better too; gates.LOWER_IS_BETTER does not list it (yet).
_MINIMIZED = LOWER_IS_BETTER | {"mape"}

PRUNING_METRICS: dict[str, dict[str, str]] = {
    "binary_classification": {
        "roc_auc": "auc",
        "average_precision": "auc",
        "accuracy": "auc",
        "positive_rate": "auc",
        "log_loss": "binary_logloss",
        "brier": "binary_logloss",
    },
    "regression": {"rmse": "l2", "r2": "l2", "mae": "l1", "mape": "l1"},
    "multiclass_classification": {
        "log_loss": "multi_logloss",
        "accuracy": "multi_error",
        "macro_f1": "multi_error",
    },
}
"""Task -> primary metric -> the LightGBM evaluation metric (one `TASK_OBJECTIVES` computes
every iteration) that tracks it, reported to the pruner."""

MAX_PARALLELISM = 64
_FIXED_BY_TUNING = frozenset({"metric"})
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,56}$")
_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*(\S+)")


class TuningConfigError(ValueError):
    """A tuning budget, search space or storage is unusable; the message names the field."""


def study_direction(metric: str) -> Direction:
    """`minimize` for lower-is-better metrics (log loss, RMSE, ...), `maximize` otherwise."""
    return "minimize" if metric in _MINIMIZED else "maximize"


def pruning_metric(task: Task, primary_metric: str) -> str:
    """The LightGBM holdout metric reported to the pruner for a task's primary metric.

    Raises:
        TuningConfigError: the task has no such metric.
    """
    try:
        return PRUNING_METRICS[task][primary_metric]
    except KeyError:
        raise TuningConfigError(
            f"primary_metric: '{primary_metric}' has no LightGBM counterpart for {task}"
        ) from None


# --- budget ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What a study may spend: trials in total, minutes (optional), parallel workers."""

    n_trials: int
    timeout_minutes: float | None
    parallelism: int

    @property
    def workers(self) -> int:
        """Workers actually started (never more than trials)."""
        return min(self.parallelism, self.n_trials)

    def quotas(self) -> list[int]:
        """Trials per worker, summing to `n_trials` exactly.

        Each worker runs its share on the shared study: a common counter read between trials
        (Optuna's MaxTrialsCallback alone) can let two workers finishing together both start
        one more, overshooting the budget.
        """
        share, extra = divmod(self.n_trials, self.workers)
        return [share + (1 if i < extra else 0) for i in range(self.workers)]

    def as_dict(self) -> dict[str, Any]:
        """JSON form, for run params and summaries."""
        return {
            "n_trials": self.n_trials,
            "timeout_minutes": self.timeout_minutes,
            "parallelism": self.parallelism,
        }


def _whole(field: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TuningConfigError(f"{field}: must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise TuningConfigError(f"{field}: must be {bound}, got {value}")
    return value


def resolve_budget(
    tuning: TuningSpec,
    *,
    n_trials: int | None = None,
    timeout_minutes: float | None = None,
    parallelism: int | None = None,
) -> Budget:
    """The spec's budget with the given overrides, checked.

    Args:
        tuning: The spec's tuning section (defaults).
        n_trials: Trials in total, at least 1.
        timeout_minutes: Minutes after which no new trial starts (> 0; running ones finish).
        parallelism: Workers running trials at once, 1 to 64.

    Raises:
        TuningConfigError: a value breaks its rule; the message names the field.
    """
    trials = _whole("n_trials", tuning.n_trials if n_trials is None else n_trials, 1)
    workers = _whole(
        "parallelism",
        tuning.parallelism if parallelism is None else parallelism,
        1,
        MAX_PARALLELISM,
    )
    minutes = tuning.timeout_minutes if timeout_minutes is None else timeout_minutes
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, int | float):
            raise TuningConfigError(f"timeout_minutes: must be a number, got {minutes!r}")
        if not minutes > 0 or minutes == float("inf"):
            raise TuningConfigError(f"timeout_minutes: must be a finite number > 0, got {minutes}")
        minutes = float(minutes)
    return Budget(n_trials=trials, timeout_minutes=minutes, parallelism=workers)


# --- search space ------------------------------------------------------------------------------


def _int_bounds(name: str, param: ParamRange) -> tuple[int, int]:
    assert param.low is not None and param.high is not None
    low, high = int(-(-param.low // 1)), int(param.high // 1)
    if low > high:
        raise TuningConfigError(
            f"tuning.search_space.{name}: no whole number in [{param.low}, {param.high}]"
        )
    return low, high


def _sample_value(name: str, param: ParamRange) -> Any:
    if param.type == "categorical":
        assert param.choices
        return param.choices[0]
    if param.type == "int":
        return _int_bounds(name, param)[0]
    return float(param.low or 0.0)


def validate_search_space(spec: UseCaseSpec) -> None:
    """Check that every searched param may be tuned (not fixed by loopline) and has values.

    Raises:
        TuningConfigError: the space is empty, or a param is fixed (seed, determinism, task
            objective, evaluation metrics) or has an empty range.
    """
    from loopline.training.model import training_params

    space = spec.tuning.search_space
    if not space:
        raise TuningConfigError("tuning.search_space: empty, there is nothing to tune")
    num_class = len(spec.labels.classes or []) or None
    for name, param in space.items():
        if name in _FIXED_BY_TUNING:
            raise TuningConfigError(
                f"tuning.search_space.{name}: fixed by the task (the pruner reads its metrics)"
            )
        try:
            training_params(
                spec.training,
                spec.task,
                num_class=num_class,
                overrides={name: _sample_value(name, param)},
            )
        except ValueError as exc:
            raise TuningConfigError(f"tuning.search_space.{name}: {exc}") from exc


def suggest_params(trial: optuna.Trial, space: Mapping[str, ParamRange]) -> dict[str, Any]:
    """A trial's LightGBM params, one suggestion per searched param."""
    params: dict[str, Any] = {}
    for name, param in space.items():
        if param.type == "categorical":
            assert param.choices
            params[name] = trial.suggest_categorical(name, param.choices)
        elif param.type == "int":
            low, high = _int_bounds(name, param)
            params[name] = trial.suggest_int(name, low, high, log=param.log)
        else:
            assert param.low is not None and param.high is not None
            params[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
    return params


# --- sampler, pruner, pruning callback ---------------------------------------------------------


def make_sampler(
    seed: int, *, worker: int = 0, parallel: bool = False
) -> optuna.samplers.TPESampler:
    """A TPE sampler seeded from the spec's seed.

    Each worker gets `seed + worker`: workers seeded alike would draw the same random start-up
    trials. With parallel workers, running trials count as bad results meanwhile ("constant
    liar") so workers spread out instead of all sampling next to the current best.
    """
    return optuna.samplers.TPESampler(seed=seed + worker, constant_liar=parallel)


def make_pruner(spec: UseCaseSpec) -> optuna.pruners.BasePruner:
    """Median pruning when the spec asks for it (no pruning otherwise).

    A trial is not judged before it has had as many rounds as early stopping would give it,
    nor before 5 trials have finished.
    """
    if not spec.tuning.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=spec.training.early_stopping_rounds
    )


class PruningCallback:
    """LightGBM callback: report a holdout metric to the trial each iteration, prune on demand.

    The value is reported in the study's direction (negated when the LightGBM metric improves
    the other way, e.g. `l2` for a study maximising r2). Every evaluated metric is kept per
    iteration in `history` (`valid_auc`, `train_binary_logloss`, ...) so a pruned trial still
    has its learning curves; `booster` is the model as it was when pruned.

    Args:
        trial: The Optuna trial.
        metric: LightGBM metric name (see `PRUNING_METRICS`).
        direction: The study's direction.
        valid_name: Name of the holdout in `lgb.train(valid_names=...)`.
    """

    def __init__(
        self, trial: optuna.Trial, metric: str, direction: Direction, valid_name: str = "valid"
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.direction = direction
        self.valid_name = valid_name
        self.history: dict[str, list[float]] = {}
        self.step = 0
        self.value: float | None = None
        self.booster: Any = None
        # LightGBM orders callbacks by this (instance) attribute: after record_evaluation (20),
        # before early_stopping (30), so the iteration early stopping ends on is reported too.
        self.order = 25

    def __call__(self, env: CallbackEnv) -> None:
        """Record this iteration's metrics, report the tracked one, raise TrialPruned if due."""
        reported: tuple[str, float, bool] | None = None
        for item in env.evaluation_result_list:
            data_name, metric_name, value, higher_is_better = item[:4]
            self.history.setdefault(f"{data_name}_{metric_name}", []).append(float(value))
            if data_name == self.valid_name and (metric_name == self.metric or reported is None):
                reported = (metric_name, float(value), bool(higher_is_better))
        if reported is None:
            raise ValueError(f"no '{self.valid_name}' metric to report: pass valid_sets")
        name, value, higher_is_better = reported
        self.metric, self.step, self.value = name, env.iteration + 1, value
        maximize = self.direction == "maximize"
        self.trial.report(value if higher_is_better == maximize else -value, self.step)
        if self.trial.should_prune():
            self.booster = env.model
            raise optuna.TrialPruned(
                f"pruned at iteration {self.step} ({self.valid_name}_{name} = {value:.6g})"
            )


# --- storage -----------------------------------------------------------------------------------


def _pg_schema_of(options: str) -> str | None:
    match = _SEARCH_PATH.search(options)
    if match is None:
        return None
    return match.group(1).split(",")[0].strip().strip('"') or None


def study_schema(metadata_url: str) -> str | None:
    """PostgreSQL: the schema holding Optuna's tables (None for SQLite).

    `<schema>_optuna` for a metadata store whose URL sets `search_path` to `<schema>`, else
    `optuna` (beside `public`).

    Raises:
        TuningConfigError: the loopline schema's name is not a plain identifier.
    """
    url = make_url(metadata_url)
    if url.get_backend_name() != "postgresql":
        return None
    options = url.query.get("options", "")
    options = " ".join(options) if isinstance(options, tuple) else options
    base = _pg_schema_of(options)
    if base is None or base == "public":
        return "optuna"
    if not _SCHEMA_NAME.match(base):
        raise TuningConfigError(
            f"database_url: schema '{base}' must be a plain identifier (letters, digits, _) "
            "for the study's sibling schema"
        )
    return f"{base}_optuna"


def study_storage_url(metadata_url: str) -> str:
    """The SQLAlchemy URL of the study storage that goes with a metadata-store URL.

    SQLite `<dir>/<name>.db` -> `<dir>/<name>.optuna.db`; PostgreSQL: the same server and
    database with `search_path` set to `study_schema(url)`.

    Raises:
        TuningConfigError: an in-memory SQLite store, or a backend other than SQLite and
            PostgreSQL.
    """
    url = make_url(metadata_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise TuningConfigError(
                "database_url: an in-memory SQLite store cannot hold a study shared by workers"
            )
        path = Path(database)
        study_path = path.with_name(f"{path.stem}.optuna{path.suffix or '.db'}")
        return url.set(database=str(study_path)).render_as_string(hide_password=False)
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        schema = study_schema(metadata_url)
        options = url.query.get("options", "")
        options = " ".join(options) if isinstance(options, tuple) else options
        search_path = f"-csearch_path={schema}"
        if _SEARCH_PATH.search(options):
            options = _SEARCH_PATH.sub(search_path, options, count=1)
        else:
            options = f"{options} {search_path}".strip()
        return url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    raise TuningConfigError(
        f"database_url: studies are stored on SQLite or PostgreSQL, not '{backend}'"
    )


def display_url(url: str) -> str:
    """A storage URL with its password masked, for run records."""
    return make_url(url).render_as_string(hide_password=True)


def _ensure_namespace(storage_url: URL, metadata_url: str) -> None:
    if storage_url.get_backend_name() == "sqlite":
        path = Path(storage_url.database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL once per file (it persists): the app can read a study while workers write it.
        with sqlite3.connect(path, timeout=30) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
        return
    schema = study_schema(metadata_url)
    engine = create_engine(storage_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    except (IntegrityError, ProgrammingError):
        pass  # created by a concurrent caller between the check and the insert
    finally:
        engine.dispose()


def open_storage(metadata_url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage beside the metadata store (see the module docstring).

    Args:
        metadata_url: loopline's metadata-store URL (`Settings.metadata_url`).
        create: Create the schema (or file) and Optuna's tables if missing; workers opening a
            study that exists pass False.

    Raises:
        TuningConfigError: the URL cannot hold a study.
    """
    url = make_url(study_storage_url(metadata_url))
    if create:
        _ensure_namespace(url, metadata_url)
    kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 30}}
        if url.get_backend_name() == "sqlite"
        else {"pool_pre_ping": True}
    )
    return optuna.storages.RDBStorage(
        url.render_as_string(hide_password=False),
        engine_kwargs=kwargs,
        skip_table_creation=not create,
    )


def close_storage(storage: optuna.storages.RDBStorage) -> None:
    """Release a storage's sessions and pooled connections."""
    storage.remove_session()
    storage.engine.dispose()


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials of a study completed, were pruned, failed, or are still running."""
    states = optuna.trial.TrialState
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    names = {
        states.COMPLETE: "complete",
        states.PRUNED: "pruned",
        states.FAIL: "failed",
        states.RUNNING: "running",
        states.WAITING: "running",
    }
    for trial in study.get_trials(deepcopy=False):
        counts[names[trial.state]] += 1
    return counts


def finished_trials(study: optuna.Study) -> int:
    """Trials of a study that ended (completed, pruned or failed)."""
    states = optuna.trial.TrialState
    done = (states.COMPLETE, states.PRUNED, states.FAIL)
    return len(study.get_trials(deepcopy=False, states=done))

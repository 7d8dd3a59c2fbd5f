"""Tuning: the Optuna study in the metadata server, trials as child runs, pruning, the budget,
the best params feeding the final model, and the study storage beside loopline's migrations."""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pytest
from alembic.util import CommandError
from sqlalchemy import create_engine, inspect, select, text

from loopline.settings import PROJECT_ROOT, Settings
from loopline.spec import ParamRange, load_spec
from loopline.stages import open_context, run_features, run_ingest, write_demo_data
from loopline.stages.common import StageError
from loopline.stages.train import build_inputs
from loopline.stages.tune import run_study, run_tune
from loopline.store import Store
from loopline.store.migrate import current_revisions, head_revisions
from loopline.store.tables import ModelVersion, Run, RunMetric
from loopline.training import tuning
from loopline.training.prepare import Prepared, prepare

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Small and quick: a few dozen rounds per trial on the demo's ~2,800 labelled events.
BASE = load_spec("fraud")
SPEC = BASE.model_copy(
    update={
        "training": BASE.training.model_copy(
            update={"num_boost_round": 40, "early_stopping_rounds": 10}
        )
    }
)
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class PruneOddTrials(optuna.pruners.BasePruner):
    """Prunes every odd-numbered trial at its first report: a pruning the test can predict."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


@dataclass
class Tuned:
    settings: Settings
    result: dict[str, Any]
    progress: list[tuple[str, int, int]]

    def runs(self) -> list[Run]:
        store = Store.open(self.settings)
        with store.reader() as session:
            rows = list(session.scalars(select(Run)))
            session.expunge_all()
        store.dispose()
        return rows

    def study(self) -> optuna.Study:
        storage = tuning.study_storage_url(self.settings.metadata_url)
        return optuna.load_study(study_name=self.result["study_name"], storage=storage)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A data home with the demo ingested and its features built (no model yet)."""
    home = tmp_path_factory.mktemp("tune") / "home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOPLINE_HOME", str(home))
        settings = Settings(home=home)
        write_demo_data(settings, days=62, customers=300, seed=11)
        run_ingest(settings, SPEC)
        run_features(settings, SPEC)
        yield settings


@pytest.fixture(scope="module")
def prepared(home: Settings) -> Prepared:
    ctx = open_context(home, SPEC)
    inputs = build_inputs(ctx)
    ctx.store.dispose()
    return prepare(inputs.training_set, SPEC)


@pytest.fixture(scope="module")
def tuned(home: Settings) -> Tuned:
    calls: list[tuple[str, int, int]] = []
    result = run_tune(
        home, SPEC, n_trials=4, parallelism=2, pruner=PruneOddTrials(),
        progress=lambda *call: calls.append(call),
    )  # fmt: skip
    return Tuned(home, result, calls)


# --- the study ---------------------------------------------------------------------------------


def test_the_study_is_stored_beside_the_metadata_and_holds_every_trial(tuned: Tuned) -> None:
    study = tuned.study()

    assert tuned.result["study_name"] == f"fraud-{tuned.result['run_id']}"
    assert study.user_attrs["loopline_run_id"] == tuned.result["run_id"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # average_precision
    states = {t.number: t.state for t in study.trials}
    assert sorted(states) == [0, 1, 2, 3]
    assert states[1] == states[3] == optuna.trial.TrialState.PRUNED
    assert states[0] == states[2] == optuna.trial.TrialState.COMPLETE
    assert tuned.result["trials"] == {"complete": 2, "pruned": 2, "failed": 0, "running": 0}
    assert sum(w["trials"] for w in tuned.result["workers"]) == 4
    assert len(tuned.result["workers"]) == 2
    assert tuned.progress[-1] == ("final", 1, 1)
    assert ("trials", 4, 4) in tuned.progress


def test_every_trial_is_a_child_run_with_its_state_params_and_curves(tuned: Tuned) -> None:
    runs = tuned.runs()
    study_run = next(r for r in runs if r.id == tuned.result["run_id"])
    children = [r for r in runs if r.parent_run_id == study_run.id]
    trials = {int(r.tags["trial"]): r for r in children if r.kind == "tune-trial"}
    optuna_trials = {t.number: t for t in tuned.study().trials}

    assert study_run.kind == "tune" and study_run.status == "succeeded"
    assert sorted(trials) == [0, 1, 2, 3]
    assert [r.kind for r in children if r.kind != "tune-trial"] == ["train"]
    store = Store.open(tuned.settings)
    for number, run in trials.items():
        trial = optuna_trials[number]
        state = "complete" if trial.state == optuna.trial.TrialState.COMPLETE else "pruned"
        assert run.status == "succeeded"
        assert run.tags["trial_state"] == run.summary["trial_state"] == state
        assert trial.user_attrs["run_id"] == run.id
        assert run.params["overrides"] == trial.params
        # What LightGBM used, read back from the model file (6 significant digits there).
        used = run.params["lightgbm"]["learning_rate"]
        assert used == pytest.approx(trial.params["learning_rate"], rel=1e-5)
        with store.reader() as session:
            metrics = session.execute(
                select(RunMetric.key, RunMetric.step, RunMetric.is_final).where(
                    RunMetric.run_id == run.id
                )
            ).all()
        curve = sorted(step for key, step, final in metrics if key == "valid_auc" and not final)
        finals = {key for key, _, final in metrics if final}
        assert {"average_precision", "roc_auc", "log_loss"} <= finals
        if state == "complete":
            assert run.summary["value"] == pytest.approx(trial.value)
            assert curve == list(range(1, len(curve) + 1)) and len(curve) > 1
        else:
            # Pruned at its first report: one point of curve, metrics as of that iteration.
            assert run.summary["pruned_at_iteration"] == 1 and curve == [1]
            assert trial.intermediate_values == {1: pytest.approx(run.summary["pruning_value"])}
    with store.reader() as session:
        versions = session.scalars(select(ModelVersion.run_id)).all()
    store.dispose()
    assert not set(versions) & {r.id for r in trials.values()}  # trials register nothing


def test_the_best_params_train_and_register_the_final_model(tuned: Tuned) -> None:
    study = tuned.study()
    runs = {r.id: r for r in tuned.runs()}
    final = runs[tuned.result["final_run_id"]]
    study_run = runs[tuned.result["run_id"]]

    assert tuned.result["best_params"] == study.best_params
    assert tuned.result["best_value"] == study.best_value
    assert tuned.result["best_trial"] == study.best_trial.number
    assert final.kind == "train" and final.parent_run_id == study_run.id
    assert final.params["overrides"] == study.best_params
    assert final.params["lightgbm"]["num_leaves"] == study.best_params["num_leaves"]
    assert final.summary["model_version"] == tuned.result["model_version"]
    for key in ("study_name", "storage", "best_params", "best_value", "trials", "budget"):
        assert study_run.summary[key] == tuned.result[key], key
    assert study_run.summary["budget"] == {"n_trials": 4, "timeout_minutes": 30.0, "parallelism": 2}
    assert study_run.summary["model_version"] == tuned.result["model_version"]
    store = Store.open(tuned.settings)
    with store.reader() as session:
        version = session.scalars(select(ModelVersion).where(ModelVersion.run_id == final.id)).one()
    store.dispose()
    assert version.version == tuned.result["model_version"]


def test_migrations_and_the_study_storage_coexist_on_sqlite(tuned: Tuned) -> None:
    settings = tuned.settings
    database = Path(settings.metadata_url.removeprefix("sqlite:///"))
    study_file = database.with_name("loopline.optuna.db")

    store = Store.open(settings)  # upgrades if needed: must find the schema at head
    assert current_revisions(store.engine) == head_revisions()
    names = set(inspect(store.engine).get_table_names())
    store.dispose()
    assert "runs" in names and not names & {"studies", "trials", "version_info"}
    with sqlite3.connect(study_file) as connection:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    connection.close()
    storage = tuning.open_storage(settings.metadata_url)  # Optuna's own schema check passes
    assert revision == [(storage.get_head_version(),)]
    tuning.close_storage(storage)


def test_one_alembic_version_table_cannot_serve_both(tmp_path: Path) -> None:
    # Why the study gets its own namespace: Optuna reads loopline's revision as its own.
    settings = Settings(home=tmp_path / "home")
    Store.open(settings).dispose()
    # (One loopline head: "not compatible"; several branch heads: Alembic refuses to pick one.)
    with pytest.raises((RuntimeError, CommandError), match=r"no longer compatible|than one head"):
        optuna.storages.RDBStorage(settings.metadata_url)


# --- pruning -----------------------------------------------------------------------------------


def _blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=600) > 0).astype(int)
    return x, y


def test_the_median_pruner_stops_a_hopeless_trial_through_the_callback() -> None:
    (x, y), (xv, yv) = _blobs(1), _blobs(2)
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )

    def objective(trial: optuna.Trial) -> float:
        # Trial 0 learns; trial 1 cannot split (min_data_in_leaf > rows): AUC stays 0.5.
        params = {"objective": "binary", "metric": ["auc"], "verbosity": -1, "num_threads": 1}
        params["min_data_in_leaf"] = 20 if trial.number == 0 else 10_000
        callback = tuning.PruningCallback(trial, "auc", "maximize")
        train = lgb.Dataset(x, y)
        lgb.train(
            params, train, num_boost_round=15, valid_sets=[lgb.Dataset(xv, yv, reference=train)],
            valid_names=["valid"], callbacks=[callback],
        )  # fmt: skip
        return callback.value or 0.0

    study.optimize(objective, n_trials=2)

    good, hopeless = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert len(good.intermediate_values) == 15 and good.value > 0.8
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    assert list(hopeless.intermediate_values) == [1]


def test_the_callback_reports_in_the_study_direction() -> None:
    # r2 is maximised but tracked through l2 (lower is better): reported negated.
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    callback = tuning.PruningCallback(trial, "l2", "maximize")
    x, y = _blobs(3)
    lgb.train(
        {"objective": "regression", "metric": ["l2", "l1"], "verbosity": -1},
        lgb.Dataset(x, y.astype(float)), num_boost_round=3,
        valid_sets=[lgb.Dataset(x, y.astype(float))], valid_names=["valid"], callbacks=[callback],
    )  # fmt: skip
    reported = study.trials[0].intermediate_values
    assert list(reported) == [1, 2, 3]
    assert reported[3] == pytest.approx(-callback.history["valid_l2"][-1])
    assert len(callback.history["valid_l1"]) == 3
    assert tuning.pruning_metric("regression", "r2") == "l2"
    assert tuning.study_direction("r2") == "maximize"
    assert tuning.study_direction("rmse") == tuning.study_direction("mape") == "minimize"


# --- budget and search space -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_trials": 0}, "n_trials"),
        ({"n_trials": 2.5}, "n_trials"),
        ({"n_trials": True}, "n_trials"),
        ({"parallelism": 0}, "parallelism"),
        ({"parallelism": 65}, "parallelism"),
        ({"timeout_minutes": 0}, "timeout_minutes"),
        ({"timeout_minutes": -1.0}, "timeout_minutes"),
        ({"timeout_minutes": float("nan")}, "timeout_minutes"),
        ({"timeout_minutes": "ten"}, "timeout_minutes"),
    ],
)
def test_a_bad_budget_names_its_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(tuning.TuningConfigError, match=rf"^{field}: must"):
        tuning.resolve_budget(SPEC.tuning, **overrides)


def test_the_budget_splits_exactly_across_workers() -> None:
    assert tuning.resolve_budget(SPEC.tuning).as_dict() == {
        "n_trials": 20, "timeout_minutes": 30.0, "parallelism": 2,
    }  # fmt: skip
    budget = tuning.resolve_budget(SPEC.tuning, n_trials=7, parallelism=3, timeout_minutes=1)
    assert budget.quotas() == [3, 2, 2] and budget.timeout_minutes == 1.0
    assert tuning.Budget(2, None, 8).quotas() == [1, 1]  # no idle workers


def _with_space(space: dict[str, ParamRange]) -> Any:
    return SPEC.model_copy(
        update={"tuning": SPEC.tuning.model_copy(update={"search_space": space})}
    )


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "tuning.search_space: empty"),
        ({"seed": ParamRange(type="int", low=1, high=9)}, "tuning.search_space.seed: "),
        ({"num_threads": ParamRange(type="int", low=1, high=4)}, "search_space.num_threads: "),
        ({"metric": ParamRange(type="categorical", choices=["auc"])}, "search_space.metric: "),
        ({"num_leaves": ParamRange(type="int", low=8.2, high=8.9)}, "no whole number"),
    ],
)
def test_a_bad_search_space_is_refused_before_anything_is_written(
    home: Settings, space: dict[str, ParamRange], message: str
) -> None:
    before = len(Tuned(home, {}, []).runs())
    with pytest.raises(tuning.TuningConfigError, match=message):
        run_tune(home, _with_space(space), n_trials=2)
    assert len(Tuned(home, {}, []).runs()) == before


def test_a_bad_budget_override_writes_nothing(home: Settings) -> None:
    before = len(Tuned(home, {}, []).runs())
    with pytest.raises(tuning.TuningConfigError, match=r"^parallelism: must be between 1 and 64"):
        run_tune(home, SPEC, parallelism=100)
    assert len(Tuned(home, {}, []).runs()) == before


def test_a_budget_in_minutes_stops_starting_trials(home: Settings, prepared: Prepared) -> None:
    ctx = open_context(home, SPEC)
    budget = tuning.resolve_budget(SPEC.tuning, n_trials=1000, timeout_minutes=0.04, parallelism=2)
    began = time.monotonic()
    with ctx.run("tune", flow_run_id=None) as study_run:
        outcome = run_study(ctx, prepared, budget, study_run=study_run)
    ctx.store.dispose()

    finished = sum(outcome["trials"].values())
    assert outcome["stopped_by"] == "timeout" and 2 <= finished < 1000
    assert time.monotonic() - began < 0.04 * 60 + 10  # running trials finish, no new ones


def test_trials_that_all_fail_fail_the_study_and_register_nothing(home: Settings) -> None:
    spec = _with_space({"num_leaves": ParamRange(type="categorical", choices=[1])})
    before = {r.id for r in Tuned(home, {}, []).runs()}

    with pytest.raises(StageError, match=r"no trial completed \(0 pruned, 2 failed\)"):
        run_tune(home, spec, n_trials=2, parallelism=1)

    new = [r for r in Tuned(home, {}, []).runs() if r.id not in before]
    study_run = next(r for r in new if r.kind == "tune")
    trials = [r for r in new if r.kind == "tune-trial"]
    assert study_run.status == "failed" and "no trial completed" in study_run.error
    assert len(trials) == 2 and len(new) == 3  # no final train run
    for run in trials:
        assert run.parent_run_id == study_run.id and run.status == "failed"
        assert run.tags["trial_state"] == "failed" and "num_leaves" in run.error


# --- storage URLs ------------------------------------------------------------------------------


def test_study_storage_urls_sit_beside_the_metadata_store() -> None:
    url = tuning.study_storage_url
    assert url("sqlite:////data/home/loopline.db") == "sqlite:////data/home/loopline.optuna.db"
    assert url("postgresql://u:pw@db:5432/meta") == (
        "postgresql+psycopg://u:pw@db:5432/meta?options=-csearch_path%3Doptuna"
    )
    assert url("postgresql+psycopg://db/meta?options=-csearch_path%3Dml%20-cwork_mem%3D64MB") == (
        "postgresql+psycopg://db/meta?options=-csearch_path%3Dml_optuna+-cwork_mem%3D64MB"
    )
    assert tuning.display_url(url("postgresql://u:pw@db/meta")).startswith(
        "postgresql+psycopg://u:***@"
    )
    for bad, field in [
        ("sqlite://", "database_url: an in-memory"),
        ("sqlite:///:memory:", "database_url: an in-memory"),
        ("mysql://db/meta", "database_url: studies are stored on SQLite or PostgreSQL"),
        ("postgresql://db/meta?options=-csearch_path%3D%22Odd-Name%22", "must be a plain"),
    ]:
        with pytest.raises(tuning.TuningConfigError, match=field):
            url(bad)


@pytest.mark.scale
def test_the_study_and_its_trial_runs_on_postgresql(
    tmp_path: Path, pg_schema: str, prepared: Prepared
) -> None:
    settings = Settings(
        home=tmp_path / "home", database_url=f"{PG_URL}?options=-csearch_path%3D{pg_schema}"
    )
    optuna_schema = f"{pg_schema}_optuna"
    try:
        ctx = open_context(settings, SPEC)
        budget = tuning.resolve_budget(SPEC.tuning, n_trials=3, parallelism=2)
        with ctx.run("tune", flow_run_id=None) as study_run:
            outcome = run_study(ctx, prepared, budget, study_run=study_run)
        ctx.store.dispose()

        storage = tuning.open_storage(settings.metadata_url, create=False)
        head = storage.get_head_version()
        study = optuna.load_study(study_name=outcome["study_name"], storage=storage)
        assert len(study.trials) == 3 and outcome["trials"]["complete"] >= 1
        assert outcome["storage"].endswith(f"search_path%3D{optuna_schema}")
        store = Store.open(settings)  # loopline's migration check still finds its head
        assert current_revisions(store.engine) == head_revisions()
        with store.reader() as session:
            children = session.scalars(
                select(Run).where(Run.parent_run_id == study_run.run_id)
            ).all()
        store.dispose()
        assert sorted(int(r.tags["trial"]) for r in children) == [0, 1, 2]
        assert {r.kind for r in children} == {"tune-trial"}
        engine = create_engine(PG_URL)
        with engine.connect() as connection:
            tables = dict(
                connection.execute(
                    text(
                        "SELECT table_name, table_schema FROM information_schema.tables "
                        "WHERE table_schema IN (:a, :b) AND table_name IN "
                        "('runs', 'trials', 'studies')"
                    ),
                    {"a": pg_schema, "b": optuna_schema},
                ).all()
            )
            versions = {
                schema: connection.execute(
                    text(f'SELECT version_num FROM "{schema}".alembic_version')
                ).scalars().all()
                for schema in (pg_schema, optuna_schema)
            }  # fmt: skip
        engine.dispose()
        assert tables == {"runs": pg_schema, "trials": optuna_schema, "studies": optuna_schema}
        assert set(versions[pg_schema]) == head_revisions()
        assert versions[optuna_schema] == [head]
        tuning.close_storage(storage)
    finally:
        engine = create_engine(PG_URL)
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{optuna_schema}" CASCADE'))
        engine.dispose()


# --- CLI and flow ------------------------------------------------------------------------------


def test_the_cli_refuses_a_bad_budget_with_the_field_name(home: Settings, run: Any) -> None:
    code, _, err = run(home.home, "tune", "--trials", "0")
    assert code == 2 and "n_trials: must be >= 1, got 0" in err
    code, _, err = run(home.home, "tune", "--minutes", "-5")
    assert code == 2 and "timeout_minutes: must be a finite number > 0" in err


def test_the_cli_tunes_and_prints_the_summary(home: Settings, run: Any) -> None:
    code, out, _ = run(home.home, "tune", "--trials", "2", "--parallelism", "2", "--minutes", "5")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["budget"] == {"n_trials": 2, "timeout_minutes": 5.0, "parallelism": 2}
    assert sum(summary["trials"].values()) == 2 and summary["model_version"] >= 1
    assert summary["study_name"] == f"fraud-{summary['run_id']}"


def test_the_tune_flow_and_its_deployment_load() -> None:
    import yaml
    from prefect_dask import DaskTaskRunner

    sys.path.insert(0, str(PROJECT_ROOT / "flows"))
    try:
        flow_module = importlib.import_module("tune")
    finally:
        sys.path.remove(str(PROJECT_ROOT / "flows"))
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(flow_module.tune_flow.fn)
    assert {"use_case", "n_trials", "timeout_minutes", "parallelism", "task_runner"} <= set(
        schema.properties
    )
    assert flow_module.tune_flow.name == "tune"
    assert isinstance(flow_module.make_task_runner("dask", 2), DaskTaskRunner)
    with pytest.raises(ValueError, match=r"^task_runner: must be one of"):
        flow_module.check_task_runner("processes")
    with pytest.raises(ValueError, match=r"^dask_address: "):
        flow_module.check_task_runner("threads", "tcp://127.0.0.1:8786")
    deployments = yaml.safe_load((PROJECT_ROOT / "flows" / "prefect.yaml").read_text())
    tune = [d for d in deployments["deployments"] if d["entrypoint"] == "flows/tune.py:tune_flow"]
    assert len(tune) == 1 and tune[0]["name"] == "loopline"
    assert set(tune[0]["parameters"]) <= set(schema.properties)
    assert {"use_case", "n_trials", "timeout_minutes", "parallelism"} <= set(tune[0]["parameters"])

"""The train stage's run record, its evaluation report, and `loopline reproduce`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from loopline.features import transform
from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.stages import run_features, run_ingest, run_train, write_demo_data
from loopline.stages.common import StageError
from loopline.stages.reproduce import run_reproduce
from loopline.store.db import Store
from loopline.store.tables import Run, RunArtifact
from loopline.tracking import final_metrics
from loopline.training.model import load_booster

SPEC = load_spec("fraud")


@dataclass
class Trained:
    settings: Settings
    result: dict[str, Any]

    def artifacts(self) -> dict[str, str]:
        store = Store.open(self.settings)
        with store.reader() as session:
            rows = session.query(RunArtifact).filter_by(run_id=self.result["run_id"]).all()
            found = {r.name: r.artifact_id for r in rows}
        store.dispose()
        return found

    def blob(self, name: str) -> bytes:
        return ArtifactStore(self.settings.artifacts_dir).get_bytes(self.artifacts()[name])

    def run(self) -> Run:
        store = Store.open(self.settings)
        with store.reader() as session:
            row = session.get_one(Run, self.result["run_id"])
            session.expunge(row)
        store.dispose()
        return row


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("train-stage")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOPLINE_HOME", str(home))
        settings = Settings(home=home)
        write_demo_data(settings, days=62, customers=300, seed=11)
        run_ingest(settings, SPEC)
        run_features(settings, SPEC)
        yield Trained(settings, run_train(settings, SPEC))


def test_the_run_records_what_lightgbm_used_and_how_the_data_was_split(trained: Trained) -> None:
    run = trained.run()
    params = run.params
    assert params["lightgbm"]["learning_rate"] == SPEC.training.params["learning_rate"]
    assert params["lightgbm"]["max_bin"] == 255  # a LightGBM default, recorded too
    assert params["lightgbm"]["deterministic"] == 1 and params["seed"] == SPEC.training.seed
    split = run.summary["split"]
    assert split["train"]["end"] <= split["valid"]["start"]
    assert (
        split["train"]["rows"] + split["valid"]["rows"]
        == run.summary["lineage"]["training_set"]["rows"]
    )
    assert run.lock_hash and run.environment["packages"]["lightgbm"]
    assert run.environment["hardware"]["cpu_logical_cores"] >= 1
    assert run.duration_s and run.duration_s > 0 and run.peak_memory_mb


def test_metrics_match_scikit_learn_on_the_holdout(trained: Trained) -> None:
    run = trained.run()
    frame = pl.read_parquet(trained.blob("training_set"))
    booster = load_booster(trained.blob("model"))
    from loopline.training.prepare import prepare

    prepared = prepare(frame, SPEC)
    scores = booster.predict(prepared.x_valid)
    metrics = final_metrics(Store.open(trained.settings), run.id)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(prepared.y_valid, scores))
    assert metrics["average_precision"] == pytest.approx(
        average_precision_score(prepared.y_valid, scores)
    )


def test_importance_shap_and_the_evaluation_report_are_stored(trained: Trained) -> None:
    importance = pl.read_parquet(trained.blob("feature_importance"))
    assert set(importance.columns) >= {"feature", "gain", "split"}
    assert importance.height == len(transform.feature_names(SPEC))
    shap = json.loads(trained.blob("shap_summary"))
    assert shap["rows"] > 0 and len(shap["features"]) == importance.height
    report = json.loads(trained.blob("evaluation_report"))
    segments = {s["segment"] for s in report["slices"]}
    assert segments == {"channel", "amount_band"}
    assert {f["attribute"] for f in report["fairness"]} == {"country"}
    threshold = report["extras"]["threshold"]
    assert 0 < threshold["threshold"] < 1
    summary = trained.run().summary
    assert summary["evaluation"]["threshold"] == threshold["threshold"]
    worst = summary["evaluation"]["fairness"]["country"]
    assert 0 <= worst["selection_rate_ratio"] <= 1
    assert 0 <= summary["evaluation"]["expected_calibration_error"] <= 1
    assert summary["top_features"][0]["feature"] == importance.row(0, named=True)["feature"]


def test_evaluate_scores_a_version_on_the_newest_labels(trained: Trained) -> None:
    # Runs before the reproduce tests ingest the live day (file order): the data is the run's.
    from datetime import timedelta

    from loopline.stages.evaluate import run_evaluate

    result = run_evaluate(trained.settings, SPEC, ref=str(trained.result["model_version"]), days=2)
    assert result["overlap_rows"] == 0  # two days inside the holdout: never trained on
    frame = pl.read_parquet(trained.blob("training_set"))
    newest = frame.get_column("event_timestamp").max()
    window = frame.filter(pl.col("event_timestamp") > newest - timedelta(days=2))
    assert result["window"]["rows"] == window.height
    from loopline.training.prepare import labels_for_task

    scores = load_booster(trained.blob("model")).predict(
        transform.to_numpy(transform.model_inputs(window, SPEC))
    )
    y = labels_for_task(window.get_column("is_fraud"), SPEC)
    assert result["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    wide = run_evaluate(trained.settings, SPEC, ref="latest", days=30)
    assert wide["overlap_rows"] > 0  # a window reaching into the training side is flagged


def test_evaluate_refuses_bad_input(
    trained: Trained, run: Callable[..., tuple[int, str, str]]
) -> None:
    from loopline.stages.evaluate import run_evaluate

    with pytest.raises(StageError, match="days: must be an integer"):
        run_evaluate(trained.settings, SPEC, ref="1", days=0)
    code, _, err = run(trained.settings.home, "evaluate", "nosuchalias")
    assert code == 2 and "nosuchalias" in err


def test_a_train_run_reproduces_to_the_same_model_hash(trained: Trained) -> None:
    result = run_reproduce(trained.settings, trained.result["run_id"])
    assert result["training_set_matches"], result
    assert result["reproduced"], result["differences"]
    assert result["model"] == result["recorded_model"]


def test_reproduce_reads_the_recorded_versions_and_reports_changed_data(
    trained: Trained,
) -> None:
    # New events arrive (the demo's live day): a new events version, newer than the run's.
    live = trained.settings.raw_dir / "live" / "transactions.csv"
    run_ingest(trained.settings, SPEC, paths={SPEC.events.table: [live]})
    again = run_reproduce(trained.settings, trained.result["run_id"])
    assert again["reproduced"], again["differences"]  # time travel: the recorded versions

    # The record pointed at the newer events: another training set, another model, and the
    # report says the data is what differs.
    store = Store.open(trained.settings)
    with store.session() as session:
        row = session.get_one(Run, trained.result["run_id"])
        original = dict(row.params)
        row.params = {**original, "events_version": original["events_version"] + 1}
    try:
        result = run_reproduce(trained.settings, trained.result["run_id"])
    finally:
        with store.session() as session:
            session.get_one(Run, trained.result["run_id"]).params = original
        store.dispose()
    assert not result["training_set_matches"]
    assert not result["reproduced"]
    assert set(result["differences"]["data"]["training_set_hash"]) == {"recorded", "now"}


@pytest.mark.parametrize(
    ("run_id", "message"),
    [("nope", "no run 'nope'")],
)
def test_reproduce_refuses_unknown_runs(trained: Trained, run_id: str, message: str) -> None:
    with pytest.raises(StageError, match=message):
        run_reproduce(trained.settings, run_id)


def test_reproduce_refuses_a_run_that_is_not_a_training(trained: Trained) -> None:
    store = Store.open(trained.settings)
    with store.reader() as session:
        ingest = session.query(Run).filter_by(kind="ingest").first()
        assert ingest is not None
        ingest_id = ingest.id
    store.dispose()
    with pytest.raises(StageError, match="not a train run"):
        run_reproduce(trained.settings, ingest_id)


def test_the_cli_exits_0_on_a_reproduced_run(
    trained: Trained, run: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    code, out, err = run(trained.settings.home, "reproduce", trained.result["run_id"])
    assert code == 0, err
    assert '"reproduced": true' in out
    code, _, err = run(trained.settings.home, "reproduce", "missing-run")
    assert code == 2 and "no run 'missing-run'" in err

"""Batch scoring: the score stage, its lineage, its bad inputs, the CLI and the flow."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml

from loopline.features import feast_ops, transform
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.package import load_version
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.stages import run_features, run_ingest, run_promote, run_train, write_demo_data
from loopline.stages.common import StageError
from loopline.stages.score import LINEAGE_COLUMNS, ScoreResult, run_score
from loopline.store.db import Store
from loopline.store.tables import DatasetVersion, Run

SPEC = load_spec("fraud")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Home:
    settings: Settings
    version: int
    first: ScoreResult

    def store(self) -> Store:
        return Store.open(self.settings)

    def events(self) -> pl.DataFrame:
        store = self.store()
        with store.reader() as session:
            row = (
                session.query(DatasetVersion)
                .filter_by(dataset=SPEC.events.table)
                .order_by(DatasetVersion.table_version.desc())
                .first()
            )
            uri, version = row.uri, row.table_version
        store.dispose()
        return tables.read(uri, version)

    def state(self) -> tuple[int | None, int, int]:
        """(newest version of the scores table, runs, dataset versions)."""
        store = self.store()
        with store.reader() as session:
            runs = session.query(Run).count()
            versions = session.query(DatasetVersion).count()
        store.dispose()
        return tables.current_version(self.first.uri), runs, versions


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("score-stage")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOPLINE_HOME", str(root))
        settings = Settings(home=root)
        write_demo_data(settings, days=62, customers=300, seed=11)
        run_ingest(settings, SPEC)
        run_features(settings, SPEC)
        version = run_train(settings, SPEC)["model_version"]
        assert run_promote(settings, SPEC, model_version=version)["promoted"]
        yield Home(settings, version, run_score(settings, SPEC))


def _scores(result: ScoreResult) -> pl.DataFrame:
    return tables.read(result.uri, result.table_version).filter(
        pl.col("score_run_id") == result.run_id
    )


def test_batch_scores_equal_each_row_scored_alone(home: Home) -> None:
    events = home.events()
    scores = _scores(home.first)
    assert scores.height == events.height == home.first.rows
    assert scores[SPEC.events.id].sort().to_list() == events[SPEC.events.id].sort().to_list()
    store = Store.open(home.settings)
    with store.reader() as session:
        version = registry.get_version(session, SPEC.model_name, home.version)
        session.expunge(version)
    booster = load_version(store, ArtifactStore(home.settings.artifacts_dir), version).booster
    store.dispose()
    feast = feast_ops.open_store(home.settings)
    picked = events.sample(8, seed=3)
    for row in picked.iter_slices(1):
        alone = feast_ops.training_frame(feast, row, version.feature_service)
        x = transform.to_numpy(transform.model_inputs(alone, SPEC, version.feature_service))
        expected = float(booster.predict(x)[0])
        key = row[SPEC.events.id].item()
        got = scores.filter(pl.col(SPEC.events.id) == key)["score"].item()
        assert got == expected, key  # identical floats, not approximately equal


def test_the_output_carries_its_lineage(home: Home) -> None:
    result = home.first
    scores = _scores(result)
    assert scores.columns == [
        "transaction_id", "customer_id", "merchant_id", "event_timestamp", "score",
        *LINEAGE_COLUMNS,
    ]  # fmt: skip
    store = home.store()
    with store.reader() as session:
        version = registry.get_version(session, SPEC.model_name, home.version)
        events_dv = (
            session.query(DatasetVersion)
            .filter_by(dataset=SPEC.events.table)
            .order_by(DatasetVersion.table_version.desc())
            .first()
        )
        run = session.get_one(Run, result.run_id)
        output = session.get_one(DatasetVersion, result.dataset_version_id)
        expected = {
            "model_name": {version.model_name},
            "model_version": {version.version},
            "model_version_id": {version.id},
            "feature_service": {version.feature_service},
            "input_table": {SPEC.events.table},
            "input_version": {events_dv.table_version},
            "input_sha256": {None},
            "score_run_id": {result.run_id},
        }
        assert (run.kind, run.status) == ("score", "succeeded")
        assert run.summary["table_version"] == result.table_version
        assert (output.dataset, output.table_version, output.row_count, output.run_id) == (
            result.table, result.table_version, result.rows, result.run_id,
        )  # fmt: skip
        assert output.sources["model"]["version"] == home.version
        assert set(output.sources["feature_views"]) == set(result.feature_views)
        assert output.content_hash.startswith("sha256:")
    store.dispose()
    for column, values in expected.items():
        assert set(scores[column].unique().to_list()) == values, column
    assert scores["score"].is_between(0, 1).all()
    assert result.source == {
        "table": SPEC.events.table, "version": events_dv.table_version, "rows": result.rows
    }  # fmt: skip


def test_a_file_scored_by_version_records_its_sha256_and_a_new_table_version(
    home: Home, tmp_path: Path
) -> None:
    path = tmp_path / "batch.csv"
    home.events().tail(120).write_csv(path)
    before = tables.current_version(home.first.uri)
    result = run_score(home.settings, SPEC, source=str(path), model_ref=str(home.version))
    assert result.table_version == (before or 0) + 1 and result.rows == 120
    scores = _scores(result)
    assert scores["input_sha256"].unique().to_list() == [
        hashlib.sha256(path.read_bytes()).hexdigest()
    ]
    assert scores["input_table"].null_count() == scores["input_version"].null_count() == 120
    # The same rows scored inside the table's run get the same scores.
    same = _scores(home.first).join(scores, on=SPEC.events.id, suffix="_file")
    assert same.height == 120 and (same["score"] == same["score_file"]).all()
    # Earlier versions are untouched; the whole table now holds both runs.
    assert tables.read(result.uri, before).height == tables.read(result.uri).height - 120
    store = home.store()
    with store.reader() as session:
        row = session.get_one(DatasetVersion, result.dataset_version_id)
        parent = session.get_one(DatasetVersion, row.parent_id)
        assert parent.dataset == result.table and parent.table_version < row.table_version
    store.dispose()


def test_a_past_table_version_and_another_reference_spelling(home: Home) -> None:
    result = run_score(
        home.settings, SPEC, source=f"{SPEC.events.table}@0",
        model_ref=f"{SPEC.model_name}@champion", out="fraud_scores_again",
    )  # fmt: skip
    assert result.table == "fraud_scores_again" and result.source["version"] == 0
    assert result.model_version == home.version


def test_a_run_that_fails_after_writing_leaves_the_table_as_it_was(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopline.stages import score as stage

    before = tables.read(home.first.uri)
    version_before, runs_before, _ = home.state()

    real = stage.latest_version

    def broken(session: object, dataset: str) -> object:
        if dataset == home.first.table:  # the output's parent, read in the success transaction
            raise OSError("metadata store went away")
        return real(session, dataset)

    monkeypatch.setattr(stage, "latest_version", broken)
    with pytest.raises(OSError, match="went away"):
        run_score(home.settings, SPEC, model_ref=home.version)
    monkeypatch.undo()
    # Written, then restored: the restore is a version of its own, with the old content.
    assert tables.current_version(home.first.uri) == version_before + 2
    after = tables.read(home.first.uri)
    assert after.sort("score_run_id", SPEC.events.id).equals(
        before.sort("score_run_id", SPEC.events.id)
    )
    store = home.store()
    with store.reader() as session:
        failed = session.query(Run).filter_by(kind="score").order_by(Run.started_at.desc()).first()
        assert failed.status == "failed" and "went away" in failed.error
        recorded = session.query(DatasetVersion).filter_by(run_id=failed.id).count()
    store.dispose()
    assert recorded == 0 and home.state()[1] == runs_before + 1


def _write(tmp_path: Path, home: Home, change: Callable[[pl.DataFrame], pl.DataFrame]) -> str:
    path = tmp_path / "bad.csv"
    change(home.events().head(20)).write_csv(path)
    return str(path)


BAD_INPUTS = [
    ("missing file", {"source": "nowhere/events.csv"}, "input file not found"),
    ("unknown table", {"source": "no_such_table"}, "no recorded table 'no_such_table'"),
    ("unknown table version", {"source": "transactions@99"}, "no recorded version 99"),
    ("neither file nor table", {"source": "Not A Table"}, "neither a file"),
    ("unknown model", {"model_ref": "nobody@champion"}, "model: "),
    ("unset alias", {"model_ref": "challenger"}, "alias 'challenger'"),
    ("unknown version", {"model_ref": 99}, "has no version 99"),
    ("malformed reference", {"model_ref": "a@b@c"}, "model: "),
    ("bad out name", {"out": "../elsewhere"}, "out: "),
    ("out is a curated table", {"out": "transactions"}, "out: 'transactions'"),
    ("lacks a contract column", {"drop": "amount"}, "amount"),
    ("lacks an entity key", {"drop": "merchant_id"}, "merchant_id"),
    ("wrong type", {"set": ("amount", "abc")}, "amount"),
    ("not a timestamp", {"set": ("event_timestamp", "yesterday")}, "event_timestamp"),
    ("null key", {"set": ("customer_id", "")}, "customer_id"),
]


@pytest.mark.parametrize(
    ("case", "kwargs", "message"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS]
)
def test_bad_input_is_one_line_and_writes_nothing(
    home: Home, tmp_path: Path, case: str, kwargs: dict, message: str
) -> None:
    kwargs = dict(kwargs)
    if "drop" in kwargs:
        column = kwargs.pop("drop")
        kwargs["source"] = _write(tmp_path, home, lambda f: f.drop(column))
    if "set" in kwargs:
        column, value = kwargs.pop("set")
        kwargs["source"] = _write(
            tmp_path, home, lambda f: f.with_columns(pl.lit(value).alias(column))
        )
    before = home.state()
    with pytest.raises(StageError) as raised:
        run_score(home.settings, SPEC, **kwargs)
    text = str(raised.value)
    assert message in text and "\n" not in text, text
    assert home.state() == before


def test_the_cli_scores_and_maps_bad_input_to_exit_2(
    home: Home, run: Callable[..., tuple[int, str, str]]
) -> None:
    code, out, err = run(home.settings.home, "score", "--model", str(home.version), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["model_version"] == home.version and summary["rows"] == home.first.rows
    code, out, _ = run(home.settings.home, "score", "transactions@0")
    assert code == 0 and "rows scored" in out
    before = home.state()
    code, _, err = run(home.settings.home, "score", "missing.parquet")
    assert code == 2 and err.startswith("error: source: input file not found")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(home.settings.home, "score", "--model", "fraud-detector@nope")
    assert code == 2 and "alias 'nope'" in err
    assert home.state() == before


def test_the_score_flow_loads_and_its_deployment_is_declared() -> None:
    from prefect.utilities.callables import parameter_schema

    sys.path.insert(0, str(PROJECT_ROOT / "flows"))
    try:
        module = importlib.import_module("score")
    finally:
        sys.path.remove(str(PROJECT_ROOT / "flows"))
    properties = parameter_schema(module.score_flow.fn).properties
    assert {"use_case", "source", "model", "out"} <= set(properties)
    assert module.score_flow.name == "score"
    deployments = yaml.safe_load((PROJECT_ROOT / "flows" / "prefect.yaml").read_text())
    found = [
        d for d in deployments["deployments"] if d["entrypoint"] == "flows/score.py:score_flow"
    ]
    assert len(found) == 1 and found[0]["name"] == "loopline"
    assert set(found[0]["parameters"]) == {"use_case", "source", "model", "out"}
    assert found[0]["concurrency_limit"]["limit"] == 1

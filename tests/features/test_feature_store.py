"""The Feast side of the feature layer on a temporary data home: versioned services and their
lock, training-set lineage, materialization (refusals, a failure half-way, no gap), unknown
entities online, skew and freshness."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from feature_data import START, labels_of, transactions, write_tables

from loopline.features import delta_tables
from loopline.features.feast_ops import (
    NOT_FOUND,
    SERVICES,
    EntityNotFoundError,
    ServiceDefinitionError,
    apply_repo,
    check_released,
    declared_definitions,
    definition_hash,
    freshness,
    materialize,
    online_features,
    open_store,
    read_lock,
    skew_report,
    training_set,
    watermarks,
)
from loopline.settings import Settings

END = START + timedelta(days=40)
HALF = START + timedelta(days=20)
TTL = timedelta(days=90)


@dataclass
class Home:
    settings: Settings
    store: Any
    tx: pl.DataFrame
    tables: dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    settings = Settings(home=tmp_path_factory.mktemp("store"))
    tx = transactions()
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LOOPLINE_HOME", raising=False)
        tables = write_tables(settings, tx, labels_of(tx))
        store = open_store(settings)
        apply_repo(store)
        materialize(store, end=END)
        yield Home(settings, store, tx, tables)


def test_services_match_their_layouts_and_the_released_lock(home):
    store = home.store
    for name, layout in SERVICES.items():
        service = store.get_feature_service(name)
        declared = {
            p.name: tuple(f.name for f in p.features) for p in service.feature_view_projections
        }
        assert declared == dict(layout.views)
    lock = read_lock(home.settings.feature_repo)
    assert set(lock) >= {"fraud_v1", "fraud_v2"}
    assert declared_definitions(store) == lock  # the shipped lock is current
    for views in lock.values():
        for view, digest in views.items():
            assert definition_hash(store.get_feature_view(view)) == digest  # registry == repo
    assert store.get_feature_view("customer_activity").ttl == TTL


def test_changing_a_released_view_is_refused_and_applies_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPLINE_HOME", raising=False)
    repo = tmp_path / "repo"
    shutil.copytree(Settings().feature_repo, repo)
    text = (repo / "definitions.py").read_text()
    changed = text.replace(
        'name="customer_activity",\n    entities=[customer],\n    ttl=timedelta(days=90)',
        'name="customer_activity",\n    entities=[customer],\n    ttl=timedelta(days=60)',
    )
    assert changed != text
    (repo / "definitions.py").write_text(changed)
    settings = Settings(home=tmp_path / "home", feature_repo=repo)
    store = open_store(settings)
    message = "feature view 'customer_activity' of released service 'fraud_v2' changed"
    with pytest.raises(ServiceDefinitionError, match=re.escape(message)):
        apply_repo(store)
    assert store.list_feature_views() == []


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"v2": {"a": "h1"}}, "feature service 'v1' was released"),
        ({"v1": {"a": "other"}, "v2": {"a": "h1"}}, "feature view 'a' of released service 'v1'"),
        ({"v1": {}, "v2": {"a": "h1"}}, "feature view 'a' of released service 'v1' changed"),
        ({"v1": {"a": "h1", "b": "h2"}, "v2": {}}, "was released without view(s) b"),
    ],
)
def test_check_released_names_the_service_and_view(declared, message):
    released = {"v1": {"a": "h1"}}
    with pytest.raises(ServiceDefinitionError, match=re.escape(message)):
        check_released(declared, released)
    check_released({"v1": {"a": "h1"}, "v3": {"c": "h3"}}, released)  # new services are fine


def _asof(entity: pl.DataFrame, table: pl.DataFrame, key: str) -> pl.DataFrame:
    ordered = entity.with_row_index("_i").sort("event_timestamp")
    joined = ordered.join_asof(
        table.sort("event_timestamp"), on="event_timestamp", by=key, strategy="backward",
        tolerance=TTL, check_sortedness=False,
    )  # fmt: skip
    return joined.sort("_i").drop("_i")


def test_training_set_is_point_in_time_correct_and_records_its_lineage(home):
    rng = np.random.default_rng(4)
    n = 2_000
    entity = pl.DataFrame(
        {
            "event_timestamp": [START + timedelta(minutes=int(m)) for m in
                                rng.integers(-60, 45 * 24 * 60, n)],
            "customer_id": rng.integers(1, 45, n),
            "merchant_id": rng.integers(1, 8, n),
            "is_fraud": rng.integers(0, 2, n),
        },
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    )  # fmt: skip
    result = training_set(home.store, entity, "fraud_v2")
    assert result.frame.select(entity.columns).equals(entity)
    expected = _asof(entity, home.tables["customer_activity"], "customer_id")
    expected = _asof(expected, home.tables["merchant_activity"], "merchant_id")
    features = SERVICES["fraud_v2"].features
    assert result.frame.select(features).equals(expected.select(features))
    lineage = result.lineage()
    assert {v: d["definition_hash"] for v, d in lineage.items()} == read_lock(
        home.settings.feature_repo
    )["fraud_v2"]
    for view in ("customer_activity", "merchant_activity"):
        state = delta_tables.state(str(home.settings.lake_dir / view))
        assert state is not None
        assert lineage[view]["source"] == f"{view}_source"
        assert lineage[view]["source_version"] == state.version


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"end": datetime.now(UTC) + timedelta(hours=1)}, "is in the future"),
        ({"end": datetime(2024, 2, 1)}, "end: must be timezone-aware"),
        ({"end": END, "views": ["nope"]}, "views: unknown feature view(s) nope"),
    ],
)
def test_materialize_refuses_bad_ends_and_changes_nothing(home, kwargs, message):
    before = watermarks(home.store)
    with pytest.raises(ValueError, match=re.escape(message)):
        materialize(home.store, **kwargs)
    assert watermarks(home.store) == before


def test_unknown_entities_are_named_never_silently_null(home):
    rows = [{"customer_id": 3, "merchant_id": 2}, {"customer_id": 9_999, "merchant_id": 2}]
    with pytest.raises(EntityNotFoundError, match=re.escape("row 1: customer_id=9999")) as error:
        online_features(home.store, rows, "fraud_v2")
    assert error.value.missing == [(1, "customer_activity", {"customer_id": 9_999})]
    known, unknown = online_features(home.store, rows, "fraud_v2", unknown="report")
    assert known[NOT_FOUND] == [] and known["cust_txn_count_30d"] is not None
    assert unknown[NOT_FOUND] == ["customer_id=9999"]
    assert unknown["cust_txn_count_30d"] is None and unknown["merch_txn_count_30d"] is not None
    with pytest.raises(ValueError, match="unknown: must be 'raise' or 'report'"):
        online_features(home.store, rows, "fraud_v2", unknown="ignore")  # type: ignore[arg-type]


def test_online_values_equal_feasts_own_reader_and_the_offline_latest(home):
    store = home.store
    rows = [{"customer_id": c, "merchant_id": m} for c in range(1, 41) for m in (1, 4)]
    ours = online_features(store, rows, "fraud_v2")
    theirs = store.get_online_features(
        features=store.get_feature_service("fraud_v2"), entity_rows=rows
    ).to_dict()
    for name in SERVICES["fraud_v2"].features:
        assert [row[name] for row in ours] == theirs[name], name
    report = skew_report(store, "fraud_v2", sample=100)
    assert report.mismatches == 0
    assert report.not_found_online == {"customer_activity": 0, "merchant_activity": 0}
    assert report.entities == {"customer_activity": 40, "merchant_activity": 6}


def test_a_failure_half_way_then_a_rerun_leaves_no_gap(tmp_path, monkeypatch):
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    monkeypatch.delenv("LOOPLINE_HOME", raising=False)
    settings = Settings(home=tmp_path / "home")
    tx = transactions(seed=21)
    early = tx.filter(pl.col("event_timestamp") < HALF)
    write_tables(settings, early, labels_of(early))
    store = open_store(settings)
    apply_repo(store)
    materialize(store, end=HALF)
    write_tables(settings, tx, labels_of(tx))  # 20 more days

    real = SqliteOnlineStore.online_write_batch
    calls: list[str] = []

    def crash_half_way(self, config, table, data, progress):
        calls.append(table.name)
        if table.name == "merchant_activity":
            real(self, config, table, data[: len(data) // 2], progress)
            raise RuntimeError("disk gone half-way through merchant_activity")
        return real(self, config, table, data, progress)

    monkeypatch.setattr(SqliteOnlineStore, "online_write_batch", crash_half_way)
    with pytest.raises(RuntimeError, match="half-way"):
        materialize(store, end=END)
    assert "merchant_activity" in calls
    assert watermarks(store)["merchant_activity"] == HALF  # not advanced: the write failed
    monkeypatch.setattr(SqliteOnlineStore, "online_write_batch", real)

    done = materialize(store, end=END)
    assert {d.view for d in done if not d.skipped} >= {"merchant_activity"}
    assert set(watermarks(store).values()) == {END}
    for service in ("fraud_v1", "fraud_v2"):
        report = skew_report(store, service, sample=100)
        assert report.mismatches == 0, report.as_dict()
        assert set(report.not_found_online.values()) == {0}

    # A stale value online is what the skew check is for.
    stale = home_row = store.get_online_features(
        features=["customer_activity:cust_txn_count_30d"], entity_rows=[{"customer_id": 1}]
    ).to_dict()["cust_txn_count_30d"][0]
    assert home_row is not None
    frame = (
        pl.read_delta(str(settings.lake_dir / "customer_activity"))
        .filter((pl.col("customer_id") == 1) & (pl.col("event_timestamp") <= END))
        .sort("event_timestamp")
        .tail(1)
        .with_columns(cust_txn_count_30d=pl.lit(stale + 100, pl.Int64))
    )
    store.write_to_online_store("customer_activity", frame.to_pandas())
    report = skew_report(store, "fraud_v2", sample=100)
    assert report.features["cust_txn_count_30d"]["mismatches"] == 1
    example = report.features["cust_txn_count_30d"]["examples"][0]
    assert example == {"keys": {"customer_id": 1}, "online": stale + 100, "offline": stale}


def test_freshness_reports_what_is_served_and_what_waits(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPLINE_HOME", raising=False)
    settings = Settings(home=tmp_path / "home")
    tx = transactions(seed=31)
    write_tables(settings, tx, labels_of(tx))
    delta_tables.write(
        str(settings.lake_dir / "customer_activity"), [], mode="append",
        metadata={delta_tables.WATERMARK: END.isoformat()},
    )  # fmt: skip
    store = open_store(settings)
    apply_repo(store)
    materialize(store, end=HALF, views=["customer_activity"])
    now = END + timedelta(days=1)
    rows = {row["view"]: row for row in freshness(store, now=now)}
    served = rows["customer_activity"]
    assert served["watermark"] == HALF.isoformat()
    assert served["lag_s"] == (now - HALF).total_seconds()
    assert served["source_watermark"] == END.isoformat()
    assert served["pending_s"] == (END - HALF).total_seconds()
    assert rows["merchant_activity"]["watermark"] is None  # never materialized


def test_skew_needs_a_materialized_service(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPLINE_HOME", raising=False)
    settings = Settings(home=tmp_path / "home")
    tx = transactions(seed=41, n=200)
    write_tables(settings, tx, labels_of(tx))
    store = open_store(settings)
    apply_repo(store)
    with pytest.raises(ValueError, match="view 'customer_activity' was never materialized"):
        skew_report(store, "fraud_v2")
    with pytest.raises(ValueError, match="sample: must be >= 1"):
        skew_report(store, "fraud_v2", sample=0)


def test_repo_paths_are_hashed_relative_to_the_home(home, tmp_path):
    view = home.store.get_feature_view("customer_activity")
    assert definition_hash(view) == definition_hash(view, home=home.settings.home)
    assert definition_hash(view, home=tmp_path) != definition_hash(view)
    assert Path(view.batch_source.path).is_relative_to(home.settings.home)

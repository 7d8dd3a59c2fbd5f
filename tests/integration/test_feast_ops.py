"""Feast round trip on a temporary data home: publish, apply, materialize, read back.

Point-in-time results are checked against hand-picked rows and against an independent oracle
(Polars `join_asof`, backward, with the views' 30-day ttl as tolerance).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from loopline.features import delta_tables
from loopline.features.aggregates import (
    customer_activity,
    customer_features,
    merchant_activity,
    merchant_features,
)
from loopline.features.feast_ops import (
    NOT_FOUND,
    SERVICES,
    EntityNotFoundError,
    apply_repo,
    materialize,
    online_features,
    open_store,
    publish_feature_table,
    training_frame,
)
from loopline.settings import Settings

SERVICE = "fraud_v1"
CUSTOMER_FEATURES = list(SERVICES[SERVICE].views["customer_stats"])
MERCHANT_FEATURES = list(SERVICES[SERVICE].views["merchant_stats"])
START = datetime(2024, 1, 1, tzinfo=UTC)
LAST_DAY_END = datetime(2024, 2, 10, tzinfo=UTC)  # transactions cover 1 Jan - 9 Feb
TTL = timedelta(days=30)


def _ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _transactions() -> pl.DataFrame:
    rng = np.random.default_rng(11)
    n = 1_500
    minutes = rng.integers(0, 40 * 24 * 60, n)
    random_rows = [
        (START + timedelta(minutes=int(m)), int(c), int(mid), float(a), str(ch), str(co))
        for m, c, mid, a, ch, co in zip(
            minutes,
            rng.integers(1, 40, n),
            rng.integers(1, 7, n),
            rng.gamma(2.0, 30.0, n).round(2),
            rng.choice(["chip", "online", "swipe"], n),
            rng.choice(["US", "GB", "DE"], n),
            strict=True,
        )
    ]
    hand_picked = [
        # Customer 1001: one transaction on 9 Jan, a large one on 10 Jan.
        (_ts(2024, 1, 9, 12), 1001, 1, 10.0, "chip", "US"),
        (_ts(2024, 1, 10, 8), 1001, 1, 1000.0, "online", "NG"),
        # Customer 1002: a single transaction on 2 Jan; its last snapshot ends 1 Feb.
        (_ts(2024, 1, 2, 9), 1002, 2, 42.0, "swipe", "GB"),
    ]
    frame = pl.DataFrame(
        random_rows + hand_picked,
        schema={
            "event_timestamp": pl.Datetime("us", "UTC"),
            "customer_id": pl.Int64,
            "merchant_id": pl.Int64,
            "amount": pl.Float64,
            "channel": pl.String,
            "country": pl.String,
        },
        orient="row",
    )
    return frame.with_columns(
        transaction_id=pl.format("t{}", pl.int_range(pl.len())),
        merchant_category=pl.lit("grocery"),
        hour=pl.col("event_timestamp").dt.hour().cast(pl.Int64),
    )


@dataclass
class Published:
    settings: Settings
    store: Any
    tx: pl.DataFrame
    customers: pl.DataFrame
    merchants: pl.DataFrame
    timings: dict[str, float]


def _publish(settings: Settings, tx: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """fraud_v1's daily snapshots (what this module checks) and fraud_v2's tables (declared in
    the same repo, so they must exist to be materialized)."""
    customers, merchants = customer_features(tx), merchant_features(tx)
    publish_feature_table(customers, settings.features_dir / "customer_stats.parquet")
    publish_feature_table(merchants, settings.features_dir / "merchant_stats.parquet")
    labels = tx.select(
        "transaction_id",
        label_timestamp=pl.col("event_timestamp") + timedelta(days=3),
        is_fraud=(pl.col("amount") > 150).cast(pl.Int64),
    )
    for table in (customer_activity, merchant_activity):
        until = table.until(tx)
        assert until is not None
        chunks = table.chunks(tx, until=until, labels=labels)
        delta_tables.write(str(settings.lake_dir / table.name), chunks, mode="overwrite")
    return customers, merchants


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    tx = _transactions()
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LOOPLINE_HOME", raising=False)  # restored after the module
        customers, merchants = _publish(settings, tx)
        store = open_store(settings)
        timings = {}
        started = time.perf_counter()
        apply_repo(store)
        timings["apply"] = time.perf_counter() - started
        started = time.perf_counter()
        materialize(store, end=LAST_DAY_END)
        timings["materialize"] = time.perf_counter() - started
        yield Published(settings, store, tx, customers, merchants, timings)
        print(f"\nfeast wall times (s): {timings}")


def _entity_df(rows: list[tuple[datetime, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "event_timestamp": pl.Datetime("us", "UTC"),
            "customer_id": pl.Int64,
            "merchant_id": pl.Int64,
        },
        orient="row",
    ).with_columns(label=pl.int_range(pl.len()).cast(pl.Int8))


def _snapshot(customers: pl.DataFrame, customer_id: int, day_end: datetime) -> dict:
    rows = customers.filter(
        (pl.col("customer_id") == customer_id) & (pl.col("event_timestamp") == day_end)
    )
    assert rows.height == 1
    return rows.select(CUSTOMER_FEATURES).row(0, named=True)


def test_repo_declares_the_layout_transform_expects(published):
    service = published.store.get_feature_service(SERVICE)
    declared = {p.name: tuple(f.name for f in p.features) for p in service.feature_view_projections}
    assert declared == dict(SERVICES[SERVICE].views)
    for projection in service.feature_view_projections:
        view = published.store.get_feature_view(projection.name)
        assert view.ttl == TTL
    assert published.customers.columns[2:] == CUSTOMER_FEATURES
    assert published.merchants.columns[2:] == MERCHANT_FEATURES


@pytest.mark.parametrize(
    ("at", "snapshot_day_end"),
    [
        # 10:00 on 10 Jan sees the snapshot of 9 Jan, not of 10 Jan (which holds the 1000.0).
        (_ts(2024, 1, 10, 10), _ts(2024, 1, 10)),
        (datetime(2024, 1, 10, 23, 59, 59, 999_999, tzinfo=UTC), _ts(2024, 1, 10)),
        # From midnight on, the completed 10 Jan snapshot is visible.
        (_ts(2024, 1, 11), _ts(2024, 1, 11)),
        (_ts(2024, 1, 11, 0, 0, 1), _ts(2024, 1, 11)),
    ],
)
def test_training_rows_see_the_previous_complete_day(published, at, snapshot_day_end):
    frame = training_frame(published.store, _entity_df([(at, 1001, 1)]), SERVICE)
    got = frame.select(CUSTOMER_FEATURES).row(0, named=True)
    assert got == _snapshot(published.customers, 1001, snapshot_day_end)


def test_values_around_the_large_transaction(published):
    rows = [(_ts(2024, 1, 10, 10), 1001, 1), (_ts(2024, 1, 11, 10), 1001, 1)]
    frame = training_frame(published.store, _entity_df(rows), SERVICE)
    assert frame["cust_amount_max_30d"].to_list() == [10.0, 1000.0]
    assert frame["cust_txn_count_1d"].to_list() == [1, 1]


@pytest.mark.parametrize(
    ("at", "customer_id", "has_features"),
    [
        (_ts(2024, 1, 9, 23), 1001, False),  # before its first snapshot (end of 9 Jan)
        (_ts(2024, 1, 10), 1001, True),
        (_ts(2024, 3, 2), 1002, True),  # last snapshot ends 1 Feb; ttl reaches 2 Mar 00:00
        (_ts(2024, 3, 2, 0, 0, 1), 1002, False),  # a second past the ttl
        (_ts(2024, 1, 20), 99_999, False),  # unknown customer
    ],
)
def test_missing_and_expired_snapshots_are_null(published, at, customer_id, has_features):
    frame = training_frame(published.store, _entity_df([(at, customer_id, 1)]), SERVICE)
    nulls = frame.select(CUSTOMER_FEATURES).null_count().row(0)
    assert nulls == ((0,) * len(CUSTOMER_FEATURES) if has_features else (1,) * len(nulls))
    assert frame["merch_txn_count_7d"].null_count() == 0


def _asof_oracle(entity_df: pl.DataFrame, table: pl.DataFrame, key: str) -> pl.DataFrame:
    ordered = entity_df.with_row_index("_i").sort("event_timestamp")
    joined = ordered.join_asof(
        table.sort("event_timestamp"),
        on="event_timestamp",
        by=key,
        strategy="backward",
        tolerance=TTL,
        check_sortedness=False,  # sorted by event_timestamp above, within every group too
    )
    return joined.sort("_i").drop("_i")


def test_three_thousand_rows_match_an_asof_oracle_in_their_original_order(published):
    rng = np.random.default_rng(5)
    n = 2_975
    # Whole minutes over a range that starts before the data and ends after the ttl.
    minutes = rng.integers(-2 * 24 * 60, 75 * 24 * 60, n)
    entity_df = pl.DataFrame(
        {
            "event_timestamp": [START + timedelta(minutes=int(m)) for m in minutes],
            "customer_id": rng.integers(1, 42, n),
            "merchant_id": rng.integers(1, 8, n),
            "amount": rng.random(n),
            "note": [f"row {i}" for i in range(n)],
        },
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    )
    entity_df = pl.concat([entity_df, entity_df.slice(0, 25)])  # duplicate rows stay rows
    started = time.perf_counter()
    frame = training_frame(published.store, entity_df, SERVICE)
    published.timings["historical_3000_rows"] = time.perf_counter() - started

    assert frame.select(entity_df.columns).equals(entity_df)  # order and passthrough intact
    expected = _asof_oracle(entity_df, published.customers, "customer_id")
    expected = _asof_oracle(expected, published.merchants, "merchant_id")
    features = CUSTOMER_FEATURES + MERCHANT_FEATURES
    assert frame.select(features).equals(expected.select(features))
    nulls = frame["cust_txn_count_7d"].null_count()
    print(f"\n3,000-row retrieval: {nulls} rows without customer features")
    assert 0 < nulls < frame.height // 2  # both found and missing rows are exercised
    assert frame.schema["cust_txn_count_7d"] == pl.Int64
    assert frame.schema["merch_amount_mean_30d"] == pl.Float64


def _latest(table: pl.DataFrame, key: str, end: datetime) -> pl.DataFrame:
    visible = table.filter(pl.col("event_timestamp").is_between(end - TTL, end))
    return visible.sort("event_timestamp").group_by(key).last()


def _assert_online_equals_latest(store, customers, merchants, end: datetime) -> None:
    latest_c = _latest(customers, "customer_id", end)
    latest_m = _latest(merchants, "merchant_id", end)
    rows = [
        {"customer_id": c, "merchant_id": m, "amount": 1.0}
        for c, m in zip(latest_c["customer_id"], [1, 2, 3, 4, 5, 6] * 10, strict=False)
    ]
    got = online_features(store, rows, SERVICE)
    assert len(got) == len(rows)
    by_customer = {r["customer_id"]: r for r in latest_c.iter_rows(named=True)}
    by_merchant = {r["merchant_id"]: r for r in latest_m.iter_rows(named=True)}
    for row in got:
        want_c = by_customer[row["customer_id"]]
        want_m = by_merchant[row["merchant_id"]]
        assert {f: row[f] for f in CUSTOMER_FEATURES} == {f: want_c[f] for f in CUSTOMER_FEATURES}
        assert {f: row[f] for f in MERCHANT_FEATURES} == {f: want_m[f] for f in MERCHANT_FEATURES}


def test_online_features_equal_the_latest_snapshot(published):
    _assert_online_equals_latest(
        published.store, published.customers, published.merchants, LAST_DAY_END
    )
    rows = [{"customer_id": 99_999, "merchant_id": 1}]
    unknown = online_features(published.store, rows, SERVICE, unknown="report")
    assert all(unknown[0][f] is None for f in CUSTOMER_FEATURES)
    assert unknown[0]["merch_txn_count_7d"] is not None
    assert unknown[0][NOT_FOUND] == ["customer_id=99999"]
    with pytest.raises(EntityNotFoundError, match="customer_id=99999 \\(view customer_stats\\)"):
        online_features(published.store, rows, SERVICE)


def test_online_features_reject_a_row_without_its_keys(published):
    with pytest.raises(ValueError, match="row 1: missing or null join key"):
        online_features(
            published.store,
            [{"customer_id": 1, "merchant_id": 1}, {"customer_id": 2, "merchant_id": None}],
            SERVICE,
        )
    assert online_features(published.store, [], SERVICE) == []


def test_training_frame_rejects_bad_entity_frames(published):
    naive = _entity_df([(_ts(2024, 1, 10), 1, 1)]).with_columns(
        pl.col("event_timestamp").dt.replace_time_zone(None)
    )
    with pytest.raises(ValueError, match="event_timestamp: must be a timezone-aware"):
        training_frame(published.store, naive, SERVICE)
    with pytest.raises(ValueError, match="missing column"):
        training_frame(published.store, naive.drop("merchant_id"), SERVICE)


def test_publish_is_atomic_and_microsecond_utc(tmp_path):
    frame = pl.DataFrame({"customer_id": [1], "event_timestamp": [datetime(2024, 1, 1, 5)]})
    frame = frame.with_columns(
        pl.col("event_timestamp").dt.cast_time_unit("ns").dt.replace_time_zone("Europe/Paris")
    )
    path = tmp_path / "deep" / "table.parquet"
    publish_feature_table(frame, path)
    back = pl.read_parquet(path)
    assert back.schema["event_timestamp"] == pl.Datetime("us", "UTC")
    assert back["event_timestamp"][0] == _ts(2024, 1, 1, 4)
    assert [p.name for p in path.parent.iterdir()] == ["table.parquet"]
    with pytest.raises(ValueError, match="event_timestamp: must be a timezone-aware"):
        publish_feature_table(frame.with_columns(pl.lit(None).alias("event_timestamp")), path)
    assert pl.read_parquet(path).equals(back)  # a rejected write leaves the old table


def test_incremental_materialization_and_reapply_after_deleting_stores(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPLINE_HOME", raising=False)
    settings = Settings(home=tmp_path)
    tx = _transactions()
    store = open_store(settings)

    # Day by day: only what was published and materialized so far is online.
    first_end = _ts(2024, 1, 21)
    early = tx.filter(pl.col("event_timestamp") < first_end)
    customers, merchants = _publish(settings, early)
    apply_repo(store)
    apply_repo(store)  # idempotent
    materialize(store, end=first_end)
    _assert_online_equals_latest(store, customers, merchants, first_end)

    customers, merchants = _publish(settings, tx)
    materialize(store, end=LAST_DAY_END)
    watermarks = {v.name: v.most_recent_end_time for v in store.list_feature_views()}
    assert {k: watermarks[k] for k in ("customer_stats", "merchant_stats")} == {
        "customer_stats": LAST_DAY_END,
        "merchant_stats": LAST_DAY_END,
    }
    materialize(store, end=LAST_DAY_END)  # nothing new: a no-op
    _assert_online_equals_latest(store, customers, merchants, LAST_DAY_END)

    # Online store gone, registry kept: re-apply recreates the tables and resets watermarks.
    (settings.feast_dir / "online.db").unlink()
    store = open_store(settings)
    apply_repo(store)
    assert all(v.most_recent_end_time is None for v in store.list_feature_views())
    materialize(store, end=LAST_DAY_END)
    _assert_online_equals_latest(store, customers, merchants, LAST_DAY_END)

    # Both gone: a fresh open + apply + materialize rebuilds everything.
    (settings.feast_dir / "online.db").unlink()
    (settings.feast_dir / "registry.db").unlink()
    store = open_store(settings)
    apply_repo(store)
    materialize(store, end=LAST_DAY_END)
    _assert_online_equals_latest(store, customers, merchants, LAST_DAY_END)


def test_materialize_rejects_a_naive_end(published):
    with pytest.raises(ValueError, match="end: must be timezone-aware"):
        materialize(published.store, end=datetime(2024, 2, 1))


def test_open_store_needs_a_feature_repo(tmp_path):
    settings = Settings(home=tmp_path, feature_repo=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no feature_store\.yaml"):
        open_store(settings)
    assert not Path(tmp_path / "feast").exists()


def test_loopline_offline_store_answers_like_feasts_duckdb_store(published):
    """The same historical request through Feast's DuckDB offline store and loopline's."""
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    from loopline.features.offline_store import LooplineOfflineStore

    store = published.store
    rng = np.random.default_rng(8)
    n = 800
    minutes = rng.integers(-2 * 24 * 60, 75 * 24 * 60, n)
    entity_df = pl.DataFrame(
        {
            "row": list(range(n)),
            "event_timestamp": [START + timedelta(minutes=int(m)) for m in minutes],
            "customer_id": rng.integers(1, 42, n),
            "merchant_id": rng.integers(1, 8, n),
        },
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    ).to_pandas()
    service = store.get_feature_service(SERVICE)
    views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    answers = []
    for offline in (LooplineOfflineStore, DuckDBOfflineStore):
        job = offline.get_historical_features(
            store.config, views, refs, entity_df, store.registry, store.project
        )
        frame = pl.from_arrow(job.to_arrow())
        assert isinstance(frame, pl.DataFrame)
        answers.append(frame.sort("row").select("row", *CUSTOMER_FEATURES, *MERCHANT_FEATURES))
    ours, feasts = answers
    assert ours.height == n
    assert ours.equals(feasts)

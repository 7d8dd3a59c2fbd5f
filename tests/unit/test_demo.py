"""Tests of the seeded fraud demo generator and its CSV writer."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, date, datetime, timedelta

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from loopline.data import demo
from loopline.data.contracts import read_batch
from loopline.data.demo import (
    DemoConfig,
    DemoConfigError,
    DemoData,
    demo_present,
    generate_demo,
    write_demo,
)
from loopline.spec import load_spec

SPEC = load_spec("fraud")
UTC_US = pl.Datetime("us", "UTC")
CATEGORY_COLUMNS = [c for c, rule in SPEC.events.columns.items() if rule.type == "category"]


@pytest.fixture(scope="module")
def small() -> DemoData:
    return generate_demo(DemoConfig(days=21, customers=500))


@pytest.fixture(scope="module")
def drifted() -> DemoData:
    return generate_demo(DemoConfig(days=40, customers=1500, drift_start_day=20))


def _labelled(data: DemoData) -> pl.DataFrame:
    return data.transactions.join(data.labels, on="transaction_id", how="inner", validate="1:1")


# --- schema ---------------------------------------------------------------------------------


def test_columns_follow_the_spec_in_order(small: DemoData) -> None:
    assert small.transactions.columns == list(SPEC.events.columns)
    assert small.labels.columns == list(SPEC.labels.columns)


@pytest.mark.parametrize(
    ("frame", "column", "dtype"),
    [
        ("transactions", "transaction_id", pl.String),
        ("transactions", "event_timestamp", UTC_US),
        ("transactions", "customer_id", pl.Int64),
        ("transactions", "merchant_id", pl.Int64),
        ("transactions", "amount", pl.Float64),
        ("transactions", "merchant_category", pl.String),
        ("transactions", "channel", pl.String),
        ("transactions", "country", pl.String),
        ("transactions", "hour", pl.Int64),
        ("labels", "transaction_id", pl.String),
        ("labels", "label_timestamp", UTC_US),
        ("labels", "is_fraud", pl.Int64),
        ("customers", "customer_id", pl.Int64),
        ("customers", "home_country", pl.String),
        ("customers", "typical_spend", pl.Float64),
        ("customers", "activity_per_week", pl.Float64),
        ("customers", "online_share", pl.Float64),
        ("customers", "preferred_channel", pl.String),
        ("customers", "risk", pl.Float64),
        ("merchants", "merchant_id", pl.Int64),
        ("merchants", "merchant_category", pl.String),
        ("merchants", "country", pl.String),
        ("merchants", "size", pl.String),
        ("merchants", "amount_scale", pl.Float64),
    ],
)
def test_dtypes(small: DemoData, frame: str, column: str, dtype: pl.DataType) -> None:
    assert getattr(small, frame).schema[column] == dtype


@pytest.mark.parametrize("frame", ["transactions", "labels", "customers", "merchants"])
def test_no_nulls(small: DemoData, frame: str) -> None:
    assert getattr(small, frame).null_count().sum_horizontal().item() == 0


# --- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "column"),
    [
        ("transactions", "transaction_id"),
        ("labels", "transaction_id"),
        ("customers", "customer_id"),
        ("merchants", "merchant_id"),
    ],
)
def test_ids_are_unique(small: DemoData, frame: str, column: str) -> None:
    assert getattr(small, frame)[column].is_unique().all()


def test_every_transaction_has_exactly_one_label(small: DemoData) -> None:
    tx_ids = small.transactions["transaction_id"]
    assert tx_ids.str.contains(r"^tx-\d{8}$").all()
    assert small.labels.height == small.transactions.height
    assert set(small.labels["transaction_id"]) == set(tx_ids)


def test_entity_ids_refer_to_known_customers_and_merchants(small: DemoData) -> None:
    tx = small.transactions
    assert tx["customer_id"].is_in(small.customers["customer_id"].implode()).all()
    assert tx["merchant_id"].is_in(small.merchants["merchant_id"].implode()).all()
    merchant_category = tx.join(small.merchants, on="merchant_id", suffix="_m")
    assert (
        merchant_category["merchant_category"] == merchant_category["merchant_category_m"]
    ).all()


@pytest.mark.parametrize(
    ("frame", "column", "spec_column"),
    [("transactions", c, c) for c in CATEGORY_COLUMNS]
    + [
        ("customers", "home_country", "country"),
        ("customers", "preferred_channel", "channel"),
        ("merchants", "merchant_category", "merchant_category"),
        ("merchants", "country", "country"),
    ],
)
def test_categories_are_within_the_spec(
    small: DemoData, frame: str, column: str, spec_column: str
) -> None:
    allowed = set(SPEC.events.columns[spec_column].values or [])
    seen = set(getattr(small, frame)[column].unique())
    assert seen <= allowed, seen - allowed


@pytest.mark.parametrize("column", CATEGORY_COLUMNS)
def test_transactions_use_every_declared_category(small: DemoData, column: str) -> None:
    assert set(small.transactions[column].unique()) == set(SPEC.events.columns[column].values)


def test_hour_matches_the_timestamp(small: DemoData) -> None:
    tx = small.transactions
    assert (tx["hour"] == tx["event_timestamp"].dt.hour().cast(pl.Int64)).all()
    assert tx["hour"].is_between(0, 23).all()


def test_events_lie_in_the_period_sorted_by_time(small: DemoData) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ts = small.transactions["event_timestamp"]
    assert ts.is_sorted()
    assert ts.min() >= start
    assert ts.max() < start + timedelta(days=small.config.days)


def test_amounts_are_positive_cents_within_the_spec(small: DemoData) -> None:
    amount = small.transactions["amount"]
    rule = SPEC.events.columns["amount"]
    assert amount.min() >= rule.min
    assert amount.max() <= rule.max
    assert ((amount * 100).round() - amount * 100).abs().max() < 1e-6


def test_night_is_quieter_than_the_day(small: DemoData) -> None:
    legit = _labelled(small).filter(pl.col("is_fraud") == 0)
    per_hour = legit["hour"].value_counts().sort("hour")["count"].to_numpy()
    assert per_hour[1:5].mean() < 0.2 * per_hour[10:20].mean()


# --- determinism ----------------------------------------------------------------------------


def test_same_config_gives_identical_frames() -> None:
    config = DemoConfig(days=10, customers=300, drift_start_day=5)
    first, second = generate_demo(config), generate_demo(config)
    for frame in ("transactions", "labels", "customers", "merchants"):
        assert getattr(first, frame).equals(getattr(second, frame)), frame


def test_another_seed_gives_other_data() -> None:
    first = generate_demo(DemoConfig(days=10, customers=300, seed=1))
    second = generate_demo(DemoConfig(days=10, customers=300, seed=2))
    assert not first.transactions.equals(second.transactions)
    assert not first.customers.equals(second.customers)


# --- fraud ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        DemoConfig(days=30, customers=2000),
        DemoConfig(days=30, customers=2000, seed=11),
        DemoConfig(days=30, customers=2000, drift_start_day=10),
        DemoConfig(days=30, customers=2000, fraud_rate=0.05),
    ],
)
def test_fraud_rate_is_near_the_target(config: DemoConfig) -> None:
    rate = generate_demo(config).labels["is_fraud"].mean()
    assert config.fraud_rate * 0.8 <= rate <= config.fraud_rate * 1.2


def _signals(data: DemoData) -> pl.DataFrame:
    tx = _labelled(data).join(data.customers, on="customer_id")
    in_burst = (
        pl.col("amount").is_not_null().cast(pl.Int64).rolling_sum_by("event_timestamp", "1h")
    ).over("customer_id")
    return tx.sort("customer_id", "event_timestamp").with_columns(
        online=pl.col("channel") == "online",
        night=pl.col("hour") < 6,
        away=pl.col("country") != pl.col("home_country"),
        large=pl.col("amount") > 10 * pl.col("typical_spend"),
        burst=(in_burst >= 3) & (pl.col("amount") < 5),
    )


@pytest.mark.parametrize(
    ("signal", "min_lift"), [("online", 2), ("night", 5), ("away", 2), ("large", 4), ("burst", 10)]
)
def test_fraud_is_more_likely_on_risk_signals(
    small: DemoData, signal: str, min_lift: float
) -> None:
    share = _signals(small).group_by("is_fraud").agg(pl.col(signal).mean()).sort("is_fraud")
    legit, fraud = share[signal].to_list()
    assert fraud > min_lift * legit, (legit, fraud)


@pytest.mark.parametrize("is_fraud", [0, 1])
def test_label_delays_follow_the_rules(small: DemoData, is_fraud: int) -> None:
    delay = (
        _labelled(small)
        .filter(pl.col("is_fraud") == is_fraud)
        .select(pl.col("label_timestamp") - pl.col("event_timestamp"))
        .to_series()
    )
    assert delay.len() > 0
    if is_fraud:
        assert delay.min() >= timedelta(days=1)
        assert delay.max() <= timedelta(days=10)
        assert delay.max() - delay.min() > timedelta(days=5)  # random, not fixed
    else:
        assert (delay == timedelta(days=SPEC.labels.delay_days)).all()


def test_labels_past_the_period_are_kept(small: DemoData) -> None:
    end = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=small.config.days)
    assert small.labels.filter(pl.col("label_timestamp") > end).height > 0


# --- drift ----------------------------------------------------------------------------------


def _new_pattern() -> pl.Expr:
    return (
        (pl.col("is_fraud") == 1)
        & (pl.col("channel") == "online")
        & (pl.col("merchant_category") == demo.DRIFT_CATEGORY)
        & (pl.col("country") == demo.DRIFT_COUNTRY)
        & (pl.col("hour") < 6)
    )


def _by_drift_phase(data: DemoData, drift_day: int) -> pl.DataFrame:
    cut = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=drift_day)
    return (
        _labelled(data)
        .group_by(after=pl.col("event_timestamp") >= cut)
        .agg(
            mean_legit_amount=pl.col("amount").filter(pl.col("is_fraud") == 0).mean(),
            new_pattern=_new_pattern().sum(),
            fraud=pl.col("is_fraud").sum(),
        )
        .sort("after")
    )


def test_drift_inflates_amounts_after_the_drift_day(drifted: DemoData) -> None:
    before, after = _by_drift_phase(drifted, 20)["mean_legit_amount"].to_list()
    assert after / before == pytest.approx(drifted.config.drift_amount_factor, rel=0.15)


def test_drift_introduces_the_new_fraud_pattern(drifted: DemoData) -> None:
    phases = _by_drift_phase(drifted, 20)
    before, after = phases["new_pattern"].to_list()
    assert before == 0
    assert after >= 0.3 * phases["fraud"][1]


def test_no_drift_means_no_new_pattern_and_stable_amounts() -> None:
    data = generate_demo(DemoConfig(days=40, customers=1500))
    phases = _by_drift_phase(data, 20)
    assert phases["new_pattern"].sum() == 0
    before, after = phases["mean_legit_amount"].to_list()
    assert after / before == pytest.approx(1.0, rel=0.1)


# --- learnability -----------------------------------------------------------------------------


def _model_inputs(data: DemoData) -> pl.DataFrame:
    ts = "event_timestamp"
    one = pl.col("amount").is_not_null().cast(pl.Int64)
    return (
        _labelled(data)
        .sort("customer_id", ts)
        .with_columns(
            *(
                pl.col(c).cast(pl.Enum(SPEC.events.columns[c].values)).to_physical().alias(c)
                for c in SPEC.features.categorical
            ),
            count_1d=one.rolling_sum_by(ts, "1d", closed="left").over("customer_id").fill_null(0),
            count_7d=one.rolling_sum_by(ts, "7d", closed="left").over("customer_id").fill_null(0),
            mean_amount_30d=pl.col("amount")
            .rolling_mean_by(ts, "30d", closed="left")
            .over("customer_id"),
        )
        .sort(ts)
    )


def test_fraud_is_learnable_on_a_time_ordered_holdout() -> None:
    frame = _model_inputs(generate_demo(DemoConfig(days=30, customers=800)))
    names = [*SPEC.features.request, "count_1d", "count_7d", "mean_amount_30d"]
    x = frame.select(names).to_numpy().astype(np.float64)
    y = frame["is_fraud"].to_numpy()
    cut = int(len(y) * 0.7)
    params = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "num_threads": 2,
        "seed": 1,
        "deterministic": True,
        "verbose": -1,
    }
    categorical = [names.index(c) for c in SPEC.features.categorical]
    train = lgb.Dataset(x[:cut], y[:cut], feature_name=names, categorical_feature=categorical)
    model = lgb.train(params, train, num_boost_round=100)
    assert y[cut:].sum() >= 20  # enough positives in the holdout for a meaningful AUC
    assert roc_auc_score(y[cut:], model.predict(x[cut:])) > 0.8


# --- scale ----------------------------------------------------------------------------------


def test_ninety_days_of_five_thousand_customers_is_fast() -> None:
    started = time.perf_counter()
    data = generate_demo(DemoConfig(days=90, customers=5000))
    elapsed = time.perf_counter() - started
    assert data.transactions.height > 150_000
    assert elapsed < 10, f"took {elapsed:.1f} s"


# --- config validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"days": 0}, "days"),
        ({"days": 1.5}, "days"),
        ({"days": True}, "days"),
        ({"customers": 0}, "customers"),
        ({"customers": "100"}, "customers"),
        ({"merchants": 0}, "merchants"),
        ({"seed": -1}, "seed"),
        ({"start": datetime(2026, 1, 1)}, "start"),
        ({"start": "2026-01-01"}, "start"),
        ({"drift_start_day": -1}, "drift_start_day"),
        ({"drift_start_day": 10}, "drift_start_day"),
        ({"drift_amount_factor": 0}, "drift_amount_factor"),
        ({"drift_amount_factor": math.nan}, "drift_amount_factor"),
        ({"drift_amount_factor": "2"}, "drift_amount_factor"),
        ({"fraud_rate": 0}, "fraud_rate"),
        ({"fraud_rate": 0.9}, "fraud_rate"),
        ({"fraud_rate": math.inf}, "fraud_rate"),
        ({"customers": 10_000_000, "days": 10}, "days, customers"),
    ],
)
def test_invalid_config_names_the_field(overrides: dict[str, object], field: str) -> None:
    kwargs: dict[str, object] = {"days": 10, "customers": 10, **overrides}
    with pytest.raises(DemoConfigError, match=rf"^{field}: "):
        DemoConfig(**kwargs)  # type: ignore[arg-type]
    assert issubclass(DemoConfigError, ValueError)


@pytest.mark.parametrize(
    ("customers", "merchants", "expected"),
    [(10, None, 50), (501, None, 50), (1000, None, 100), (5000, None, 500), (10, 3, 3)],
)
def test_merchant_count(customers: int, merchants: int | None, expected: int) -> None:
    config = DemoConfig(days=2, customers=customers, merchants=merchants)
    assert config.merchants == expected
    assert generate_demo(config).merchants.height == expected


def test_config_is_frozen() -> None:
    config = DemoConfig(days=1, customers=1)
    with pytest.raises(AttributeError):
        config.days = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "config",
    [
        DemoConfig(days=1, customers=1),
        DemoConfig(days=3, customers=40, merchants=1),
        DemoConfig(days=3, customers=40, merchants=2, drift_start_day=0),
    ],
)
def test_tiny_configs_still_follow_the_schema(config: DemoConfig) -> None:
    data = generate_demo(config)
    assert data.transactions.columns == list(SPEC.events.columns)
    assert data.transactions.schema["event_timestamp"] == UTC_US
    assert data.labels.height == data.transactions.height


# --- writer ---------------------------------------------------------------------------------


def _read(paths: list) -> pl.DataFrame:
    schema = {"event_timestamp": UTC_US, "label_timestamp": UTC_US}
    frames = [pl.read_csv(p, schema_overrides=schema) for p in sorted(paths)]
    return pl.concat(frames)


@pytest.mark.parametrize("batch_days", [1, 7, 30])
def test_writer_round_trip(small: DemoData, tmp_path, batch_days: int) -> None:
    assert not demo_present(tmp_path)
    written = write_demo(small, tmp_path, batch_days=batch_days)
    assert demo_present(tmp_path)
    assert all(p.is_file() for p in written)
    assert not list(tmp_path.rglob("*.tmp"))

    tx_files = sorted((tmp_path / "transactions").glob("transactions_*.csv"))
    assert len(tx_files) == math.ceil(small.config.days / batch_days)
    assert set(written) >= {*tx_files, tmp_path / "customers.csv", tmp_path / "merchants.csv"}
    tx = _read(tx_files)
    assert tx.schema == small.transactions.schema
    assert tx.sort("transaction_id").equals(small.transactions.sort("transaction_id"))
    labels = _read(list((tmp_path / "labels").glob("labels_*.csv")))
    assert labels.sort("transaction_id").equals(small.labels.sort("transaction_id"))
    for name in ("customers", "merchants"):
        assert pl.read_csv(tmp_path / f"{name}.csv").equals(getattr(small, name)), name


@pytest.mark.parametrize(
    ("folder", "column"), [("transactions", "event_timestamp"), ("labels", "label_timestamp")]
)
def test_writer_batches_by_day(small: DemoData, tmp_path, folder: str, column: str) -> None:
    write_demo(small, tmp_path, batch_days=7)
    for path in (tmp_path / folder).glob(f"{folder}_*.csv"):
        first = date.fromisoformat(path.stem.removeprefix(f"{folder}_"))
        assert (first - small.config.start).days % 7 == 0
        header, first_row = path.read_text().splitlines()[:2]
        stamp = first_row.split(",")[header.split(",").index(column)]
        assert stamp.endswith("+00:00") and "T" in stamp
        days = pl.read_csv(path, schema_overrides={column: UTC_US})[column].dt.date()
        assert days.min() >= first
        assert days.max() < first + timedelta(days=7)


def test_writer_leaves_no_manifest_when_a_write_fails(
    small: DemoData, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(demo.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_demo(small, tmp_path)
    assert not demo_present(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / demo.MANIFEST_NAME).exists()


def test_demo_present_needs_every_listed_file(small: DemoData, tmp_path) -> None:
    written = write_demo(small, tmp_path)
    assert demo_present(tmp_path)
    written[0].unlink()
    assert not demo_present(tmp_path)


@pytest.mark.parametrize("batch_days", [0, -1, 1.5, True])
def test_writer_rejects_bad_batch_days(small: DemoData, tmp_path, batch_days: object) -> None:
    with pytest.raises(ValueError, match=r"^batch_days: "):
        write_demo(small, tmp_path, batch_days=batch_days)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_rewriting_a_shorter_demo_removes_only_its_stale_batches(tmp_path) -> None:
    write_demo(generate_demo(DemoConfig(days=21, customers=100)), tmp_path)
    foreign = tmp_path / "transactions" / "notes.csv"
    foreign.write_text("kept\n")
    shorter = generate_demo(DemoConfig(days=7, customers=100, seed=3))
    written = write_demo(shorter, tmp_path)
    on_disk = {p for p in tmp_path.rglob("*.csv") if p != foreign}
    assert on_disk == {p for p in written if p.suffix == ".csv"}
    assert foreign.read_text() == "kept\n"
    tx = _read(list((tmp_path / "transactions").glob("transactions_*.csv")))
    assert tx.equals(shorter.transactions)


@pytest.mark.parametrize(
    "files",
    [["../outside.csv"], ["customers.csv", "/etc/passwd"], "customers.csv", [], [1]],
)
def test_demo_present_rejects_a_bad_manifest(small: DemoData, tmp_path, files: object) -> None:
    write_demo(small, tmp_path)
    (tmp_path / demo.MANIFEST_NAME).write_text(json.dumps({"files": files}))
    assert not demo_present(tmp_path)


def test_written_batches_pass_the_spec_contract(small: DemoData, tmp_path) -> None:
    write_demo(small, tmp_path)
    for folder, table, frame in (
        ("transactions", SPEC.events, small.transactions),
        ("labels", SPEC.labels, small.labels),
    ):
        paths = sorted((tmp_path / folder).glob("*.csv"))
        typed = pl.concat([read_batch(p, table) for p in paths])
        assert typed.sort("transaction_id").equals(frame.sort("transaction_id")), folder

"""fraud_v2 feature tables: values against brute force, labels only once they arrived,
incremental == full, and the published schema the feature service declares."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from loopline.features.aggregates import customer_activity, merchant_activity
from loopline.features.feast_ops import SERVICES

START = datetime(2024, 1, 1, tzinfo=UTC)
LAYOUT = SERVICES["fraud_v2"]


def _ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _tx(rows: list[tuple]) -> pl.DataFrame:
    """Rows of (transaction_id, timestamp, customer_id, merchant_id, amount)."""
    return pl.DataFrame(
        rows,
        schema={
            "transaction_id": pl.String,
            "event_timestamp": pl.Datetime("us", "UTC"),
            "customer_id": pl.Int64,
            "merchant_id": pl.Int64,
            "amount": pl.Float64,
        },
        orient="row",
    )


def _labels(rows: list[tuple]) -> pl.DataFrame:
    """Rows of (transaction_id, label_timestamp, is_fraud)."""
    return pl.DataFrame(
        rows,
        schema={
            "transaction_id": pl.String,
            "label_timestamp": pl.Datetime("us", "UTC"),
            "is_fraud": pl.Int64,
        },
        orient="row",
    )


def _random(seed: int, n: int = 600) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 45 * 86_400, n)
    tx = _tx(
        [
            (f"t{i}", START + timedelta(seconds=int(s)), int(c), int(m), float(a))
            for i, (s, c, m, a) in enumerate(
                zip(seconds, rng.integers(1, 12, n), rng.integers(1, 6, n),
                    rng.gamma(2.0, 40.0, n).round(2) + 0.01, strict=True)
            )
        ]
    )  # fmt: skip
    delays = rng.integers(3_600, 20 * 86_400, n)
    labels = _labels(
        [
            (f"t{i}", START + timedelta(seconds=int(s + d)), int(f))
            for i, (s, d, f) in enumerate(zip(seconds, delays, rng.random(n) < 0.2, strict=True))
        ]
    )
    return tx, labels


def _window(frame: pl.DataFrame, key: str, value: int, ts: str, end: datetime, days: float):
    start = end - timedelta(days=days)
    return frame.filter((pl.col(key) == value) & (pl.col(ts) >= start) & (pl.col(ts) < end))


@pytest.mark.parametrize("seed", [1, 2])
def test_customer_rows_match_brute_force(seed):
    tx, _ = _random(seed)
    out = customer_activity(tx)
    rng = np.random.default_rng(seed)
    for i in rng.integers(0, out.height, 60):
        row = out.row(int(i), named=True)
        end, key = row["event_timestamp"], row["customer_id"]
        for name, days in (("1h", 1 / 24), ("1d", 1), ("7d", 7), ("30d", 30)):
            inside = _window(tx, "customer_id", key, "event_timestamp", end, days)
            amounts = inside["amount"].to_numpy()
            assert row[f"cust_txn_count_{name}"] == inside.height
            assert row[f"cust_amount_sum_{name}"] == pytest.approx(amounts.sum(), abs=1e-9)
            if name == "1h":
                continue
            mean = row[f"cust_amount_mean_{name}"]
            std = row[f"cust_amount_std_{name}"]
            assert (mean is None) == (inside.height == 0)
            assert (std is None) == (inside.height < 2)
            if mean is not None:
                assert mean == pytest.approx(amounts.mean(), rel=1e-12)
            if std is not None:
                assert std == pytest.approx(amounts.std(ddof=1), rel=1e-9, abs=1e-9)
            assert row[f"cust_distinct_merchants_{name}"] == inside["merchant_id"].n_unique()
        before = tx.filter((pl.col("customer_id") == key) & (pl.col("event_timestamp") < end))
        newest = before["event_timestamp"].max()
        assert isinstance(newest, datetime)
        assert row["cust_last_txn_epoch_us"] == int(newest.timestamp() * 1_000_000)


def test_merchant_labels_count_from_the_instant_they_arrived():
    tx = _tx(
        [
            ("a", _ts(2024, 1, 1, 10), 1, 7, 100.0),
            ("b", _ts(2024, 1, 1, 11), 2, 7, 50.0),
            ("c", _ts(2024, 1, 2, 9), 1, 8, 20.0),
        ]
    )
    # a is fraud, known on 3 Jan at 09:00; b is legitimate, known on 5 Jan.
    labels = _labels([("a", _ts(2024, 1, 3, 9), 1), ("b", _ts(2024, 1, 5, 0), 0)])
    out = merchant_activity(tx, labels=labels, as_of=_ts(2024, 3, 1))
    seven = out.filter(pl.col("merchant_id") == 7)

    def at(when: datetime) -> dict:
        return seven.filter(pl.col("event_timestamp") <= when).row(-1, named=True)

    # Before the chargeback arrived nothing about it leaks into the merchant's rows.
    assert at(_ts(2024, 1, 3, 9))["merch_fraud_labels_7d"] == 0
    assert at(_ts(2024, 1, 3, 9))["merch_fraud_rate_30d"] is None
    after = at(_ts(2024, 1, 3, 9, 1))
    assert (after["merch_fraud_labels_7d"], after["merch_labels_30d"]) == (1, 1)
    assert after["merch_fraud_rate_30d"] == 1.0
    assert after["merch_txn_count_7d"] == 2
    assert at(_ts(2024, 1, 5, 0, 1))["merch_fraud_rate_30d"] == 0.5
    # Labels never move transaction counts: the label instants are not 1h/1d exits.
    assert not seven.filter(pl.col("event_timestamp") == _ts(2024, 1, 3, 10, 1)).height
    assert at(_ts(2024, 1, 10, 9, 1))["merch_fraud_labels_7d"] == 0
    assert at(_ts(2024, 1, 10, 9, 1))["merch_fraud_labels_30d"] == 1


@pytest.mark.parametrize("seed", [3, 4])
def test_merchant_rows_match_brute_force(seed):
    tx, labels = _random(seed)
    out = merchant_activity(tx, labels=labels)
    arrived = labels.join(tx.select("transaction_id", "merchant_id"), on="transaction_id")
    rng = np.random.default_rng(seed)
    for i in rng.integers(0, out.height, 60):
        row = out.row(int(i), named=True)
        end, key = row["event_timestamp"], row["merchant_id"]
        for name, days in (("1h", 1 / 24), ("1d", 1), ("7d", 7), ("30d", 30)):
            inside = _window(tx, "merchant_id", key, "event_timestamp", end, days)
            assert row[f"merch_txn_count_{name}"] == inside.height
        month = _window(tx, "merchant_id", key, "event_timestamp", end, 30)
        if month.height:
            assert row["merch_amount_mean_30d"] == pytest.approx(month["amount"].mean(), rel=1e-12)
        assert row["merch_distinct_customers_30d"] == month["customer_id"].n_unique()
        got = _window(arrived, "merchant_id", key, "label_timestamp", end, 30)
        assert row["merch_labels_30d"] == got.height
        assert row["merch_fraud_labels_30d"] == int(got["is_fraud"].sum())
        rate = row["merch_fraud_rate_30d"]
        assert rate == (None if not got.height else pytest.approx(got["is_fraud"].mean()))


@pytest.mark.parametrize("table", [customer_activity, merchant_activity], ids=lambda t: t.name)
@pytest.mark.parametrize("cut_days", [0.5, 17.25, 44])
def test_incremental_equals_full_exactly(table, cut_days):
    tx, labels = _random(5)
    full = table(tx, labels=labels)
    cut = table.window.floor(START + timedelta(days=cut_days))
    head = table(tx, labels=labels, as_of=cut)
    recent_tx = tx.filter(pl.col("event_timestamp") >= cut - table.lookback)
    recent_labels = labels.filter(pl.col("label_timestamp") >= cut - table.lookback).join(
        tx.select("transaction_id", "merchant_id"), on="transaction_id"
    )
    until = table.until(tx)
    tail = table(recent_tx, labels=recent_labels, since=cut, as_of=until)
    assert pl.concat([head, tail]).sort(table.key, "event_timestamp").equals(full)


@pytest.mark.parametrize("table", [customer_activity, merchant_activity], ids=lambda t: t.name)
def test_published_columns_are_the_service_layout(table):
    tx, labels = _random(6, n=50)
    out = table(tx, labels=labels)
    assert out.columns == [table.key, "event_timestamp", *LAYOUT.views[table.name]]
    assert out.schema["event_timestamp"] == pl.Datetime("us", "UTC")
    assert table.empty().schema == out.schema
    counts = [c for c in out.columns if "count" in c or "distinct" in c or "labels" in c]
    assert all(out.schema[c] == pl.Int64 for c in counts)


def test_std_is_exact_for_large_and_equal_amounts():
    # Equal amounts: the standard deviation is exactly 0, not a rounding residue.
    tx = _tx([(f"t{i}", START + timedelta(hours=i), 1, 1, 99_999.99) for i in range(40)])
    out = customer_activity(tx)
    stds = out["cust_amount_std_30d"].drop_nulls()
    assert stds.len() > 0 and (stds == 0.0).all()
    assert math.isclose(out["cust_amount_mean_30d"].drop_nulls()[0], 99_999.99)


@pytest.mark.parametrize(
    ("tx", "labels", "message"),
    [
        (_random(7, 5)[0].drop("merchant_id"), None, "transactions: missing column(s) merchant_id"),
        (
            _random(7, 5)[0].with_columns(amount=pl.lit(1e9)),
            None,
            "amount: |amount| must stay below 30,000,000",
        ),
        (
            _random(7, 5)[0].with_columns(pl.col("event_timestamp").dt.replace_time_zone(None)),
            None,
            "event_timestamp: must be a timezone-aware datetime",
        ),
    ],
)
def test_customer_bad_input_names_the_field(tx, labels, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        customer_activity(tx, labels=labels)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, "merchant_activity: needs the labels table"),
        (_random(8, 5)[1].drop("is_fraud"), "labels: missing column(s) is_fraud"),
        (
            _random(8, 5)[1].drop("transaction_id"),
            "labels: missing column(s) transaction_id (or merchant_id)",
        ),
        (
            _random(8, 5)[1].with_columns(pl.col("label_timestamp").dt.replace_time_zone(None)),
            "label_timestamp: must be a timezone-aware datetime",
        ),
    ],
)
def test_merchant_bad_labels_name_the_field(labels, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        merchant_activity(_random(8, 5)[0], labels=labels)

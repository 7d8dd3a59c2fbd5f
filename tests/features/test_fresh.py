"""Fresh online values equal the offline table's point-in-time rows, event by event."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest
from feature_data import labels_of, transactions

from loopline.features.aggregates import customer_activity, merchant_activity
from loopline.features.fresh import FreshFeatures, FreshView
from loopline.features.windows import TIMESTAMP

VIEWS = (
    FreshView("customer_activity", "customer_id", customer_activity, ttl=timedelta(days=90)),
    FreshView("merchant_activity", "merchant_id", merchant_activity, ttl=timedelta(days=90)),
)


def _labelled(tx: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    return labels.join(
        tx.select("transaction_id", "customer_id", "merchant_id"), on="transaction_id"
    )


def _offline_row(table: pl.DataFrame, key: str, entity: int, at) -> dict | None:
    rows = table.filter(pl.col(key) == entity, pl.col(TIMESTAMP) <= at)
    return rows.tail(1).row(0, named=True) if rows.height else None


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
    return a == b


@pytest.mark.parametrize("seed", [3, 8])
def test_scoring_then_folding_each_live_event_matches_the_offline_point_in_time_row(seed):
    tx = transactions(seed=seed, n=1_200, days=40)
    labels = _labelled(tx, labels_of(tx, seed=seed + 1))
    cut = tx.get_column("event_timestamp").min() + timedelta(days=38)
    history, live = tx.filter(pl.col(TIMESTAMP) < cut), tx.filter(pl.col(TIMESTAMP) >= cut)
    # Labels are known to the service when they arrived before the live traffic started.
    known = labels.filter(pl.col("label_timestamp") < cut)
    offline = {
        "customer_activity": customer_activity(tx, labels=None),
        "merchant_activity": merchant_activity(tx, labels=known),
    }
    fresh = FreshFeatures(
        VIEWS, timestamp=TIMESTAMP, label_timestamp="label_timestamp", event_id="transaction_id"
    )
    fresh.load(history, known)
    checked = 0
    for event in live.head(120).iter_rows(named=True):
        at = event[TIMESTAMP]
        got = fresh.values_at(event, at, [v.name for v in VIEWS])
        for values, view in zip(got, VIEWS, strict=True):
            want = _offline_row(offline[view.name], view.key, event[view.key], at)
            if want is None:
                assert not values.found
                continue
            assert values.stamp == want[TIMESTAMP]
            for name, value in values.values.items():
                assert _same(value, want[name]), (view.name, name, at, value, want[name])
                checked += 1
        fresh.fold(pl.DataFrame([event], schema=tx.schema))
    assert checked > 1_000


def test_the_latest_row_is_stamped_when_the_newest_event_becomes_visible():
    tx = transactions(seed=5, n=400, days=10)
    fresh = FreshFeatures(VIEWS[:1], timestamp=TIMESTAMP)
    fresh.load(tx.head(300))
    event = tx.row(300, named=True)
    touched = fresh.fold(pl.DataFrame([event], schema=tx.schema))
    assert touched == [("customer_activity", event["customer_id"])]
    (row,) = fresh.latest_rows(touched)
    offline = customer_activity(tx.head(301))
    visible = customer_activity.window.floor(event[TIMESTAMP]) + customer_activity.grain
    want = _offline_row(offline, "customer_id", event["customer_id"], visible)
    assert row.stamp == visible == want[TIMESTAMP]
    assert row.values["cust_txn_count_1h"] == want["cust_txn_count_1h"] >= 1


def test_an_unknown_entity_is_reported_not_zero_filled():
    tx = transactions(seed=6, n=200, days=5)
    fresh = FreshFeatures(VIEWS[:1], timestamp=TIMESTAMP)
    fresh.load(tx)
    (values,) = fresh.values_at({"customer_id": 10_000}, tx[TIMESTAMP].max(), ["customer_activity"])
    assert not values.found and all(v is None for v in values.values.values())


def test_naive_time_and_missing_key_are_refused():
    tx = transactions(seed=6, n=50, days=2)
    fresh = FreshFeatures(VIEWS[:1], timestamp=TIMESTAMP)
    fresh.load(tx)
    with pytest.raises(ValueError, match="timezone-aware"):
        fresh.values_at(
            {"customer_id": 1}, tx[TIMESTAMP].max().replace(tzinfo=None), ["customer_activity"]
        )
    with pytest.raises(ValueError, match="customer_id"):
        fresh.values_at({}, tx[TIMESTAMP].max(), ["customer_activity"])


def test_a_late_event_changes_the_values_of_later_instants_already_served():
    tx = transactions(seed=9, n=300, days=6)
    fresh = FreshFeatures(VIEWS[:1], timestamp=TIMESTAMP)
    history, late = tx.head(250), tx.slice(250, 50)
    fresh.load(history)
    customer = late.row(0, named=True)["customer_id"]
    at = tx[TIMESTAMP].max() + timedelta(minutes=5)
    (before,) = fresh.values_at({"customer_id": customer}, at, ["customer_activity"])
    (again,) = fresh.values_at({"customer_id": customer}, at, ["customer_activity"])
    assert again is before  # one evaluation per entity and grain tile
    fresh.fold(late)  # older than `at`: it must count now
    (after,) = fresh.values_at({"customer_id": customer}, at, ["customer_activity"])
    want = _offline_row(customer_activity(tx), "customer_id", customer, at)
    assert after.values["cust_txn_count_30d"] == want["cust_txn_count_30d"]
    assert after.values["cust_txn_count_30d"] > before.values["cust_txn_count_30d"]

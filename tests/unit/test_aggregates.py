"""Daily entity snapshots: hand-computed values, row ranges, and no look-ahead."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from loopline.features.aggregates import customer_features, merchant_features


def _ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _tx(rows: list[tuple]) -> pl.DataFrame:
    """Rows of (timestamp, customer_id, merchant_id, amount, channel, country)."""
    frame = pl.DataFrame(
        rows,
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


# Customer 1 has five transactions chosen to sit on window edges; customer 2 has one.
TINY = _tx(
    [
        (_ts(2024, 1, 1, 10), 1, 7, 10.0, "online", "US"),
        (datetime(2024, 1, 1, 23, 59, 59, 999_999, tzinfo=UTC), 1, 7, 20.0, "chip", "GB"),
        (_ts(2024, 1, 2), 1, 8, 30.0, "online", "US"),  # first instant of 2 Jan
        (_ts(2024, 1, 8, 12), 1, 7, 40.0, "chip", "FR"),  # 2 Jan is the 7th day back
        (_ts(2024, 1, 31, 8), 1, 8, 50.0, "online", "US"),  # 1 Jan drops out of 30 days
        (_ts(2024, 1, 5, 9), 2, 8, 5.0, "swipe", "DE"),
    ]
)

CUSTOMER_COLUMNS = [
    "cust_txn_count_1d",
    "cust_txn_count_7d",
    "cust_amount_sum_7d",
    "cust_amount_mean_30d",
    "cust_amount_max_30d",
    "cust_online_share_30d",
    "cust_distinct_countries_30d",
]


def _row(frame: pl.DataFrame, key: str, key_value: int, day: date) -> dict:
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    rows = frame.filter((pl.col(key) == key_value) & (pl.col("event_timestamp") == end))
    assert rows.height == 1, f"expected one snapshot for {key}={key_value} on {day}"
    return rows.row(0, named=True)


@pytest.mark.parametrize(
    ("customer_id", "day", "expected"),
    [
        (1, date(2024, 1, 1), (2, 2, 30.0, 15.0, 20.0, 1 / 2, 2)),
        (1, date(2024, 1, 2), (1, 3, 60.0, 20.0, 30.0, 2 / 3, 2)),
        (1, date(2024, 1, 7), (0, 3, 60.0, 20.0, 30.0, 2 / 3, 2)),
        (1, date(2024, 1, 8), (1, 2, 70.0, 25.0, 40.0, 2 / 4, 3)),
        (1, date(2024, 1, 30), (0, 0, 0.0, 25.0, 40.0, 2 / 4, 3)),
        (1, date(2024, 1, 31), (1, 1, 50.0, 40.0, 50.0, 2 / 3, 2)),
        (2, date(2024, 1, 5), (1, 1, 5.0, 5.0, 5.0, 0.0, 1)),
        (2, date(2024, 1, 12), (0, 0, 0.0, 5.0, 5.0, 0.0, 1)),
    ],
)
def test_customer_values_match_hand_computation(customer_id, day, expected):
    row = _row(customer_features(TINY), "customer_id", customer_id, day)
    assert tuple(row[c] for c in CUSTOMER_COLUMNS) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("merchant_id", "day", "expected"),
    [
        (7, date(2024, 1, 1), (2, 15.0, 1 / 2)),
        (7, date(2024, 1, 8), (1, 70.0 / 3, 1 / 3)),
        (8, date(2024, 1, 5), (2, 17.5, 1 / 2)),
        (8, date(2024, 1, 31), (1, 85.0 / 3, 2 / 3)),
    ],
)
def test_merchant_values_match_hand_computation(merchant_id, day, expected):
    row = _row(merchant_features(TINY), "merchant_id", merchant_id, day)
    values = (
        row["merch_txn_count_7d"],
        row["merch_amount_mean_30d"],
        row["merch_online_share_30d"],
    )
    assert values == pytest.approx(expected)


def test_output_schema():
    out = customer_features(TINY)
    assert out.schema == pl.Schema(
        {
            "customer_id": pl.Int64,
            "event_timestamp": pl.Datetime("us", "UTC"),
            "cust_txn_count_1d": pl.Int64,
            "cust_txn_count_7d": pl.Int64,
            "cust_amount_sum_7d": pl.Float64,
            "cust_amount_mean_30d": pl.Float64,
            "cust_amount_max_30d": pl.Float64,
            "cust_online_share_30d": pl.Float64,
            "cust_distinct_countries_30d": pl.Int64,
        }
    )
    assert merchant_features(TINY).columns == [
        "merchant_id",
        "event_timestamp",
        "merch_txn_count_7d",
        "merch_amount_mean_30d",
        "merch_online_share_30d",
    ]


@pytest.mark.parametrize(
    ("as_of", "customer_id", "first_day", "last_day", "rows"),
    [
        # No as_of: up to the last transaction day of the whole frame (31 Jan).
        (None, 1, date(2024, 1, 1), date(2024, 1, 31), 31),
        (None, 2, date(2024, 1, 5), date(2024, 1, 31), 27),
        # as_of mid-day: only days complete by then (through 7 Jan).
        (_ts(2024, 1, 8, 10), 1, date(2024, 1, 1), date(2024, 1, 7), 7),
        (_ts(2024, 1, 8, 10), 2, date(2024, 1, 5), date(2024, 1, 7), 3),
        # as_of at midnight: the day that just ended is complete.
        (_ts(2024, 1, 8), 1, date(2024, 1, 1), date(2024, 1, 7), 7),
        # as_of far ahead: customers stay until 29 days after their last transaction.
        (_ts(2024, 6, 1), 1, date(2024, 1, 1), date(2024, 2, 29), 60),
        (_ts(2024, 6, 1), 2, date(2024, 1, 5), date(2024, 2, 3), 30),
    ],
)
def test_snapshot_days(as_of, customer_id, first_day, last_day, rows):
    out = customer_features(TINY, as_of=as_of).filter(pl.col("customer_id") == customer_id)
    days = out["event_timestamp"].dt.date() - timedelta(days=1)
    assert (days.min(), days.max(), out.height) == (first_day, last_day, rows)
    assert days.diff().drop_nulls().eq(timedelta(days=1)).all()


def test_inactive_gap_has_no_rows():
    tx = _tx(
        [
            (_ts(2024, 1, 1, 12), 3, 1, 1.0, "chip", "US"),
            (_ts(2024, 3, 15, 12), 3, 1, 1.0, "chip", "US"),
        ]
    )
    days = customer_features(tx)["event_timestamp"].dt.date() - timedelta(days=1)
    assert days.to_list() == [date(2024, 1, 1) + timedelta(days=i) for i in range(30)] + [
        date(2024, 3, 15)
    ]


def test_transaction_at_snapshot_timestamp_is_not_in_that_snapshot():
    base = customer_features(TINY)
    # A transaction at exactly the end of 1 Jan belongs to 2 Jan.
    extra = _tx([(_ts(2024, 1, 2), 1, 7, 999.0, "online", "NG")])
    shifted = customer_features(pl.concat([TINY, extra]))
    end_of_jan_1 = pl.col("event_timestamp") == _ts(2024, 1, 2)
    assert shifted.filter(end_of_jan_1).equals(base.filter(end_of_jan_1))
    assert not shifted.filter(pl.col("event_timestamp") == _ts(2024, 1, 3)).equals(
        base.filter(pl.col("event_timestamp") == _ts(2024, 1, 3))
    )


def _random_tx(seed: int, n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = _ts(2024, 1, 1)
    # Whole hours, so many transactions land exactly on midnight boundaries.
    hours = rng.integers(0, 24 * 70, n)
    return _tx(
        [
            (
                start + timedelta(hours=int(h)),
                int(rng.integers(0, 6)),
                int(rng.integers(0, 3)),
                float(rng.integers(1, 500)),
                str(rng.choice(["chip", "online", "swipe"])),
                str(rng.choice(["US", "GB", "DE", "FR"])),
            )
            for h in hours
        ]
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_every_snapshot_sees_only_transactions_before_its_timestamp(seed):
    """An independent brute-force oracle over half-open windows [end - N days, end)."""
    tx = _random_tx(seed)
    out = customer_features(tx)
    by_customer = {
        key: sorted(zip(g["event_timestamp"], g["amount"], g["channel"], g["country"], strict=True))
        for (key,), g in tx.group_by("customer_id")
    }
    assert out.height > 100
    for row in out.iter_rows(named=True):
        end = row["event_timestamp"]
        txs = by_customer[row["customer_id"]]

        def window(days: int, end: datetime = end, txs: list = txs) -> list:
            return [t for t in txs if end - timedelta(days=days) <= t[0] < end]

        d1, d7, d30 = window(1), window(7), window(30)
        assert row["cust_txn_count_1d"] == len(d1)
        assert row["cust_txn_count_7d"] == len(d7)
        assert row["cust_amount_sum_7d"] == pytest.approx(sum(t[1] for t in d7))
        assert row["cust_amount_mean_30d"] == pytest.approx(np.mean([t[1] for t in d30]))
        assert row["cust_amount_max_30d"] == max(t[1] for t in d30)
        share = sum(t[2] == "online" for t in d30) / len(d30)
        assert row["cust_online_share_30d"] == pytest.approx(share)
        assert row["cust_distinct_countries_30d"] == len({t[3] for t in d30})


def test_empty_input_gives_empty_frame_with_schema():
    out = merchant_features(TINY.clear())
    assert out.height == 0
    assert out.schema["event_timestamp"] == pl.Datetime("us", "UTC")


@pytest.mark.parametrize(
    ("frame", "as_of", "message"),
    [
        (TINY.drop("country"), None, "missing column(s) country"),
        (
            TINY.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None)),
            None,
            "event_timestamp: must be a timezone-aware",
        ),
        (
            TINY.with_columns(
                customer_id=pl.when(pl.col("amount") > 40).then(pl.col("customer_id"))
            ),
            None,
            "customer_id: must not be null",
        ),
        (TINY, datetime(2024, 1, 5), "as_of: must be timezone-aware"),
    ],
)
def test_bad_input_is_rejected_with_the_field_named(frame, as_of, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        customer_features(frame, as_of=as_of)

"""Daily entity snapshots of windowed transaction aggregates, computed with DuckDB SQL.

Each snapshot row describes one entity (a customer or a merchant) at the end of one calendar day
(UTC). Its `event_timestamp` is midnight at the start of the next day: the snapshot only becomes
visible once its day is complete, so a point-in-time join for an event at 10:00 on day D picks the
snapshot of day D-1 and can never see the event itself or anything after it.

Windows are calendar-day windows ending on the snapshot day, inclusive: `1d` is the day itself,
`7d` the day and the six before it, `30d` the day and the 29 before it. An entity gets one row per
day from its first transaction day while it had any transaction in the last 30 days, up to the
last complete day before `as_of` (or the last transaction day when `as_of` is not given).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

_TIMESTAMP = "event_timestamp"
_NEEDED = ("event_timestamp", "amount", "channel", "country")

# One SQL for every entity; the callers pick and rename the columns they publish.
# `$last_day` is NULL when no as_of was given: then the last transaction day closes the range.
_SQL = """
WITH tx AS (
    SELECT key, CAST(ts AS DATE) AS day, amount, channel, country FROM tx_input
),
bounds AS (
    SELECT coalesce(CAST($last_day AS DATE), max(day)) AS last_day FROM tx
),
daily AS (
    SELECT key, day,
           count(*) AS n,
           sum(amount) AS amount_sum,
           max(amount) AS amount_max,
           count(*) FILTER (WHERE channel = 'online') AS n_online,
           list(DISTINCT country) FILTER (WHERE country IS NOT NULL) AS countries
    FROM tx, bounds
    WHERE tx.day <= bounds.last_day
    GROUP BY key, day
),
span AS (
    SELECT key, min(day) AS first_day, least(max(day) + 29, any_value(bounds.last_day)) AS end_day
    FROM daily, bounds
    GROUP BY key
),
grid AS (
    SELECT key, CAST(unnest(generate_series(first_day, end_day, INTERVAL 1 DAY)) AS DATE) AS day
    FROM span
),
filled AS (
    SELECT grid.key, grid.day,
           coalesce(daily.n, 0) AS n,
           coalesce(daily.amount_sum, 0.0) AS amount_sum,
           daily.amount_max,
           coalesce(daily.n_online, 0) AS n_online,
           coalesce(daily.countries, []) AS countries
    FROM grid LEFT JOIN daily ON grid.key = daily.key AND grid.day = daily.day
),
windows AS (
    SELECT key, day,
           n AS count_1d,
           sum(n) OVER w7 AS count_7d,
           sum(amount_sum) OVER w7 AS amount_sum_7d,
           sum(n) OVER w30 AS count_30d,
           sum(amount_sum) OVER w30 AS amount_sum_30d,
           max(amount_max) OVER w30 AS amount_max_30d,
           sum(n_online) OVER w30 AS online_30d,
           len(list_distinct(flatten(list(countries) OVER w30))) AS distinct_countries_30d
    FROM filled
    WINDOW w7 AS (PARTITION BY key ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
           w30 AS (PARTITION BY key ORDER BY day ROWS BETWEEN 29 PRECEDING AND CURRENT ROW)
)
SELECT key,
       CAST(day + 1 AS TIMESTAMP) AS event_timestamp,
       CAST(count_1d AS BIGINT) AS count_1d,
       CAST(count_7d AS BIGINT) AS count_7d,
       CAST(amount_sum_7d AS DOUBLE) AS amount_sum_7d,
       CAST(amount_sum_30d / count_30d AS DOUBLE) AS amount_mean_30d,
       CAST(amount_max_30d AS DOUBLE) AS amount_max_30d,
       CAST(online_30d / count_30d AS DOUBLE) AS online_share_30d,
       CAST(distinct_countries_30d AS BIGINT) AS distinct_countries_30d
FROM windows
WHERE count_30d > 0
ORDER BY key, day
"""

_CUSTOMER_COLUMNS = {
    "count_1d": "cust_txn_count_1d",
    "count_7d": "cust_txn_count_7d",
    "amount_sum_7d": "cust_amount_sum_7d",
    "amount_mean_30d": "cust_amount_mean_30d",
    "amount_max_30d": "cust_amount_max_30d",
    "online_share_30d": "cust_online_share_30d",
    "distinct_countries_30d": "cust_distinct_countries_30d",
}

_MERCHANT_COLUMNS = {
    "count_7d": "merch_txn_count_7d",
    "amount_mean_30d": "merch_amount_mean_30d",
    "online_share_30d": "merch_online_share_30d",
}


def customer_features(tx: pl.DataFrame, *, as_of: datetime | None = None) -> pl.DataFrame:
    """Daily customer snapshots: counts, amounts, online share and countries over 1/7/30 days.

    Args:
        tx: Transactions with at least customer_id, event_timestamp (timezone-aware), amount,
            channel and country.
        as_of: Emit only snapshots complete by this instant (event_timestamp <= as_of); default
            is through the last transaction day. Must be timezone-aware.

    Returns:
        customer_id, event_timestamp (datetime[us, UTC], end of the snapshot day),
        cust_txn_count_1d, cust_txn_count_7d, cust_amount_sum_7d, cust_amount_mean_30d,
        cust_amount_max_30d, cust_online_share_30d, cust_distinct_countries_30d; sorted by
        customer_id, event_timestamp.

    Raises:
        ValueError: a needed column is missing, has the wrong type or holds nulls, or as_of is
            naive.
    """
    return _snapshots(tx, key="customer_id", columns=_CUSTOMER_COLUMNS, as_of=as_of)


def merchant_features(tx: pl.DataFrame, *, as_of: datetime | None = None) -> pl.DataFrame:
    """Daily merchant snapshots: 7-day count, 30-day mean amount and online share.

    Args:
        tx: Transactions with at least merchant_id, event_timestamp (timezone-aware), amount,
            channel and country.
        as_of: Emit only snapshots complete by this instant; see `customer_features`.

    Returns:
        merchant_id, event_timestamp, merch_txn_count_7d, merch_amount_mean_30d,
        merch_online_share_30d; sorted by merchant_id, event_timestamp.

    Raises:
        ValueError: as for `customer_features`.
    """
    return _snapshots(tx, key="merchant_id", columns=_MERCHANT_COLUMNS, as_of=as_of)


def _snapshots(
    tx: pl.DataFrame, *, key: str, columns: dict[str, str], as_of: datetime | None
) -> pl.DataFrame:
    _check_input(tx, key)
    last_day = None
    if as_of is not None:
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ValueError("as_of: must be timezone-aware (UTC), got a naive datetime")
        # The last complete day is the one that ended at or before as_of.
        last_day = as_of.astimezone(UTC).date() - timedelta(days=1)

    # DuckDB sees naive UTC timestamps, so day boundaries never depend on its session time zone.
    frame = tx.select(
        pl.col(key).cast(pl.Int64).alias("key"),
        pl.col(_TIMESTAMP).dt.convert_time_zone("UTC").dt.replace_time_zone(None).alias("ts"),
        pl.col("amount").cast(pl.Float64),
        pl.col("channel").cast(pl.String),
        pl.col("country").cast(pl.String),
    )
    con = duckdb.connect()
    try:
        # One thread: floating-point sums are then reproducible bit for bit across runs.
        con.execute("SET threads = 1")
        con.execute("SET enable_progress_bar = false")  # it would print into our stdout
        con.register("tx_input", frame.to_arrow())
        out = pl.from_arrow(con.sql(_SQL, params={"last_day": last_day}).to_arrow_table())
    finally:
        con.close()
    assert isinstance(out, pl.DataFrame)
    return out.select(
        pl.col("key").cast(pl.Int64).alias(key),
        pl.col("event_timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        *[pl.col(src).alias(dst) for src, dst in columns.items()],
    )


def _check_input(tx: pl.DataFrame, key: str) -> None:
    missing = [c for c in (key, *_NEEDED) if c not in tx.columns]
    if missing:
        raise ValueError(f"transactions: missing column(s) {', '.join(missing)}")
    dtype = tx.schema[_TIMESTAMP]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"{_TIMESTAMP}: must be a timezone-aware datetime (UTC), got {dtype}")
    if not tx.schema[key].is_integer():
        raise ValueError(f"{key}: must be an integer column, got {tx.schema[key]}")
    if not tx.schema["amount"].is_numeric():
        raise ValueError(f"amount: must be numeric, got {tx.schema['amount']}")
    for column in (key, _TIMESTAMP, "amount"):
        nulls = tx[column].null_count()
        if nulls:
            raise ValueError(f"{column}: must not be null ({nulls} null value(s))")

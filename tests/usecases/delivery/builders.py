"""Feature tables of the delivery use case, on loopline's sliding-window engine.

Both tables are `WindowedFeatures`, so the features stage builds them incrementally like any
other windowed table: a row at T describes, per entity, the orders placed and the deliveries
completed in [T - w, T) for w in 1h, 1d, 7d (see `loopline.features.windows`).

Durations are label-safe: a delivery counts from its `label_timestamp` (the instant it was
delivered and its duration became known), never from the instant its order was placed, so a
row at T only carries durations known before T. Distances and durations are summed as integers
(metres, seconds), which keeps increments equal to full recomputes.

Builders are referenced from the spec as `usecases.delivery.builders:<name>`.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from loopline.features.aggregates import WindowedFeatures
from loopline.features.windows import LAST_EVENT, TIMESTAMP, WindowSpec

ORDER_ID = "order_id"
LABEL_TIMESTAMP = "label_timestamp"
LABEL_VALUE = "duration_min"
WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)),
    ("7d", timedelta(days=7)),
)
_ALL = tuple(name for name, _ in WINDOWS)
_UTC_US = pl.Datetime("us", "UTC")


def _check_orders(orders: pl.DataFrame, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in orders.columns]
    if missing:
        raise ValueError(f"orders: missing column(s) {', '.join(missing)}")
    dtype = orders.schema[TIMESTAMP]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"{TIMESTAMP}: must be a timezone-aware datetime (UTC), got {dtype}")
    for column in needed:
        nulls = orders[column].null_count()
        if nulls:
            raise ValueError(f"orders: {column} must not be null ({nulls} null value(s))")


def _deliveries(labels: pl.DataFrame | None, orders: pl.DataFrame, key: str) -> pl.DataFrame:
    """Labels with the entity key of their order (the stage joins it in; direct calls may not)."""
    if labels is None:
        raise ValueError("labels: the deliveries table is needed (labels=...)")
    missing = [c for c in (LABEL_TIMESTAMP, LABEL_VALUE) if c not in labels.columns]
    if key not in labels.columns and ORDER_ID not in labels.columns:
        missing.append(f"{ORDER_ID} (or {key})")
    if missing:
        raise ValueError(f"labels: missing column(s) {', '.join(missing)}")
    dtype = labels.schema[LABEL_TIMESTAMP]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"{LABEL_TIMESTAMP}: must be a timezone-aware datetime (UTC), got {dtype}")
    if key not in labels.columns:
        labels = labels.join(orders.select(ORDER_ID, key), on=ORDER_ID, how="inner")
    for column in (key, LABEL_TIMESTAMP, LABEL_VALUE):
        nulls = labels[column].null_count()
        if nulls:
            raise ValueError(f"labels: {column} must not be null ({nulls} null value(s))")
    return labels


def _seconds(minutes: pl.Expr) -> pl.Expr:
    return (minutes.cast(pl.Float64) * 60).round().cast(pl.Int64)


def _mean(total: str, count: str, scale: float) -> pl.Expr:
    n = pl.col(count)
    return pl.when(n > 0).then(pl.col(total).cast(pl.Float64) / (n.cast(pl.Float64) * scale))


# --- couriers ----------------------------------------------------------------------------------


def _courier_stream(orders: pl.DataFrame, labels: pl.DataFrame | None) -> pl.DataFrame:
    _check_orders(orders, ("courier_id", TIMESTAMP, "distance_km"))
    done = _deliveries(labels, orders, "courier_id")
    zero, one = pl.lit(0, pl.Int64), pl.lit(1, pl.Int64)
    placed = orders.select(
        pl.col("courier_id").cast(pl.Int64),
        pl.col(TIMESTAMP).dt.convert_time_zone("UTC").cast(_UTC_US),
        one.alias("n"),
        (pl.col("distance_km").cast(pl.Float64) * 1000).round().cast(pl.Int64).alias("metres"),
        zero.alias("delivered"),
        zero.alias("seconds"),
    )
    # A delivery is an event at the instant it was known: it cannot reach an earlier row.
    arrived = done.select(
        pl.col("courier_id").cast(pl.Int64),
        pl.col(LABEL_TIMESTAMP).dt.convert_time_zone("UTC").cast(_UTC_US).alias(TIMESTAMP),
        zero.alias("n"),
        zero.alias("metres"),
        one.alias("delivered"),
        _seconds(pl.col(LABEL_VALUE)).alias("seconds"),
    )
    return pl.concat([placed, arrived])


def _courier_finish(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("courier_id"),
        pl.col(TIMESTAMP),
        *[pl.col(f"n__{w}").alias(f"courier_orders_{w}") for w in _ALL],
        _mean("metres__7d", "n__7d", 1000.0).alias("courier_distance_mean_7d"),
        pl.col("delivered__7d").alias("courier_deliveries_7d"),
        _mean("seconds__7d", "delivered__7d", 60.0).alias("courier_duration_mean_7d"),
        pl.col(LAST_EVENT).alias("courier_last_activity_epoch_us"),
    )


courier_activity = WindowedFeatures(
    name="courier_activity",
    window=WindowSpec(
        key="courier_id",
        windows=WINDOWS,
        measures=(("n", _ALL), ("metres", ("7d",)), ("delivered", ("7d",)), ("seconds", ("7d",))),
        recency=True,
    ),
    stream=_courier_stream,
    finish=_courier_finish,
    uses_labels=True,
)
"""Courier windows: orders in the last 1h, 1d, 7d; mean distance of the last 7 days' orders;
deliveries completed in the last 7 days and their mean duration (minutes); the time of the
courier's last order or delivery (epoch microseconds, for request-time recency)."""


# --- restaurants -------------------------------------------------------------------------------


def _restaurant_stream(orders: pl.DataFrame, labels: pl.DataFrame | None) -> pl.DataFrame:
    _check_orders(orders, ("restaurant_id", "courier_id", TIMESTAMP, "items"))
    done = _deliveries(labels, orders, "restaurant_id")
    zero, one = pl.lit(0, pl.Int64), pl.lit(1, pl.Int64)
    placed = orders.select(
        pl.col("restaurant_id").cast(pl.Int64),
        pl.col(TIMESTAMP).dt.convert_time_zone("UTC").cast(_UTC_US),
        one.alias("n"),
        pl.col("items").cast(pl.Int64),
        zero.alias("delivered"),
        zero.alias("seconds"),
        pl.col("courier_id").cast(pl.Int64),
    )
    arrived = done.select(
        pl.col("restaurant_id").cast(pl.Int64),
        pl.col(LABEL_TIMESTAMP).dt.convert_time_zone("UTC").cast(_UTC_US).alias(TIMESTAMP),
        zero.alias("n"),
        zero.alias("items"),
        one.alias("delivered"),
        _seconds(pl.col(LABEL_VALUE)).alias("seconds"),
        pl.lit(None, pl.Int64).alias("courier_id"),
    )
    return pl.concat([placed, arrived])


def _restaurant_finish(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("restaurant_id"),
        pl.col(TIMESTAMP),
        *[pl.col(f"n__{w}").alias(f"restaurant_orders_{w}") for w in _ALL],
        pl.col("items__1h").alias("restaurant_items_1h"),
        pl.col("distinct_courier_id__7d").alias("restaurant_distinct_couriers_7d"),
        pl.col("delivered__7d").alias("restaurant_deliveries_7d"),
        *[
            _mean(f"seconds__{w}", f"delivered__{w}", 60.0).alias(f"restaurant_duration_mean_{w}")
            for w in ("1d", "7d")
        ],
    )


restaurant_activity = WindowedFeatures(
    name="restaurant_activity",
    window=WindowSpec(
        key="restaurant_id",
        windows=WINDOWS,
        measures=(
            ("n", _ALL),
            ("items", ("1h",)),
            ("delivered", ("1d", "7d")),
            ("seconds", ("1d", "7d")),
        ),
        distinct=(("courier_id", ("7d",)),),
    ),
    stream=_restaurant_stream,
    finish=_restaurant_finish,
    uses_labels=True,
)
"""Restaurant windows: orders in the last 1h, 1d, 7d and items in the last hour (kitchen
load); distinct couriers of the last 7 days; deliveries completed in the last 7 days and the
mean duration (minutes) of those completed in the last 1 and 7 days."""

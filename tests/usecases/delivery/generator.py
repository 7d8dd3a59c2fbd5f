"""Seeded food-delivery data: orders and their delivery durations, as raw CSV batches.

The world: restaurants with a preparation time and a home zone, couriers with a vehicle and a
pace. Orders follow a lunch and a dinner peak and a weekly rhythm. How long an order takes,
in minutes, is

    preparation time of the restaurant
    + 1.2 per order the restaurant received in the hour before (kitchen load)
    + 0.5 per item
    + distance x minutes per km of the vehicle x the courier's pace
    + congestion at peak hours (center 4, inner 2, plus 3 for cars in the center)
    + noise (sd 2)

so a model learns it from the request fields (distance, items, zone, vehicle, hour) and from
features of the restaurant (recent load, mean duration of its past deliveries) and of the
courier (mean duration of its past deliveries). A delivery's label arrives when it is
delivered: `label_timestamp = event_timestamp + duration`.

Everything is vectorised with numpy and Polars and driven by one seeded generator: the same
config always gives the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ZONES = ("center", "inner", "suburb")
VEHICLES = ("bike", "scooter", "car")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f%:z"
LIVE_DIR = "live"

_US_PER_MIN = 60 * 1_000_000
_US_PER_HOUR = 60 * _US_PER_MIN
_US_PER_DAY = 24 * _US_PER_HOUR
_HOURS = np.array(
    [0.1, 0.05, 0.02, 0.02, 0.02, 0.05, 0.2, 0.4, 0.6, 0.8, 1.2, 2.4,
     2.8, 2.0, 1.0, 0.8, 0.9, 1.4, 2.6, 3.0, 2.4, 1.4, 0.8, 0.3]
)  # fmt: skip
_WEEKDAY = np.array([0.9, 0.9, 0.95, 1.0, 1.2, 1.3, 1.1])  # Monday first
_PEAK_HOURS = (11, 12, 13, 18, 19, 20)
_ZONE_KM = np.array([1.5, 3.0, 5.5])  # mean delivery distance per zone
_MIN_PER_KM = np.array([4.0, 2.6, 2.2])  # per vehicle
_PEAK_DELAY = np.array([4.0, 2.0, 0.0])  # per zone
_LOAD_MIN = 1.2
_ITEM_MIN = 0.5
_NOISE_SD = 2.0


@dataclass(frozen=True)
class DeliveryConfig:
    """What to simulate.

    Attributes:
        end: The history ends at this day's UTC midnight; the live day follows it.
        days: Days of history (>= 8, so that a week of warm-up leaves data to train on).
        orders_per_day: Mean orders per day (>= 1).
        couriers: Number of couriers (>= 1).
        restaurants: Number of restaurants (>= 1).
        seed: Seed of the random generator.
    """

    end: date
    days: int = 45
    orders_per_day: int = 600
    couriers: int = 60
    restaurants: int = 40
    seed: int = 5

    def __post_init__(self) -> None:
        for name, low in (("days", 8), ("orders_per_day", 1), ("couriers", 1), ("restaurants", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        if isinstance(self.end, datetime) or not isinstance(self.end, date):
            raise ValueError(f"end: must be a datetime.date, got {self.end!r}")

    @property
    def start(self) -> date:
        """First day of the history."""
        return self.end - timedelta(days=self.days)


@dataclass(frozen=True)
class DeliveryData:
    """Generated frames.

    Attributes:
        orders: The history's orders (the `orders` table of the spec).
        deliveries: Their labels (the `deliveries` table), also those delivered after the end.
        live: One more day of orders, never delivered: traffic for the prediction API.
        restaurants: Restaurant traits (restaurant_id, prep_min, zone).
        couriers: Courier traits (courier_id, vehicle, pace).
    """

    orders: pl.DataFrame
    deliveries: pl.DataFrame
    live: pl.DataFrame
    restaurants: pl.DataFrame
    couriers: pl.DataFrame


def generate(config: DeliveryConfig) -> DeliveryData:
    """Simulate `config.days` days of orders plus one live day.

    Returns:
        The frames; orders sorted by event_timestamp, with a sequential order_id.
    """
    rng = np.random.default_rng(config.seed)
    n_rest, n_cour = config.restaurants, config.couriers
    prep = rng.uniform(6.0, 22.0, n_rest)
    rest_zone = rng.choice(3, n_rest, p=[0.4, 0.4, 0.2])
    popularity = rng.lognormal(0.0, 0.6, n_rest)
    vehicle_of = rng.choice(3, n_cour, p=[0.35, 0.4, 0.25])
    pace = rng.uniform(0.85, 1.2, n_cour)
    activity = rng.gamma(4.0, 1.0, n_cour)

    days = config.days + 1
    first_us = _epoch_us(config.start)
    day_index = np.arange(days)
    weekdays = (config.start.weekday() + day_index) % 7
    counts = rng.poisson(config.orders_per_day * _WEEKDAY[weekdays])
    day = np.repeat(day_index, counts)
    n = day.size
    hour = rng.choice(24, n, p=_HOURS / _HOURS.sum())
    t = first_us + day * _US_PER_DAY + hour * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, n)
    order = np.argsort(t, kind="stable")
    t, hour = t[order], hour[order]

    restaurant = rng.choice(n_rest, n, p=popularity / popularity.sum())
    courier = rng.choice(n_cour, n, p=activity / activity.sum())
    vehicle = np.where(rng.random(n) < 0.9, vehicle_of[courier], rng.integers(0, 3, n))
    zone = np.where(rng.random(n) < 0.7, rest_zone[restaurant], rng.integers(0, 3, n))
    distance = np.clip(rng.gamma(3.0, _ZONE_KM[zone] / 3.0), 0.1, 30.0).round(2)
    items = np.clip(1 + rng.poisson(1.5, n), 1, 15)
    load = _orders_in_hour_before(restaurant, t)
    peak = np.isin(hour, _PEAK_HOURS)
    congestion = peak * (_PEAK_DELAY[zone] + 3.0 * ((zone == 0) & (vehicle == 2)))
    duration = (
        prep[restaurant]
        + _LOAD_MIN * load
        + _ITEM_MIN * items
        + distance * _MIN_PER_KM[vehicle] * pace[courier]
        + congestion
        + rng.normal(0.0, _NOISE_SD, n)
    )
    duration = np.clip(duration, 4.0, 240.0).round(2)
    delivered = t + np.round(duration * _US_PER_MIN).astype(np.int64)

    ids = pl.Series(np.arange(n)).cast(pl.String).str.zfill(7)
    orders = pl.DataFrame(
        {
            "order_id": ("o" + ids).to_list() if n else [],
            "event_timestamp": _utc(t),
            "courier_id": courier.astype(np.int64),
            "restaurant_id": restaurant.astype(np.int64),
            "distance_km": distance,
            "items": items.astype(np.int64),
            "zone": _names(ZONES, zone),
            "vehicle": _names(VEHICLES, vehicle),
            "hour": hour.astype(np.int64),
        },
        schema_overrides={"order_id": pl.String},
    )
    labels = pl.DataFrame(
        {"order_id": orders["order_id"], "label_timestamp": _utc(delivered),
         "duration_min": duration},
    )  # fmt: skip
    history = day < config.days
    return DeliveryData(
        orders=orders.filter(history),
        deliveries=labels.filter(history).sort("label_timestamp", "order_id"),
        live=orders.filter(~history),
        restaurants=pl.DataFrame(
            {"restaurant_id": np.arange(n_rest), "prep_min": prep, "zone": _names(ZONES, rest_zone)}
        ),
        couriers=pl.DataFrame(
            {"courier_id": np.arange(n_cour), "vehicle": _names(VEHICLES, vehicle_of), "pace": pace}
        ),
    )


def write_raw(data: DeliveryData, raw_dir: Path, *, batch_days: int = 7) -> dict[str, list[Path]]:
    """Write the data as the raw files the ingest stage discovers.

    Layout: `orders/orders_<day>.csv` (one file per `batch_days` days of event time, named by
    its first day), `deliveries/deliveries_<day>.csv` (batched the same way by delivery time),
    and `live/orders.csv` (where `loopline replay` looks for traffic).

    Returns:
        Table name (orders, deliveries, live) -> files written, in time order.
    """
    if batch_days < 1:
        raise ValueError(f"batch_days: must be >= 1, got {batch_days}")
    start = data.orders["event_timestamp"].min()
    assert isinstance(start, datetime)
    first = start.date()
    written: dict[str, list[Path]] = {}
    for table, frame, column in (
        ("orders", data.orders, "event_timestamp"),
        ("deliveries", data.deliveries, "label_timestamp"),
    ):
        folder = raw_dir / table
        folder.mkdir(parents=True, exist_ok=True)
        batch = (pl.col(column).dt.date() - pl.lit(first)).dt.total_days() // batch_days
        written[table] = []
        batches = frame.with_columns(_batch=batch).group_by("_batch", maintain_order=True)
        for (index,), part in batches:
            path = folder / f"{table}_{first + timedelta(days=int(index) * batch_days)}.csv"
            part.drop("_batch").write_csv(path, datetime_format=TIMESTAMP_FORMAT)
            written[table].append(path)
    live = raw_dir / LIVE_DIR / "orders.csv"
    live.parent.mkdir(parents=True, exist_ok=True)
    data.live.write_csv(live, datetime_format=TIMESTAMP_FORMAT)
    written["live"] = [live]
    return written


def _orders_in_hour_before(restaurant: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per order: the restaurant's orders in [t - 1h, t), the order itself excluded."""
    span = int(t.max() - t.min()) + 2 * _US_PER_HOUR if t.size else 0
    key = restaurant.astype(np.int64) * span + (t - (t.min() if t.size else 0))
    ordered = np.sort(key)
    before = np.searchsorted(ordered, key, side="left")
    opened = np.searchsorted(ordered, key - _US_PER_HOUR, side="left")
    return before - opened


def _epoch_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _utc(us: np.ndarray) -> pl.Series:
    return pl.Series(us.astype(np.int64)).cast(pl.Datetime("us", "UTC"))


def _names(values: tuple[str, ...], index: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(pl.Series(index, dtype=pl.Int64))

"""Seeded demo data for the fraud use case: customers, merchants, transactions and late labels.

The generator simulates a card-transaction stream that a fraud model can learn from:

- Customers have stable traits: a home country (mostly US), a typical spend (lognormal), an
  activity rate of a few transactions per week, a share of online purchases, a preferred
  in-person channel, and a risk that makes them a more likely fraud victim.
- Merchants have a category (with a typical amount scale per category), a country and a size
  (bigger merchants are chosen more often).
- Legitimate transactions follow a weekly and an hourly rhythm (few at night). In-person
  purchases happen in the customer's home country or, when travelling, abroad at a merchant of
  that country; online purchases are made from home (mostly) at any merchant that sells online.
  ``country`` is where the purchase was made from.
- Fraud is injected as extra transactions of at-risk customers, in three patterns: large
  purchases far from home, online or by swiped (cloned) card, mostly at night; card testing
  (bursts of several small online transactions within one hour); and a minority that looks like
  the customer's own habits (so the task is learnable but not trivial).
- With ``drift_start_day`` set, from that day on every amount is multiplied by
  ``drift_amount_factor`` and half of the fraud budget moves to a pattern absent before: online
  electronics purchases from Nigeria (NG) at night, for ordinary amounts. The overall fraud rate
  stays near ``fraud_rate``; its mix changes.
- Labels arrive late, like chargebacks: fraud is confirmed 1 to 10 days after the event; a
  legitimate transaction counts as negative once the spec's ``labels.delay_days`` have passed.

Everything is vectorised with numpy and Polars and driven by one seeded generator, so the same
config always yields identical frames. Category values are read from the use-case spec.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

from loopline.spec import UseCaseSpec, load_spec

USE_CASE = "fraud"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f%:z"  # ISO-8601, e.g. 2026-01-01T08:15:00.000000+00:00
MANIFEST_NAME = "demo.json"

HOME_COUNTRY = "US"
ONLINE = "online"
DRIFT_COUNTRY = "NG"
DRIFT_CATEGORY = "electronics"

_US_PER_HOUR = 3_600 * 1_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
_MAX_CUSTOMER_DAYS = 20_000_000  # customers x days; bounds the memory of the daily-count matrix

# Mixes and scales are keyed by category value; a value the spec adds later gets the default.
_CATEGORY_SHARE = {
    "grocery": 3.0,
    "restaurants": 3.0,
    "gas": 1.5,
    "travel": 0.7,
    "electronics": 0.8,
    "fashion": 1.2,
    "entertainment": 1.0,
    "online_services": 1.0,
    "health": 1.0,
    "home": 1.0,
}
_CATEGORY_SCALE = {
    "grocery": 1.0,
    "restaurants": 0.8,
    "gas": 1.0,
    "travel": 6.0,
    "electronics": 4.0,
    "fashion": 2.0,
    "entertainment": 1.2,
    "online_services": 0.5,
    "health": 1.5,
    "home": 2.5,
}
# Share of a category's sales made online; the rest is in person.
_ONLINE_AFFINITY = {
    "grocery": 0.1,
    "restaurants": 0.15,
    "gas": 0.0,
    "travel": 0.7,
    "electronics": 0.6,
    "fashion": 0.5,
    "entertainment": 0.5,
    "online_services": 1.0,
    "health": 0.2,
    "home": 0.4,
}
_FRAUD_CATEGORY = {
    "electronics": 5.0,
    "travel": 2.5,
    "fashion": 2.0,
    "home": 1.5,
    "entertainment": 1.0,
    "online_services": 1.0,
}
_CARD_TEST_CATEGORY = {"online_services": 5.0, "entertainment": 2.0}

_HOME_SHARE = {
    "US": 0.80,
    "CA": 0.04,
    "GB": 0.03,
    "MX": 0.03,
    "DE": 0.02,
    "FR": 0.02,
    "ES": 0.01,
    "IT": 0.01,
    "NL": 0.01,
    "BR": 0.015,
    "IN": 0.015,
    "NG": 0.005,
}
_MERCHANT_COUNTRY_SHARE = {**_HOME_SHARE, "US": 0.85}
_TRAVEL_WEIGHT = {
    "US": 3.0,
    "CA": 3.0,
    "MX": 3.0,
    "GB": 2.0,
    "FR": 2.0,
    "DE": 1.5,
    "ES": 1.5,
    "IT": 1.5,
    "NL": 1.0,
    "BR": 0.5,
    "IN": 0.5,
    "NG": 0.2,
}
# Where fraudsters operate from: far from home. NG is kept for the drift pattern.
_FRAUD_COUNTRY_WEIGHT = {
    "BR": 3.0,
    "IN": 3.0,
    "MX": 1.5,
    "GB": 1.0,
    "DE": 1.0,
    "FR": 1.0,
    "ES": 1.0,
    "IT": 1.0,
    "NL": 1.0,
    "CA": 0.5,
    "US": 0.5,
    DRIFT_COUNTRY: 0.0,
}
_IN_PERSON_PREFERENCE = {"chip": 0.5, "contactless": 0.35, "swipe": 0.15}
_MERCHANT_SIZES = ("small", "medium", "large")
_SIZE_SHARE = np.array([0.6, 0.3, 0.1])
_SIZE_POPULARITY = np.array([1.0, 4.0, 15.0])

_LEGIT_HOURS = np.array(
    [0.15, 0.1, 0.07, 0.05, 0.05, 0.1, 0.3, 0.6, 0.9, 1.0, 1.1, 1.3,
     1.5, 1.3, 1.1, 1.1, 1.2, 1.4, 1.5, 1.4, 1.2, 0.9, 0.6, 0.3]
)  # fmt: skip
_NIGHT_HOURS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.6] + [0.0] * 17 + [0.4])
_FRAUD_HOURS = 0.45 * _LEGIT_HOURS / _LEGIT_HOURS.sum() + 0.55 * _NIGHT_HOURS / _NIGHT_HOURS.sum()
_DRIFT_HOURS = np.array([1.0] * 5 + [0.0] * 19)
_WEEKDAY_FACTOR = np.array([0.92, 0.95, 0.97, 1.0, 1.12, 1.18, 0.86])  # Monday first

_SHARE_BIG = 0.45  # of the base fraud budget; card testing and look-alike fraud share the rest
_SHARE_LOOKALIKE = 0.17
_DRIFT_SHARE = 0.5  # of the fraud budget on drifted days
_BURST_SIZES = (3, 8)  # card-testing burst size, half-open range
_TRAVEL_PROB = 0.04
_ONLINE_FROM_HOME = 0.9
_PREFERRED_CHANNEL_PROB = 0.75


class DemoConfigError(ValueError):
    """A demo config breaks a rule; the message names the field."""


@dataclass(frozen=True)
class DemoConfig:
    """What to simulate.

    Attributes:
        days: Length of the simulated period in days (>= 1).
        customers: Number of customers (>= 1).
        merchants: Number of merchants (>= 1); defaults to ``max(50, customers // 10)``.
        seed: Seed of the random generator (>= 0).
        start: First simulated day (UTC midnight).
        drift_start_day: Day index from which amounts inflate and the new fraud pattern
            appears; ``None`` for no drift.
        drift_amount_factor: Multiplier of every amount from ``drift_start_day`` on (> 0).
        fraud_rate: Target share of fraudulent transactions (0 < rate <= 0.5).
    """

    days: int
    customers: int
    merchants: int | None = None
    seed: int = 7
    start: date = date(2026, 1, 1)
    drift_start_day: int | None = None
    drift_amount_factor: float = 1.6
    fraud_rate: float = 0.015

    def __post_init__(self) -> None:
        _set(self, "days", _check_int("days", self.days, minimum=1))
        _set(self, "customers", _check_int("customers", self.customers, minimum=1))
        if self.merchants is None:
            _set(self, "merchants", max(50, self.customers // 10))
        else:
            _set(self, "merchants", _check_int("merchants", self.merchants, minimum=1))
        _set(self, "seed", _check_int("seed", self.seed, minimum=0))
        if isinstance(self.start, datetime) or not isinstance(self.start, date):
            raise DemoConfigError(f"start: must be a datetime.date, got {self.start!r}")
        if self.drift_start_day is not None:
            day = _check_int("drift_start_day", self.drift_start_day, minimum=0)
            if day >= self.days:
                raise DemoConfigError(
                    f"drift_start_day: must be a day index below days ({self.days}), got {day}"
                )
            _set(self, "drift_start_day", day)
        factor = _check_real("drift_amount_factor", self.drift_amount_factor)
        if factor <= 0:
            raise DemoConfigError(f"drift_amount_factor: must be > 0, got {factor}")
        _set(self, "drift_amount_factor", factor)
        rate = _check_real("fraud_rate", self.fraud_rate)
        if not 0 < rate <= 0.5:
            raise DemoConfigError(f"fraud_rate: must be in (0, 0.5], got {rate}")
        _set(self, "fraud_rate", rate)
        if self.days * self.customers > _MAX_CUSTOMER_DAYS:
            raise DemoConfigError(
                f"days, customers: days x customers must be <= {_MAX_CUSTOMER_DAYS:,}, "
                f"got {self.days} x {self.customers}"
            )


def _set(config: DemoConfig, name: str, value: object) -> None:
    object.__setattr__(config, name, value)  # normalising a frozen dataclass in __post_init__


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DemoConfigError(f"{name}: must be an integer, got {value!r}")
    if value < minimum:
        raise DemoConfigError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DemoConfigError(f"{name}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DemoConfigError(f"{name}: must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class DemoData:
    """A generated demo data set.

    Attributes:
        transactions: The events table, columns exactly as the spec's ``events`` declares.
        labels: One row per transaction: transaction_id, label_timestamp, is_fraud.
        customers: Stable customer traits.
        merchants: Stable merchant traits.
        config: The config that produced it.
    """

    transactions: pl.DataFrame
    labels: pl.DataFrame
    customers: pl.DataFrame
    merchants: pl.DataFrame
    config: DemoConfig


@dataclass(frozen=True)
class _World:
    """Category values, customer and merchant traits as index arrays, for the event samplers."""

    categories: list[str]
    channels: list[str]
    countries: list[str]
    in_person: np.ndarray  # channel indices usable in person
    online: int  # channel index of "online"
    home: np.ndarray  # per customer: country index
    spend: np.ndarray
    online_share: np.ndarray
    preferred: np.ndarray  # per customer: position in `in_person`
    m_category: np.ndarray  # per merchant: category index
    m_country: np.ndarray
    m_scale: np.ndarray
    m_size: np.ndarray  # per merchant: index in _MERCHANT_SIZES
    m_popularity: np.ndarray
    start: date
    start_us: int
    days: int


@dataclass
class _Events:
    customer: np.ndarray
    ts: np.ndarray  # microseconds since the epoch, UTC
    merchant: np.ndarray
    channel: np.ndarray
    country: np.ndarray
    amount: np.ndarray
    is_fraud: np.ndarray


def generate_demo(config: DemoConfig, *, spec: UseCaseSpec | None = None) -> DemoData:
    """Simulate customers, merchants, a transaction stream and its late labels.

    Args:
        config: What to simulate; the same config always gives identical frames.
        spec: The fraud use-case spec; loaded with ``load_spec("fraud")`` when omitted.

    Returns:
        The generated frames: transactions sorted by event time with ids ``tx-00000001``…,
        labels (one per transaction, sorted by label time), customers and merchants.

    Raises:
        ValueError: the spec lacks a column or category value the simulation relies on.
    """
    spec = spec or load_spec(USE_CASE)
    rng = np.random.default_rng(config.seed)
    categories = _category_values(spec, "merchant_category", required=(DRIFT_CATEGORY,))
    channels = _category_values(spec, "channel", required=(ONLINE,))
    countries = _category_values(spec, "country", required=(HOME_COUNTRY, DRIFT_COUNTRY))

    customers, world = _make_world(rng, config, categories, channels, countries)
    merchants = _merchant_frame(world)

    legit, per_day = _legit_events(rng, world, customers["activity_per_week"].to_numpy() / 7)
    fraud = _fraud_events(rng, world, config, customers["risk"].to_numpy(), per_day)
    events = _concat([legit, *fraud])

    day = (events.ts - world.start_us) // _US_PER_DAY
    if config.drift_start_day is not None:
        events.amount = np.where(
            day >= config.drift_start_day, events.amount * config.drift_amount_factor, events.amount
        )
    amount_rule = spec.events.columns["amount"]
    events.amount = np.clip(
        np.round(events.amount, 2),
        amount_rule.min if amount_rule.min is not None else 0.01,
        amount_rule.max if amount_rule.max is not None else np.inf,
    )

    order = np.argsort(events.ts, kind="stable")
    ts = events.ts[order]
    is_fraud = events.is_fraud[order]
    delay = np.where(
        is_fraud == 1,
        rng.integers(_US_PER_DAY, 10 * _US_PER_DAY + 1, size=ts.size),
        spec.labels.delay_days * _US_PER_DAY,
    )
    ids = pl.int_range(1, ts.size + 1, dtype=pl.Int64, eager=True).cast(pl.String)
    ids = ("tx-" + ids.str.zfill(8)).alias("transaction_id")

    transactions = pl.DataFrame(
        {
            "transaction_id": ids,
            "event_timestamp": _utc(ts),
            "customer_id": pl.Series(events.customer[order] + 1, dtype=pl.Int64),
            "merchant_id": pl.Series(events.merchant[order] + 1, dtype=pl.Int64),
            "amount": pl.Series(events.amount[order], dtype=pl.Float64),
            "merchant_category": _names(categories, world.m_category[events.merchant[order]]),
            "channel": _names(channels, events.channel[order]),
            "country": _names(countries, events.country[order]),
            "hour": pl.Series((ts // _US_PER_HOUR) % 24, dtype=pl.Int64),
        }
    ).select(list(spec.events.columns))
    labels = (
        pl.DataFrame(
            {
                "transaction_id": ids,
                "label_timestamp": _utc(ts + delay),
                "is_fraud": pl.Series(is_fraud, dtype=pl.Int64),
            }
        )
        .select(list(spec.labels.columns))
        .sort(spec.labels.timestamp, "transaction_id")
    )
    return DemoData(transactions, labels, customers, merchants, config)


def _category_values(spec: UseCaseSpec, column: str, *, required: tuple[str, ...]) -> list[str]:
    rule = spec.events.columns.get(column)
    if rule is None or not rule.values:
        raise ValueError(f"spec '{spec.name}': events column '{column}' with categories is needed")
    missing = [v for v in required if v not in rule.values]
    if missing:
        raise ValueError(
            f"spec '{spec.name}': events column '{column}' must allow {missing} "
            f"for the demo simulation"
        )
    return list(rule.values)


def _weights(values: list[str], table: dict[str, float], default: float) -> np.ndarray:
    return np.array([table.get(v, default) for v in values], dtype=np.float64)


def _make_world(
    rng: np.random.Generator,
    config: DemoConfig,
    categories: list[str],
    channels: list[str],
    countries: list[str],
) -> tuple[pl.DataFrame, _World]:
    n_c, n_m = config.customers, config.merchants
    assert n_m is not None  # set by DemoConfig.__post_init__

    in_person_names = [c for c in channels if c != ONLINE]
    in_person = np.array([channels.index(c) for c in in_person_names], dtype=np.int64)
    home = _choice(rng, _weights(countries, _HOME_SHARE, 0.01), n_c)
    spend = np.round(rng.lognormal(math.log(35.0), 0.55, n_c), 2)
    rate = np.clip(rng.gamma(2.0, 0.25, n_c), 0.05, None)  # per day: ~3.5 a week
    online_share = rng.beta(2.0, 5.0, n_c)
    if in_person_names:
        preferred = _choice(rng, _weights(in_person_names, _IN_PERSON_PREFERENCE, 0.1), n_c)
    else:
        preferred = np.zeros(n_c, dtype=np.int64)
        online_share = np.ones(n_c)
    risk = rng.beta(0.6, 12.0, n_c)

    # The first merchants cover every category and every country, so that each country has an
    # in-person merchant and each category exists when there are enough merchants.
    m_category = _choice(rng, _weights(categories, _CATEGORY_SHARE, 1.0), n_m)
    cover = min(n_m, len(categories))
    m_category[:cover] = rng.permutation(len(categories))[:cover]
    m_country = _choice(rng, _weights(countries, _MERCHANT_COUNTRY_SHARE, 0.01), n_m)
    cover = min(n_m, len(countries))
    m_country[:cover] = rng.permutation(len(countries))[:cover]
    m_size = _choice(rng, _SIZE_SHARE, n_m)
    m_popularity = _SIZE_POPULARITY[m_size] * rng.lognormal(0.0, 0.3, n_m)
    m_scale = np.round(
        _weights(categories, _CATEGORY_SCALE, 1.0)[m_category] * rng.lognormal(0.0, 0.25, n_m), 3
    )

    names = pl.Series(in_person_names or [ONLINE], dtype=pl.String)
    customers = pl.DataFrame(
        {
            "customer_id": pl.Series(np.arange(1, n_c + 1), dtype=pl.Int64),
            "home_country": _names(countries, home),
            "typical_spend": pl.Series(spend, dtype=pl.Float64),
            "activity_per_week": pl.Series(np.round(rate * 7, 3), dtype=pl.Float64),
            "online_share": pl.Series(np.round(online_share, 3), dtype=pl.Float64),
            "preferred_channel": names.gather(preferred),
            "risk": pl.Series(np.round(risk, 4), dtype=pl.Float64),
        }
    )
    world = _World(
        categories=categories,
        channels=channels,
        countries=countries,
        in_person=in_person,
        online=channels.index(ONLINE),
        home=home,
        spend=spend,
        online_share=customers["online_share"].to_numpy(),
        preferred=preferred,
        m_category=m_category,
        m_country=m_country,
        m_scale=m_scale,
        m_size=m_size,
        m_popularity=m_popularity,
        start=config.start,
        start_us=_epoch_us(config.start),
        days=config.days,
    )
    return customers, world


def _merchant_frame(world: _World) -> pl.DataFrame:
    n_m = world.m_category.size
    return pl.DataFrame(
        {
            "merchant_id": pl.Series(np.arange(1, n_m + 1), dtype=pl.Int64),
            "merchant_category": _names(world.categories, world.m_category),
            "country": _names(world.countries, world.m_country),
            "size": _names(list(_MERCHANT_SIZES), world.m_size),
            "amount_scale": pl.Series(world.m_scale, dtype=pl.Float64),
        }
    )


def _legit_events(
    rng: np.random.Generator, world: _World, rate_per_day: np.ndarray
) -> tuple[_Events, np.ndarray]:
    """Legitimate purchases; also returns the number of events per day."""
    weekday = (world.start.weekday() + np.arange(world.days)) % 7
    counts = rng.poisson(rate_per_day[:, None] * _WEEKDAY_FACTOR[weekday][None, :])
    cell = np.repeat(np.arange(counts.size), counts.ravel())
    customer, day = np.divmod(cell, world.days)
    hour = _choice(rng, _LEGIT_HOURS, cell.size)
    events = _habitual(rng, world, customer, day, hour, amount_factor=1.0)
    return events, counts.sum(axis=0)


def _habitual(
    rng: np.random.Generator,
    world: _World,
    customer: np.ndarray,
    day: np.ndarray,
    hour: np.ndarray,
    *,
    amount_factor: float,
) -> _Events:
    """Purchases that follow each customer's habits (channel, country, merchants, amounts)."""
    n = customer.size
    is_online = rng.random(n) < world.online_share[customer]
    channel = np.full(n, world.online, dtype=np.int64)
    k = world.in_person.size
    if k:
        position = world.preferred[customer]
        if k > 1:
            other = (position + rng.integers(1, k, n)) % k
            position = np.where(rng.random(n) < _PREFERRED_CHANNEL_PROB, position, other)
        channel = np.where(is_online, world.online, world.in_person[position])

    country = world.home[customer].copy()
    travelling = ~is_online & (rng.random(n) < _TRAVEL_PROB)
    country[travelling] = _other_country(
        rng, country[travelling], _weights(world.countries, _TRAVEL_WEIGHT, 1.0)
    )

    affinity = _weights(world.categories, _ONLINE_AFFINITY, 0.3)[world.m_category]
    merchant = np.empty(n, dtype=np.int64)
    merchant[is_online] = _pick_merchants(
        rng, world, world.m_popularity * affinity, by_country=None, size=int(is_online.sum())
    )
    merchant[~is_online] = _pick_merchants(
        rng, world, world.m_popularity * (1.0 - affinity), by_country=country[~is_online]
    )
    from_abroad = is_online & (rng.random(n) >= _ONLINE_FROM_HOME)
    country[from_abroad] = world.m_country[merchant[from_abroad]]

    amount = (
        world.spend[customer]
        * world.m_scale[merchant]
        * rng.lognormal(math.log(amount_factor), 0.5, n)
    )
    ts = _timestamps(rng, world, day, hour)
    return _Events(customer, ts, merchant, channel, country, amount, np.zeros(n, dtype=np.int64))


def _fraud_events(
    rng: np.random.Generator,
    world: _World,
    config: DemoConfig,
    risk: np.ndarray,
    legit_per_day: np.ndarray,
) -> list[_Events]:
    n_legit = int(legit_per_day.sum())
    if n_legit == 0:
        return []
    total = round(n_legit * config.fraud_rate / (1.0 - config.fraud_rate))
    drifted = np.zeros(world.days, dtype=bool)
    if config.drift_start_day is not None:
        drifted[config.drift_start_day :] = True
    base_weight = legit_per_day * np.where(drifted, 1.0 - _DRIFT_SHARE, 1.0)
    n_base = round(total * base_weight.sum() / n_legit)
    n_drift = total - n_base
    n_big = round(n_base * _SHARE_BIG)
    n_lookalike = round(n_base * _SHARE_LOOKALIKE)
    mean_burst = (_BURST_SIZES[0] + _BURST_SIZES[1] - 1) / 2
    n_bursts = round((n_base - n_big - n_lookalike) / mean_burst)
    victim_p = risk / risk.sum()

    def victims_and_days(size: int, day_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _choice(rng, victim_p, size), _choice(rng, day_weight, size)

    out = [
        _big_purchases(rng, world, *victims_and_days(n_big, base_weight)),
        _card_testing(rng, world, *victims_and_days(n_bursts, base_weight)),
    ]
    customer, day = victims_and_days(n_lookalike, base_weight)
    lookalike = _habitual(
        rng, world, customer, day, _choice(rng, _LEGIT_HOURS, customer.size), amount_factor=1.3
    )
    lookalike.is_fraud[:] = 1
    out.append(lookalike)
    if n_drift > 0:
        out.append(_drift_pattern(rng, world, *victims_and_days(n_drift, legit_per_day * drifted)))
    return out


def _big_purchases(
    rng: np.random.Generator, world: _World, customer: np.ndarray, day: np.ndarray
) -> _Events:
    """Large purchases, mostly online or by swiped card, mostly far from home, often at night."""
    n = customer.size
    is_online = rng.random(n) < 0.8
    in_person = world.in_person
    swipe = world.channels.index("swipe") if "swipe" in world.channels else world.online
    if not in_person.size:
        is_online[:] = True
    channel = np.where(is_online, world.online, swipe)
    country = world.home[customer].copy()
    abroad = rng.random(n) < 0.75
    country[abroad] = _other_country(
        rng, country[abroad], _weights(world.countries, _FRAUD_COUNTRY_WEIGHT, 1.0)
    )
    affinity = _weights(world.categories, _ONLINE_AFFINITY, 0.3)[world.m_category]
    lure = _weights(world.categories, _FRAUD_CATEGORY, 0.3)[world.m_category]
    merchant = np.empty(n, dtype=np.int64)
    merchant[is_online] = _pick_merchants(
        rng, world, world.m_popularity * affinity * lure, by_country=None, size=int(is_online.sum())
    )
    merchant[~is_online] = _pick_merchants(
        rng, world, world.m_popularity * (1.0 - affinity) * lure, by_country=country[~is_online]
    )
    amount = world.spend[customer] * world.m_scale[merchant] * rng.lognormal(math.log(3.0), 0.5, n)
    ts = _timestamps(rng, world, day, _choice(rng, _FRAUD_HOURS, n))
    return _Events(customer, ts, merchant, channel, country, amount, np.ones(n, dtype=np.int64))


def _card_testing(
    rng: np.random.Generator, world: _World, customer: np.ndarray, day: np.ndarray
) -> _Events:
    """Bursts of several small online purchases at one merchant within one hour."""
    n_bursts = customer.size
    size = rng.integers(*_BURST_SIZES, n_bursts)
    start = _timestamps(rng, world, day, _choice(rng, _FRAUD_HOURS, n_bursts))
    start = np.minimum(start, world.start_us + world.days * _US_PER_DAY - _US_PER_HOUR)
    country = world.home[customer].copy()
    abroad = rng.random(n_bursts) < 0.65
    country[abroad] = _other_country(
        rng, country[abroad], _weights(world.countries, _FRAUD_COUNTRY_WEIGHT, 1.0)
    )
    affinity = _weights(world.categories, _ONLINE_AFFINITY, 0.3)[world.m_category]
    lure = _weights(world.categories, _CARD_TEST_CATEGORY, 0.3)[world.m_category]
    merchant = _pick_merchants(
        rng, world, world.m_popularity * affinity * lure, by_country=None, size=n_bursts
    )

    burst = np.repeat(np.arange(n_bursts), size)
    n = burst.size
    ts = start[burst] + rng.integers(0, _US_PER_HOUR, n)
    amount = rng.uniform(0.5, 4.0, n)
    channel = np.full(n, world.online, dtype=np.int64)
    return _Events(
        customer[burst],
        ts,
        merchant[burst],
        channel,
        country[burst],
        amount,
        np.ones(n, dtype=np.int64),
    )


def _drift_pattern(
    rng: np.random.Generator, world: _World, customer: np.ndarray, day: np.ndarray
) -> _Events:
    """The pattern that appears with drift: online electronics from NG at night, usual amounts."""
    n = customer.size
    electronics = world.m_category == world.categories.index(DRIFT_CATEGORY)
    merchant = _pick_merchants(
        rng, world, world.m_popularity * electronics, by_country=None, size=n
    )
    amount = world.spend[customer] * world.m_scale[merchant] * rng.lognormal(0.2, 0.4, n)
    ts = _timestamps(rng, world, day, _choice(rng, _DRIFT_HOURS, n))
    return _Events(
        customer,
        ts,
        merchant,
        np.full(n, world.online, dtype=np.int64),
        np.full(n, world.countries.index(DRIFT_COUNTRY), dtype=np.int64),
        amount,
        np.ones(n, dtype=np.int64),
    )


def _choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(weights.size, size=size, p=weights / weights.sum()).astype(np.int64)


def _other_country(rng: np.random.Generator, home: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each home country, a different country drawn by weight (home itself if none)."""
    out = home.copy()
    for h in np.unique(home):
        rows = np.flatnonzero(home == h)
        w = weights.copy()
        w[h] = 0.0
        if w.sum() > 0:
            out[rows] = _choice(rng, w, rows.size)
    return out


def _pick_merchants(
    rng: np.random.Generator,
    world: _World,
    weights: np.ndarray,
    *,
    by_country: np.ndarray | None,
    size: int | None = None,
) -> np.ndarray:
    """Draw merchants by weight, within each row's country when ``by_country`` is given.

    A country (or a weighting) with no eligible merchant falls back to all merchants by
    weight, then by popularity.
    """
    if weights.sum() <= 0:
        weights = world.m_popularity
    if by_country is None:
        return _choice(rng, weights, size or 0)
    out = np.empty(by_country.size, dtype=np.int64)
    for c in np.unique(by_country):
        rows = np.flatnonzero(by_country == c)
        w = np.where(world.m_country == c, weights, 0.0)
        out[rows] = _choice(rng, w if w.sum() > 0 else weights, rows.size)
    return out


def _timestamps(
    rng: np.random.Generator, world: _World, day: np.ndarray, hour: np.ndarray
) -> np.ndarray:
    offset = rng.integers(0, _US_PER_HOUR, day.size)
    return world.start_us + day * _US_PER_DAY + hour * _US_PER_HOUR + offset


def _concat(parts: list[_Events]) -> _Events:
    return _Events(
        *(
            np.concatenate([getattr(p, name) for p in parts])
            for name in ("customer", "ts", "merchant", "channel", "country", "amount", "is_fraud")
        )
    )


def _epoch_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _utc(us: np.ndarray) -> pl.Series:
    return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def _names(values: list[str], index: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(pl.Series(index, dtype=pl.Int64))


# --- writing -------------------------------------------------------------------------------


def write_demo(data: DemoData, out_dir: Path, *, batch_days: int = 7) -> list[Path]:
    """Write the demo as raw CSV batches, each file atomically.

    Layout: ``transactions/transactions_<YYYY-MM-DD>.csv`` (one file per ``batch_days`` days of
    event time, named by the batch's first day), ``labels/labels_<YYYY-MM-DD>.csv`` (batched the
    same way by label time), ``customers.csv``, ``merchants.csv`` and, written last, the manifest
    ``demo.json`` (config, files, row counts) that :func:`demo_present` checks. Batches are
    aligned on ``data.config.start``; days without rows get no file. Timestamps are ISO-8601
    with a ``+00:00`` offset.

    Rewriting a folder replaces the previous demo: its manifest is removed first, files of the
    same name are replaced, and files the previous manifest listed but this demo does not write
    (say, the later batches of a longer period) are deleted, so a shorter rewrite never leaves
    stale batches behind. Files the manifest did not list are never touched.

    Args:
        data: The generated demo.
        out_dir: Folder to write into; created if missing.
        batch_days: Days per batch file (>= 1).

    Returns:
        The paths written, the manifest last.

    Raises:
        ValueError: ``batch_days`` is not an integer >= 1.
    """
    if isinstance(batch_days, bool) or not isinstance(batch_days, int) or batch_days < 1:
        raise ValueError(f"batch_days: must be an integer >= 1, got {batch_days!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _listed_files(out_dir)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    start = data.config.start
    written: list[Path] = []
    for folder, frame, column in (
        ("transactions", data.transactions, "event_timestamp"),
        ("labels", data.labels, "label_timestamp"),
    ):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        batch = (pl.col(column).dt.date() - pl.lit(start)).dt.total_days() // batch_days
        keyed = frame.sort(column, "transaction_id", maintain_order=True).with_columns(_batch=batch)
        for (index,), part in keyed.group_by("_batch", maintain_order=True):
            first = start + timedelta(days=int(index) * batch_days)
            path = out_dir / folder / f"{folder}_{first.isoformat()}.csv"
            _write_csv_atomic(part.drop("_batch"), path)
            written.append(path)
    for name, frame in (("customers", data.customers), ("merchants", data.merchants)):
        path = out_dir / f"{name}.csv"
        _write_csv_atomic(frame, path)
        written.append(path)

    names = [p.relative_to(out_dir).as_posix() for p in written]
    for stale in sorted(set(previous) - set(names)):
        (out_dir / stale).unlink(missing_ok=True)

    manifest = {
        "use_case": USE_CASE,
        "config": {
            k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(data.config).items()
        },
        "batch_days": batch_days,
        "files": names,
        "rows": {"transactions": data.transactions.height, "labels": data.labels.height},
    }
    path = out_dir / MANIFEST_NAME
    _write_bytes_atomic(json.dumps(manifest, indent=2).encode(), path)
    written.append(path)
    return written


def demo_present(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a completely written demo (its manifest and every listed file)."""
    files = _listed_files(Path(out_dir))
    return bool(files) and all((Path(out_dir) / f).is_file() for f in files)


# Only names the writer produces; a hand-edited manifest cannot point the writer elsewhere.
_DEMO_FILE = re.compile(
    r"^(transactions/transactions|labels/labels)_\d{4}-\d{2}-\d{2}\.csv$|^(customers|merchants)\.csv$"
)


def _listed_files(out_dir: Path) -> list[str]:
    """Files listed by the demo manifest in ``out_dir``; empty if it is missing or invalid."""
    try:
        files = json.loads((out_dir / MANIFEST_NAME).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(files, list) or not all(
        isinstance(f, str) and _DEMO_FILE.match(f) for f in files
    ):
        return []
    return files


def _write_csv_atomic(frame: pl.DataFrame, path: Path) -> None:
    _atomic(path, lambda fh: frame.write_csv(fh, datetime_format=TIMESTAMP_FORMAT))


def _write_bytes_atomic(payload: bytes, path: Path) -> None:
    _atomic(path, lambda fh: fh.write(payload))


def _atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LIVE_DIR = "live"


def anchor_demo(data: DemoData, end: datetime) -> DemoData:
    """Move the demo in time so that its simulated period ends at `end` (floored to the minute).

    Every event and label time moves by the same amount; `hour` is recomputed from the moved
    time (the contract's rule); labels that would arrive after `end` have not arrived yet and
    are dropped. The config's `start` becomes the new first day.

    Raises:
        DemoConfigError: `end` is naive.
    """
    if end.tzinfo is None or end.utcoffset() is None:
        raise DemoConfigError("end: must be timezone-aware (UTC), got a naive datetime")
    simulated_end = datetime.combine(
        data.config.start + timedelta(days=data.config.days), time(), tzinfo=UTC
    )
    end = end.astimezone(UTC).replace(second=0, microsecond=0)
    shift = end - simulated_end
    moved = data.transactions.with_columns(pl.col("event_timestamp") + shift)
    if "hour" in moved.columns:
        moved = moved.with_columns(pl.col("event_timestamp").dt.hour().cast(pl.Int64).alias("hour"))
    labels = data.labels.with_columns(pl.col("label_timestamp") + shift).filter(
        pl.col("label_timestamp") <= end
    )
    start = (simulated_end + shift - timedelta(days=data.config.days)).date()
    return replace(
        data, transactions=moved, labels=labels, config=replace(data.config, start=start)
    )


def split_live(
    data: DemoData, *, live_days: int = 1, end: datetime | None = None
) -> tuple[DemoData, pl.DataFrame]:
    """Hold the last `live_days` of transactions back as live traffic.

    The history (earlier transactions and their labels) is what gets ingested; the held-back
    transactions are what the prediction API is asked about later, so their features come from
    the history and the live events before them, exactly as in training. The cut is the
    midnight `live_days` before the simulated end, or `live_days` before `end` when the demo
    was anchored there (`anchor_demo`).
    """
    if live_days < 1 or live_days >= data.config.days:
        raise DemoConfigError(f"live_days: must be between 1 and days - 1, got {live_days}")
    if end is not None:
        cut = end.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(days=live_days)
    else:
        cut = datetime.combine(
            data.config.start + timedelta(days=data.config.days - live_days), time(), tzinfo=UTC
        )
    is_live = pl.col("event_timestamp") >= cut
    live = data.transactions.filter(is_live)
    history = data.transactions.filter(~is_live)
    labels = data.labels.join(history.select("transaction_id"), on="transaction_id", how="semi")
    return replace(data, transactions=history, labels=labels), live


def write_live(live: pl.DataFrame, out_dir: Path) -> Path:
    """Write held-back live transactions to `<out_dir>/live/transactions.csv`, atomically."""
    folder = Path(out_dir) / LIVE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "transactions.csv"
    _write_csv_atomic(live, path)
    return path

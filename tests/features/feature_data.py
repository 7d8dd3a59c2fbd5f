"""Test data of the feature tests: seeded transactions and labels, and feature tables written
into a data home the way the features stage writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from loopline.features import delta_tables
from loopline.features.aggregates import (
    customer_activity,
    customer_features,
    merchant_activity,
    merchant_features,
)
from loopline.features.feast_ops import publish_feature_table
from loopline.settings import Settings

START = datetime(2024, 1, 1, tzinfo=UTC)


def transactions(seed: int = 11, n: int = 1_500, days: int = 40) -> pl.DataFrame:
    """Random transactions of 40 customers at 6 merchants over `days` days."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, n))
    frame = pl.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i}" for i in range(n)],
            "event_timestamp": [START + timedelta(seconds=int(s)) for s in seconds],
            "customer_id": rng.integers(1, 41, n),
            "merchant_id": rng.integers(1, 7, n),
            "amount": rng.gamma(2.0, 30.0, n).round(2) + 0.01,
            "channel": rng.choice(["chip", "online", "swipe"], n),
            "country": rng.choice(["US", "GB", "DE"], n),
        },
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    )
    return frame


def labels_of(tx: pl.DataFrame, seed: int = 12) -> pl.DataFrame:
    """A label per transaction, arriving 1 to 12 days later."""
    rng = np.random.default_rng(seed)
    delay = pl.Series(rng.integers(86_400, 12 * 86_400, tx.height)) * 1_000_000
    return tx.select(
        "transaction_id",
        label_timestamp=pl.col("event_timestamp") + pl.duration(microseconds=delay),
        is_fraud=pl.Series(rng.random(tx.height) < 0.1).cast(pl.Int64),
    )


def write_tables(
    settings: Settings, tx: pl.DataFrame, labels: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """Every table of the fraud repo, written where its Feast source reads it."""
    out = {
        "customer_stats": customer_features(tx),
        "merchant_stats": merchant_features(tx),
    }
    publish_feature_table(out["customer_stats"], settings.features_dir / "customer_stats.parquet")
    publish_feature_table(out["merchant_stats"], settings.features_dir / "merchant_stats.parquet")
    for table in (customer_activity, merchant_activity):
        frame = table(tx, labels=labels)
        delta_tables.write(str(settings.lake_dir / table.name), [frame], mode="overwrite")
        out[table.name] = frame
    return out

"""A prediction log of live traffic for tests: a champion with a shadow or a canary, and labels.

`live_records` builds the records the service would log (champion and shadow rows share a
request id; canary rows are requests of their own); `write_live_log` appends them through the
real `PredictionLog`, and `write_labels` lands labels in the lake table of the fraud spec's
labels, keyed by event id. Scores are noisy views of a true fraud probability: the challenger's
noise is smaller, so on enough labels it is the better model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from loopline.lake import tables
from loopline.serving.prediction_log import PredictionLog
from loopline.settings import Settings

MODEL = "fraud-detector"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@dataclass(frozen=True)
class Side:
    """Which version answers in a role."""

    version: int
    version_id: str
    alias: str
    noise: float


CHAMPION = Side(2, "mv2", "champion", 2.0)
CHALLENGER = Side(1, "mv1", "challenger", 0.4)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _record(i: int, at: datetime, side: Side, role: str, score: float, amount: float) -> dict:
    stamp = at - timedelta(minutes=17)
    return {
        "request_id": f"req-{i:04d}",
        "event_id": f"tx-{i:04d}",
        "ts": at,
        "received_at": at + timedelta(milliseconds=4),
        "model_name": MODEL,
        "model_version": side.version,
        "model_version_id": side.version_id,
        "feature_service": "fraud_v1",
        "alias": side.alias if role != "champion" else "champion",
        "role": role,
        "entities": {"customer_id": f"c{i % 17:02d}"},
        "request": {"customer_id": f"c{i % 17:02d}", "amount": amount, "channel": "online"},
        "features": {"customer_txn_count_7d": i % 9, "customer_amount_mean_30d": 40.0 + i % 13},
        "feature_timestamps": {"customer_activity": stamp, "merchant_stats": None},
        "inputs": {"amount": amount, "hour": float(at.hour), "customer_txn_count_7d": i % 9},
        "score": score,
        "latency_ms": 1.0 + (i % 7) * 0.3,
        "unknown_entities": [],
    }


def live_records(
    n: int = 300,
    *,
    role: str = "shadow",
    seed: int = 0,
    now: datetime = NOW,
    champion: Side = CHAMPION,
    challenger: Side = CHALLENGER,
) -> tuple[list[dict[str, Any]], pl.DataFrame]:
    """Records of `n` requests over the last `n` minutes, and every request's label.

    Args:
        n: Requests.
        role: "shadow" (each request scored twice), "canary" (a third of the requests answered
            by the challenger), or "none" (champion only).
        seed: Seed of the scores and labels.
        now: The newest request's time.
        champion: The champion's version.
        challenger: The challenger's version.

    Returns:
        (records, labels): labels as the fraud spec's labels table (transaction_id,
        label_timestamp, is_fraud) for every request.
    """
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.5, 1.6, n)
    truth = (rng.random(n) < _sigmoid(logit)).astype(int)
    amounts = np.round(rng.gamma(2.0, 40.0, n), 2)
    records = []
    for i in range(n):
        at = now - timedelta(minutes=n - i)
        c = float(_sigmoid(logit[i] + rng.normal(0, champion.noise)))
        s = float(_sigmoid(logit[i] + rng.normal(0, challenger.noise)))
        if role == "canary" and i % 3 == 0:
            records.append(_record(i, at, challenger, "canary", s, float(amounts[i])))
            continue
        records.append(_record(i, at, champion, "champion", c, float(amounts[i])))
        if role == "shadow":
            records.append(_record(i, at, challenger, "shadow", s, float(amounts[i])))
    labels = pl.DataFrame(
        {
            "transaction_id": [f"tx-{i:04d}" for i in range(n)],
            "label_timestamp": [now + timedelta(hours=1)] * n,
            "is_fraud": truth.tolist(),
        },
        schema={
            "transaction_id": pl.String,
            "label_timestamp": pl.Datetime("us", "UTC"),
            "is_fraud": pl.Int64,
        },
    )
    return records, labels


def write_live_log(settings: Settings, records: list[dict[str, Any]]) -> None:
    """Append the records to the installation's prediction log (committed on return)."""
    with PredictionLog(settings.prediction_log_dir, autoflush=False) as log:
        log.append_many(records)


def write_labels(settings: Settings, labels: pl.DataFrame) -> None:
    """Land labels as a new version of the fraud spec's labels table."""
    tables.append(tables.table_uri(settings.lake_dir, "labels"), labels)

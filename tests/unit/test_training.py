"""Training sets and models: settled labels only, warm-up, time split, determinism, metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from loopline.spec import load_spec
from loopline.training.dataset import labelled_events
from loopline.training.metrics import compute_metrics
from loopline.training.model import load_booster, time_split, train_booster

SPEC = load_spec("fraud")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(days: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "transaction_id": [f"tx-{i}" for i in range(len(days))],
            "event_timestamp": [T0 + timedelta(days=d, hours=12) for d in days],
        }
    )


def _labels(days: list[int], delays: list[int], frauds: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "transaction_id": [f"tx-{i}" for i in range(len(days))],
            "label_timestamp": [
                T0 + timedelta(days=d + delay, hours=12)
                for d, delay in zip(days, delays, strict=True)
            ],
            "is_fraud": frauds,
        }
    )


@pytest.mark.parametrize(
    ("event_day", "delay", "fraud", "kept"),
    [
        (35, 14, 0, True),  # settled negative after warm-up
        (35, 3, 1, True),  # settled positive
        (50, 3, 1, False),  # positive known early, but its negatives are not: left out
        (50, 14, 0, False),  # label not arrived by as_of
        (10, 14, 0, False),  # warm-up: windows still filling
    ],
)
def test_only_settled_events_after_warmup_are_labelled(
    event_day: int, delay: int, fraud: int, kept: bool
) -> None:
    days = [0, event_day, 60]
    events = _events(days)
    labels = _labels(days, [14, delay, 14], [0, fraud, 0])
    as_of = T0 + timedelta(days=60, hours=12)
    out = labelled_events(events, labels, SPEC, as_of=as_of)
    assert ("tx-1" in out.get_column("transaction_id").to_list()) is kept


def test_time_split_puts_the_newest_rows_in_the_holdout() -> None:
    frame = _events(list(range(10))).sample(fraction=1.0, shuffle=True, seed=1)
    train, valid = time_split(frame, "event_timestamp", 0.3)
    assert train.get_column("event_timestamp").max() < valid.get_column("event_timestamp").min()
    assert (train.height, valid.height) == (7, 3)


def test_time_split_refuses_an_empty_side() -> None:
    with pytest.raises(ValueError, match="a side would be empty"):
        time_split(_events([1]), "event_timestamp", 0.2)


def _xy(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 1.0).astype(int)
    return x, y


def test_training_is_deterministic_and_round_trips_through_text() -> None:
    x, y = _xy(0)
    xv, yv = _xy(1, 500)
    first = train_booster(x, y, xv, yv, feature_names=["a", "b", "c"], config=SPEC.training)
    second = train_booster(x, y, xv, yv, feature_names=["a", "b", "c"], config=SPEC.training)
    assert first.to_bytes() == second.to_bytes()
    reloaded = load_booster(first.to_bytes())
    assert np.array_equal(reloaded.predict(xv), first.predict(xv))
    auc = compute_metrics("binary_classification", yv, first.predict(xv), ["roc_auc"])
    assert auc["roc_auc"] > 0.85
    assert len(first.curves["valid_auc"]) >= first.best_iteration

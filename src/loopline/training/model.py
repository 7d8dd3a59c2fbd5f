"""LightGBM training and evaluation: deterministic, seeded, with learning curves."""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from loopline.spec import TrainingSpec


@dataclass
class TrainedModel:
    """A booster with its learning curves and the inputs it expects."""

    booster: lgb.Booster
    feature_names: list[str]
    best_iteration: int
    curves: dict[str, list[float]] = field(default_factory=dict)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Scores for a float64 matrix in `feature_names` order."""
        return self.booster.predict(inputs, num_iteration=self.best_iteration)

    def to_bytes(self) -> bytes:
        """The model as LightGBM text (portable, no pickle)."""
        return self.booster.model_to_string(num_iteration=self.best_iteration).encode()


def load_booster(data: bytes) -> lgb.Booster:
    """A booster from the bytes `TrainedModel.to_bytes` wrote."""
    return lgb.Booster(model_str=data.decode())


def time_split(
    frame: pl.DataFrame, timestamp: str, valid_fraction: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split by time: the newest `valid_fraction` of rows (by timestamp) is the holdout.

    Raises:
        ValueError: either side would be empty.
    """
    ordered = frame.sort(timestamp)
    cut = round(ordered.height * (1 - valid_fraction))
    if cut <= 0 or cut >= ordered.height:
        raise ValueError(
            f"cannot split {ordered.height} rows with valid_fraction={valid_fraction}: "
            "a side would be empty"
        )
    return ordered.head(cut), ordered.tail(ordered.height - cut)


def train_booster(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    feature_names: list[str],
    config: TrainingSpec,
) -> TrainedModel:
    """Train LightGBM with early stopping on the holdout; same inputs and seed, same model."""
    params = {
        "objective": "binary",
        "metric": ["binary_logloss", "auc"],
        "verbosity": -1,
        "seed": config.seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
        **config.params,
    }
    train_set = lgb.Dataset(x_train, y_train, feature_name=feature_names, free_raw_data=False)
    valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set, free_raw_data=False)
    record: dict[str, dict[str, list[float]]] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[train_set, valid_set],
        valid_names=["train", "valid"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(record),
        ],
    )
    curves = {
        f"{split}_{metric}": values for split, m in record.items() for metric, values in m.items()
    }
    best = booster.best_iteration or booster.current_iteration()
    return TrainedModel(booster, feature_names, best, curves)


def evaluate(y_true: np.ndarray, scores: np.ndarray, metrics: list[str]) -> dict[str, float]:
    """The requested metrics of binary scores against 0/1 labels.

    Raises:
        ValueError: a metric is unknown, or the labels hold only one class.
    """
    if len(np.unique(y_true)) < 2:
        raise ValueError("the holdout holds only one class; cannot evaluate a classifier")
    functions = {
        "roc_auc": lambda: roc_auc_score(y_true, scores),
        "average_precision": lambda: average_precision_score(y_true, scores),
        "log_loss": lambda: log_loss(y_true, np.clip(scores, 1e-15, 1 - 1e-15)),
        "positive_rate": lambda: float(np.mean(y_true)),
    }
    unknown = [m for m in metrics if m not in functions]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(functions)}")
    return {m: float(functions[m]()) for m in metrics}

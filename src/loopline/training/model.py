"""LightGBM training: deterministic, seeded, task-aware, with learning curves and explanations.

Every task trains the same way: early stopping on the time-ordered holdout, one thread and
LightGBM's deterministic mode, so the same inputs, params and seed give a byte-identical model
file (what `loopline reproduce` checks). What the run records about a model comes from here:
the parameters LightGBM actually used (defaults included, read back from the model file), the
learning curves (one point per iteration), gain and split importance, and a SHAP summary from
LightGBM's own `pred_contrib` (no extra dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from loopline.spec import Task, TrainingSpec

# Objective and the metrics LightGBM tracks per iteration (the learning curves), per task.
TASK_OBJECTIVES: dict[str, tuple[str, list[str]]] = {
    "binary_classification": ("binary", ["binary_logloss", "auc"]),
    "regression": ("regression", ["l2", "l1"]),
    "multiclass_classification": ("multiclass", ["multi_logloss", "multi_error"]),
}

# Settings that make training reproducible byte for byte; a tuning trial cannot override them.
DETERMINISM: dict[str, Any] = {
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 1,
    "verbosity": -1,
}


@dataclass
class TrainedModel:
    """A booster with its learning curves and the inputs it expects."""

    booster: lgb.Booster
    feature_names: list[str]
    best_iteration: int
    task: Task = "binary_classification"
    curves: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Predictions for a float64 matrix in `feature_names` order: the probability of class
        1 (binary), the value (regression) or an (n, classes) probability matrix (multiclass)."""
        return self.booster.predict(inputs, num_iteration=self.best_iteration)

    def to_bytes(self) -> bytes:
        """The model as LightGBM text (portable, no pickle), cut at the best iteration."""
        return self.booster.model_to_string(num_iteration=self.best_iteration).encode()

    def resolved_params(self) -> dict[str, Any]:
        """Every parameter LightGBM used, defaults included, as written in the model file."""
        return resolved_params(self.to_bytes().decode())

    def importance(self) -> pl.DataFrame:
        """Gain and split importance per feature, largest gain first."""
        gain = self.booster.feature_importance("gain", iteration=self.best_iteration)
        split = self.booster.feature_importance("split", iteration=self.best_iteration)
        total = float(gain.sum()) or 1.0
        return pl.DataFrame(
            {
                "feature": self.feature_names,
                "gain": gain.astype(np.float64),
                "gain_share": gain.astype(np.float64) / total,
                "split": split.astype(np.int64),
            }
        ).sort(["gain", "feature"], descending=[True, False])

    def shap_summary(self, inputs: np.ndarray, *, max_rows: int = 2000, seed: int = 0) -> dict:
        """SHAP summary from LightGBM's `pred_contrib` on (a seeded sample of) `inputs`.

        Returns:
            {"rows": rows explained, "expected_value": base value(s), "features": [{feature,
            mean_abs, mean}] by mean |contribution|, largest first}. Multiclass contributions are
            averaged over classes (mean_abs) and `expected_value` is a list per class.
        """
        rows = inputs
        if inputs.shape[0] > max_rows:
            picked = np.random.default_rng(seed).choice(inputs.shape[0], max_rows, replace=False)
            rows = inputs[np.sort(picked)]
        contrib = np.asarray(
            self.booster.predict(rows, num_iteration=self.best_iteration, pred_contrib=True)
        )
        width = len(self.feature_names) + 1
        per_class = contrib.reshape(rows.shape[0], -1, width)  # (rows, classes, features + bias)
        values, bias = per_class[:, :, :-1], per_class[:, :, -1]
        mean_abs = np.abs(values).mean(axis=(0, 1))
        mean = values.mean(axis=(0, 1))
        order = sorted(range(len(self.feature_names)), key=lambda i: (-mean_abs[i], i))
        expected = bias.mean(axis=0).tolist()
        return {
            "rows": int(rows.shape[0]),
            "expected_value": expected[0] if len(expected) == 1 else expected,
            "features": [
                {
                    "feature": self.feature_names[i],
                    "mean_abs": float(mean_abs[i]),
                    "mean": float(mean[i]),
                }
                for i in order
            ],
        }


def resolved_params(model_text: str) -> dict[str, Any]:
    """The `parameters:` block of a LightGBM model file as a dict (numbers parsed)."""
    params: dict[str, Any] = {}
    inside = False
    for line in model_text.splitlines():
        if line == "parameters:":
            inside = True
        elif line == "end of parameters":
            break
        elif inside and line.startswith("[") and line.endswith("]") and ": " in line:
            key, _, raw = line[1:-1].partition(": ")
            params[key] = _parse_param(raw)
    return params


def _parse_param(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return raw


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


def training_params(
    config: TrainingSpec,
    task: Task,
    *,
    num_class: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The LightGBM params of a training: task defaults, the spec's params, then overrides
    (tuned values), with the seed and the determinism settings always last.

    Raises:
        ValueError: a multiclass task without `num_class` >= 3.
    """
    for key, value in (overrides or {}).items():
        if key in DETERMINISM or key in ("seed", "objective", "num_class"):
            raise ValueError(f"params.{key}: fixed by loopline (determinism and task), not tunable")
        if not isinstance(value, bool | int | float | str):
            raise ValueError(f"params.{key}: must be a number, string or boolean, got {value!r}")
    objective, metrics = TASK_OBJECTIVES[task]
    params: dict[str, Any] = {"objective": objective, "metric": metrics}
    if task == "multiclass_classification":
        if num_class is None or num_class < 3:
            raise ValueError(f"a multiclass task needs num_class >= 3, got {num_class}")
        params["num_class"] = num_class
    params |= dict(config.params) | dict(overrides or {})
    return params | {"seed": config.seed} | DETERMINISM


def train_booster(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    feature_names: list[str],
    config: TrainingSpec,
    task: Task = "binary_classification",
    num_class: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
) -> TrainedModel:
    """Train LightGBM with early stopping on the holdout; same inputs and seed, same model.

    Args:
        x_train, y_train, x_valid, y_valid: Float64 inputs and labels of both sides.
        feature_names: Column names of the inputs, in order.
        config: The spec's training section (params, rounds, early stopping, seed).
        task: The use case's task.
        num_class: Classes of a multiclass task.
        overrides: Params replacing the spec's (a tuning trial's, or a run being reproduced).
        callbacks: Extra LightGBM callbacks (e.g. tuning's pruning).
    """
    params = training_params(config, task, num_class=num_class, overrides=overrides)
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
            *callbacks,
        ],
    )
    curves = {
        f"{split}_{metric}": values for split, m in record.items() for metric, values in m.items()
    }
    best = booster.best_iteration or booster.current_iteration()
    return TrainedModel(booster, feature_names, best, task, curves, params)

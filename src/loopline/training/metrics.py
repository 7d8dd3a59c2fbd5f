"""Model evaluation metrics and curves as pure functions over numpy arrays (no I/O).

Conventions shared by every function here:

- Binary predictions are the probability of class 1; a row is predicted positive when its
  score is `>= threshold` (the convention of ROC curves and of `choose_threshold`).
- Multiclass predictions are an (n, k) probability matrix; the predicted class is the argmax
  (the first column on ties) and label `i` is `classes[i]`.
- Regression residuals are `y_true - y_pred`.
- Results are JSON-serialisable: plain floats, ints, lists and dicts, with `None` where a value
  is undefined (never NaN or inf).

Bad input (wrong shapes, NaN/inf, labels outside the task's set, unknown metric names) raises
`ValueError`. A metric that is undefined on valid data (AUC of one class, r2 of a constant
target) raises `UndefinedMetricError`, a `ValueError` subclass that reports catch to record
`None` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from loopline.spec import TASK_METRICS, CostMatrix, EvaluationSpec, Task

CURVE_POINTS = 200
"""Most points kept in the ROC and PR curves of `task_curves`."""

RESIDUAL_QUANTILES: dict[str, float] = {
    "min": 0.0,
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
    "max": 1.0,
}

_EPS = float(np.finfo(np.float64).eps)
_ROW_SUM_TOLERANCE = 1e-4  # float32 probabilities (ONNX) sum to 1 only this closely


class UndefinedMetricError(ValueError):
    """A metric has no value on these (valid) inputs, e.g. ROC AUC when only one class occurs."""


def _num(value: float) -> float | None:
    """A plain float, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _check_task(task: str) -> None:
    if task not in TASK_METRICS:
        raise ValueError(f"task '{task}' is unknown (known: {sorted(TASK_METRICS)})")


def _finite(values: np.ndarray, name: str) -> None:
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}")
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite: {int(bad.sum())} NaN/inf value(s), first at row {first}"
        )


def _as_labels(y_true: ArrayLike, k: int) -> np.ndarray:
    """Integer labels in 0..k-1 (bools and integral floats accepted)."""
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    _finite(labels, "y_true")
    bad = (labels != np.round(labels)) | (labels < 0) | (labels > k - 1)
    if bad.any():
        first = labels[np.flatnonzero(bad)[0]]
        allowed = "{0, 1}" if k == 2 else f"the integers 0..{k - 1}"
        raise ValueError(
            f"y_true labels must be in {allowed}: {int(bad.sum())} row(s) are not "
            f"(first: {first!r})"
        )
    return labels.astype(np.int64)


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.float64)
    _finite(array, name)
    return array.astype(np.float64)


def _same_length(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"y_true has {y_true.shape[0]} rows but y_pred has {y_pred.shape[0]}: they must align"
        )


def _probabilities(proba: np.ndarray, name: str) -> None:
    if proba.size and (proba.min() < 0 or proba.max() > 1):
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in "
            f"[{proba.min():.6g}, {proba.max():.6g}]"
        )


def validate_binary(y_true: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check binary labels and class-1 probabilities.

    Returns:
        (labels as int64 0/1, probabilities as float64).

    Raises:
        ValueError: shapes differ, a value is NaN/inf, a label is not 0/1, or a probability is
            outside [0, 1].
    """
    y = _as_labels(y_true, 2)
    p = _as_vector(proba, "y_pred")
    _same_length(y, p)
    _probabilities(p, "y_pred")
    return y, p


def validate_predictions(
    task: Task, y_true: ArrayLike, y_pred: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and predictions for a task and return them as numpy arrays.

    Args:
        task: The use case's task.
        y_true: Labels: 0/1 (binary), class indices 0..k-1 (multiclass), numbers (regression).
        y_pred: Class-1 probabilities (binary), an (n, k) probability matrix whose rows sum to
            1 (multiclass), or predictions (regression).

    Returns:
        (y_true, y_pred): int64 labels or float64 targets, and float64 predictions.

    Raises:
        ValueError: the task is unknown, shapes do not match, a value is NaN/inf, a label is
            outside the task's set, or probabilities are outside [0, 1].
    """
    _check_task(task)
    if task == "binary_classification":
        return validate_binary(y_true, y_pred)
    if task == "regression":
        y = _as_vector(y_true, "y_true")
        p = _as_vector(y_pred, "y_pred")
        _same_length(y, p)
        return y, p
    matrix = np.asarray(y_pred)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(
            f"y_pred of a multiclass task must be an (n, k) probability matrix with k >= 2, "
            f"got shape {matrix.shape}"
        )
    _finite(matrix, "y_pred")
    matrix = matrix.astype(np.float64)
    y = _as_labels(y_true, matrix.shape[1])
    _same_length(y, matrix)
    _probabilities(matrix, "y_pred")
    sums = matrix.sum(axis=1)
    off = np.abs(sums - 1.0) > _ROW_SUM_TOLERANCE
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"y_pred rows must sum to 1: {int(off.sum())} row(s) do not "
            f"(first: row {first} sums to {sums[first]:.6g})"
        )
    return y, matrix


def _needs_rows(name: str, n: int) -> None:
    if n == 0:
        raise UndefinedMetricError(f"{name} is undefined on zero rows")


def _both_classes(name: str, y: np.ndarray) -> tuple[int, int]:
    positives = int(y.sum())
    negatives = int(y.shape[0] - positives)
    if positives == 0 or negatives == 0:
        raise UndefinedMetricError(
            f"{name} needs both classes in y_true, got {positives} positive(s) and "
            f"{negatives} negative(s)"
        )
    return positives, negatives


def _cut_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confusion counts at every distinct score, highest first (sort once, cumulative sums).

    Returns:
        (fps, tps, thresholds): at `thresholds[i]`, predicting `score >= thresholds[i]` positive
        gives `tps[i]` true and `fps[i]` false positives.
    """
    order = np.argsort(-score, kind="stable")
    ordered = score[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(ordered)), ordered.shape[0] - 1]
    tps = np.cumsum(y[order])[last_of_run]
    fps = last_of_run + 1 - tps
    return fps, tps, ordered[last_of_run]


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    positives, negatives = _both_classes("roc_auc", y)
    fps, tps, _ = _cut_points(y, p)
    return float(np.trapezoid(np.r_[0, tps] / positives, np.r_[0, fps] / negatives))


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    positives, _ = _both_classes("average_precision", y)
    fps, tps, _ = _cut_points(y, p)
    precision = tps / (tps + fps)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _binary_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    _needs_rows("log_loss", y.shape[0])
    chosen = np.where(y == 1, p, 1.0 - p)
    return float(-np.mean(np.log(np.clip(chosen, _EPS, 1 - _EPS))))


def _multiclass_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    _needs_rows("log_loss", y.shape[0])
    chosen = p[np.arange(y.shape[0]), y]
    return float(-np.mean(np.log(np.clip(chosen, _EPS, 1 - _EPS))))


def _mean(name: str, values: np.ndarray) -> float:
    _needs_rows(name, values.shape[0])
    return float(np.mean(values))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    _needs_rows("r2", y.shape[0])
    total = float(np.sum((y - y.mean()) ** 2))
    if total == 0:
        raise UndefinedMetricError("r2 is undefined when y_true is constant (zero variance)")
    return 1.0 - float(np.sum((y - p) ** 2)) / total


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    _needs_rows("mape", y.shape[0])
    zeros = int(np.sum(y == 0))
    if zeros:
        raise UndefinedMetricError(f"mape is undefined when y_true has zeros ({zeros} row(s))")
    return float(np.mean(np.abs(y - p) / np.abs(y)))


def _macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    """Mean F1 over the classes present in y_true or the predictions (sklearn's default)."""
    _needs_rows("macro_f1", y.shape[0])
    k = p.shape[1]
    predicted = p.argmax(axis=1)
    tp = np.bincount(y[y == predicted], minlength=k)
    support = np.bincount(y, minlength=k)
    chosen = np.bincount(predicted, minlength=k)
    present = (support + chosen) > 0
    f1 = 2 * tp[present] / (support[present] + chosen[present])
    return float(np.mean(f1))


def _metric_functions(
    task: Task, y: np.ndarray, p: np.ndarray, threshold: float
) -> dict[str, Callable[[], float]]:
    if task == "binary_classification":
        return {
            "roc_auc": lambda: _roc_auc(y, p),
            "average_precision": lambda: _average_precision(y, p),
            "log_loss": lambda: _binary_log_loss(y, p),
            "brier": lambda: _mean("brier", (p - y) ** 2),
            "positive_rate": lambda: _mean("positive_rate", y),
            "accuracy": lambda: _mean("accuracy", (p >= threshold) == y),
        }
    if task == "regression":
        return {
            "rmse": lambda: math.sqrt(_mean("rmse", (y - p) ** 2)),
            "mae": lambda: _mean("mae", np.abs(y - p)),
            "r2": lambda: _r2(y, p),
            "mape": lambda: _mape(y, p),
        }
    return {
        "log_loss": lambda: _multiclass_log_loss(y, p),
        "accuracy": lambda: _mean("accuracy", p.argmax(axis=1) == y),
        "macro_f1": lambda: _macro_f1(y, p),
    }


def _check_names(task: Task, names: Iterable[str]) -> list[str]:
    _check_task(task)
    names = list(names)
    unknown = [n for n in names if n not in TASK_METRICS[task]]
    if unknown:
        raise ValueError(
            f"metric(s) {unknown} do not apply to {task} (known: {sorted(TASK_METRICS[task])})"
        )
    return names


def compute_metrics(
    task: Task,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    names: Iterable[str],
    *,
    threshold: float = 0.5,
) -> dict[str, float]:
    """The named metrics of predictions against labels.

    Binary: `roc_auc`, `average_precision` (step-wise, as sklearn), `log_loss` (probabilities
    clipped to [eps, 1 - eps]), `brier`, `positive_rate` (share of positive labels) and
    `accuracy` (positive when `proba >= threshold`). Regression: `rmse`, `mae`, `r2`, `mape`
    (a fraction, not percent). Multiclass: `log_loss`, `accuracy` (argmax), `macro_f1` (over
    the classes present in the labels or the predictions, as sklearn).

    Args:
        task: The use case's task.
        y_true: Labels or targets, shape (n,).
        y_pred: Class-1 probabilities (binary, (n,)), predictions (regression, (n,)) or an
            (n, k) probability matrix (multiclass).
        names: Metric names; each must be in `TASK_METRICS[task]`.
        threshold: Binary accuracy's decision threshold.

    Returns:
        Metric name -> value, in the order of `names`.

    Raises:
        ValueError: unknown task or metric name, or bad inputs (see `validate_predictions`).
        UndefinedMetricError: a metric is undefined on these inputs (the message names it and
            the rule, e.g. roc_auc with a single class, r2 of a constant target, no rows).
    """
    names = _check_names(task, names)
    y, p = validate_predictions(task, y_true, y_pred)
    functions = _metric_functions(task, y, p, threshold)
    return {name: functions[name]() for name in names}


def compute_metrics_or_none(
    task: Task,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    names: Iterable[str],
    *,
    threshold: float = 0.5,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Like `compute_metrics`, but an undefined metric is `None` instead of an error.

    Returns:
        (metric name -> value or None, metric name -> why it is undefined).

    Raises:
        ValueError: unknown task or metric name, or bad inputs.
    """
    names = _check_names(task, names)
    y, p = validate_predictions(task, y_true, y_pred)
    functions = _metric_functions(task, y, p, threshold)
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name in names:
        try:
            values[name] = _num(functions[name]())
        except UndefinedMetricError as exc:
            values[name] = None
            reasons[name] = str(exc)
    return values, reasons


def calibration_curve(y_true: ArrayLike, proba: ArrayLike, bins: int) -> dict[str, Any]:
    """Reliability diagram data over `bins` uniform bins of [0, 1], with calibration errors.

    Bins are right-closed like sklearn's (`(lo, hi]`, the first `[0, hi]`). Empty bins have
    count 0 and `None` for their mean prediction and observed rate.

    Returns:
        {"edges", "count", "mean_predicted", "observed_rate"} per bin, plus "ece" (expected
        calibration error: count-weighted mean of |observed - predicted|) and "mce" (the largest
        such gap over non-empty bins).

    Raises:
        ValueError: `bins` < 1 or bad inputs (see `validate_binary`).
        UndefinedMetricError: there are no rows.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"calibration bins must be an integer >= 1, got {bins!r}")
    y, p = validate_binary(y_true, proba)
    _needs_rows("calibration", y.shape[0])
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    count = np.bincount(ids, minlength=bins)
    predicted_sum = np.bincount(ids, weights=p, minlength=bins)
    observed_sum = np.bincount(ids, weights=y, minlength=bins)
    filled = count > 0
    mean_predicted = np.divide(predicted_sum, count, out=np.zeros(bins), where=filled)
    observed = np.divide(observed_sum, count, out=np.zeros(bins), where=filled)
    gaps = np.abs(observed - mean_predicted)
    return {
        "edges": [float(e) for e in edges],
        "count": [int(c) for c in count],
        "mean_predicted": [
            float(v) if f else None for v, f in zip(mean_predicted, filled, strict=True)
        ],
        "observed_rate": [float(v) if f else None for v, f in zip(observed, filled, strict=True)],
        "ece": float(np.sum(count * gaps) / y.shape[0]),
        "mce": float(gaps[filled].max()),
    }


def _confusion(
    threshold: float, tp: int, fp: int, positives: int, negatives: int
) -> dict[str, Any]:
    fn, tn = positives - tp, negatives - fp
    rows = positives + negatives
    return {
        "threshold": float(threshold),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, positives),
        "fpr": _ratio(fp, negatives),
        "selection_rate": _ratio(tp + fp, rows),
        "accuracy": _ratio(tp + tn, rows),
    }


def confusion_at(y_true: ArrayLike, proba: ArrayLike, threshold: float) -> dict[str, Any]:
    """Confusion counts and rates when rows with `proba >= threshold` are predicted positive.

    Returns:
        {"threshold", "tp", "fp", "fn", "tn", "precision", "recall", "fpr", "selection_rate",
        "accuracy"}; a rate whose denominator is zero is `None`.

    Raises:
        ValueError: the threshold is not finite, or bad inputs (see `validate_binary`).
    """
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    y, p = validate_binary(y_true, proba)
    chosen = p >= threshold
    positives = int(y.sum())
    return _confusion(
        threshold,
        int(np.sum(chosen & (y == 1))),
        int(np.sum(chosen & (y == 0))),
        positives,
        y.shape[0] - positives,
    )


def _total_cost(tp: Any, fp: Any, fn: Any, tn: Any, costs: CostMatrix) -> Any:
    # One expression for every caller, so equal counts give bit-identical costs (exact ties).
    return (
        tp * costs.true_positive
        + fp * costs.false_positive
        + fn * costs.false_negative
        + tn * costs.true_negative
    )


def choose_threshold(y_true: ArrayLike, proba: ArrayLike, costs: CostMatrix) -> dict[str, Any]:
    """The decision threshold with the lowest total cost.

    Candidates are every distinct score (predict `proba >= t` positive) and one just above the
    highest score (predict nothing positive). Scores are sorted once and counted with
    cumulative sums: O(n log n). Ties go to the highest threshold.

    Returns:
        `confusion_at` at the chosen threshold plus "cost" (total) and "mean_cost" (per row).

    Raises:
        ValueError: bad inputs (see `validate_binary`).
        UndefinedMetricError: there are no rows.
    """
    y, p = validate_binary(y_true, proba)
    _needs_rows("choose_threshold", y.shape[0])
    fps, tps, thresholds = _cut_points(y, p)
    positives, negatives = int(tps[-1]), int(fps[-1])
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    thresholds = np.r_[np.nextafter(thresholds[0], np.inf), thresholds]
    cost = _total_cost(tps, fps, positives - tps, negatives - fps, costs)
    best = int(np.argmin(cost))  # first minimum = highest threshold
    chosen = _confusion(thresholds[best], int(tps[best]), int(fps[best]), positives, negatives)
    return {**chosen, "cost": float(cost[best]), "mean_cost": float(cost[best]) / y.shape[0]}


def _downsample(n: int, max_points: int) -> np.ndarray:
    """At most `max_points` indices of 0..n-1, evenly spread, first and last kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def _thresholds(values: np.ndarray, keep: np.ndarray) -> list[float | None]:
    """Curve thresholds at the kept points; point 0 (nothing predicted positive) has none."""
    return [None if i == 0 else float(values[i - 1]) for i in keep]


def roc_curve_points(
    y_true: ArrayLike, proba: ArrayLike, max_points: int = CURVE_POINTS
) -> dict[str, list[Any]]:
    """ROC curve points from (0, 0) through every distinct score, downsampled for display.

    Returns:
        {"fpr", "tpr", "thresholds"}: aligned lists, highest threshold first; the first point
        is (0, 0) with threshold `None` (nothing predicted positive).

    Raises:
        ValueError: bad inputs or `max_points` < 2.
        UndefinedMetricError: y_true holds a single class.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    y, p = validate_binary(y_true, proba)
    positives, negatives = _both_classes("roc curve", y)
    fps, tps, thresholds = _cut_points(y, p)
    keep = _downsample(fps.shape[0] + 1, max_points)
    fpr = (np.r_[0, fps] / negatives)[keep]
    tpr = (np.r_[0, tps] / positives)[keep]
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": _thresholds(thresholds, keep),
    }


def pr_curve_points(
    y_true: ArrayLike, proba: ArrayLike, max_points: int = CURVE_POINTS
) -> dict[str, list[Any]]:
    """Precision-recall curve points, downsampled for display.

    Returns:
        {"recall", "precision", "thresholds"}: aligned lists, highest threshold first; the first
        point is recall 0, precision 1 with threshold `None` (as sklearn's last point).

    Raises:
        ValueError: bad inputs or `max_points` < 2.
        UndefinedMetricError: y_true holds a single class.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    y, p = validate_binary(y_true, proba)
    positives, _ = _both_classes("precision-recall curve", y)
    fps, tps, thresholds = _cut_points(y, p)
    keep = _downsample(fps.shape[0] + 1, max_points)
    recall = np.r_[0.0, tps / positives][keep]
    precision = np.r_[1.0, tps / (tps + fps)][keep]
    return {
        "recall": [float(v) for v in recall],
        "precision": [float(v) for v in precision],
        "thresholds": _thresholds(thresholds, keep),
    }


def residuals(
    y_true: ArrayLike, y_pred: ArrayLike, max_points: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Residual-plot data (`y_true - y_pred`): a seeded sample of points and quantiles.

    Returns:
        {"rows", "sampled" (whether points are a sample), "prediction", "residual" (aligned
        point lists, in row order), "mean", "std", "quantiles" (name -> value, names in
        `RESIDUAL_QUANTILES`)}; the quantiles and moments cover every row.

    Raises:
        ValueError: `max_points` < 1 or bad inputs.
        UndefinedMetricError: there are no rows.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    y, p = validate_predictions("regression", y_true, y_pred)
    _needs_rows("residuals", y.shape[0])
    residual = y - p
    n = y.shape[0]
    sampled = n > max_points
    rows = (
        np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        if sampled
        else np.arange(n)
    )
    levels = np.quantile(residual, list(RESIDUAL_QUANTILES.values()))
    return {
        "rows": n,
        "sampled": bool(sampled),
        "prediction": [float(v) for v in p[rows]],
        "residual": [float(v) for v in residual[rows]],
        "mean": float(residual.mean()),
        "std": float(residual.std()),
        "quantiles": {name: float(v) for name, v in zip(RESIDUAL_QUANTILES, levels, strict=True)},
    }


def _class_names(classes: Sequence[str] | None, k: int) -> list[str]:
    if classes is None:
        return [str(i) for i in range(k)]
    if len(classes) != k:
        raise ValueError(
            f"classes has {len(classes)} name(s) but the probability matrix has {k} columns"
        )
    return [str(c) for c in classes]


def confusion_matrix(
    y_true: ArrayLike, proba_matrix: ArrayLike, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Multiclass confusion matrix (predicted class = argmax) and per-class precision/recall/F1.

    Args:
        y_true: Class indices 0..k-1.
        proba_matrix: (n, k) class probabilities.
        classes: Class names, `classes[i]` for label i; default "0".."k-1".

    Returns:
        {"classes", "matrix" (rows: true class, columns: predicted class), "per_class": [{"class",
        "support", "predicted", "precision", "recall", "f1"}]}; precision is `None` for a class
        never predicted, recall for a class absent from y_true, F1 when both.

    Raises:
        ValueError: bad inputs or a class-name count that is not k.
    """
    y, p = validate_predictions("multiclass_classification", y_true, proba_matrix)
    k = p.shape[1]
    names = _class_names(classes, k)
    matrix = np.bincount(y * k + p.argmax(axis=1), minlength=k * k).reshape(k, k)
    tp = np.diag(matrix)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    per_class = [
        {
            "class": names[i],
            "support": int(support[i]),
            "predicted": int(predicted[i]),
            "precision": _ratio(tp[i], predicted[i]),
            "recall": _ratio(tp[i], support[i]),
            "f1": _ratio(2 * tp[i], support[i] + predicted[i]),
        }
        for i in range(k)
    ]
    return {"classes": names, "matrix": matrix.tolist(), "per_class": per_class}


def decision_threshold(
    y_true: ArrayLike,
    proba: ArrayLike,
    evaluation: EvaluationSpec,
    threshold: float | None = None,
) -> dict[str, Any]:
    """The binary decision threshold a report uses, with its confusion at that threshold.

    A given `threshold` (e.g. chosen on validation data) wins; else the cost-minimising one when
    `evaluation.costs` is set; else `evaluation.threshold`.

    Returns:
        `confusion_at` plus "source" ("given", "costs" or "spec"), and "cost"/"mean_cost" when
        costs are set.

    Raises:
        ValueError: bad inputs.
        UndefinedMetricError: there are no rows and the threshold is to be chosen by cost.
    """
    costs = evaluation.costs
    if threshold is None and costs is not None:
        return {**choose_threshold(y_true, proba, costs), "source": "costs"}
    source = "spec" if threshold is None else "given"
    chosen = confusion_at(y_true, proba, evaluation.threshold if threshold is None else threshold)
    if costs is not None:
        total = float(_total_cost(chosen["tp"], chosen["fp"], chosen["fn"], chosen["tn"], costs))
        rows = chosen["tp"] + chosen["fp"] + chosen["fn"] + chosen["tn"]
        chosen |= {"cost": total, "mean_cost": _ratio(total, rows)}
    return {**chosen, "source": source}


def _or_none(compute: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return compute()
    except UndefinedMetricError:
        return None


def task_curves(
    task: Task,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    evaluation: EvaluationSpec,
    classes: Sequence[str] | None = None,
    *,
    threshold: float | None = None,
) -> dict[str, Any]:
    """The per-task extras of an evaluation report.

    Binary: {"calibration", "threshold" (see `decision_threshold`), "roc", "pr"} with curves of
    at most `CURVE_POINTS` points; "roc"/"pr" are `None` when y_true holds a single class.
    Regression: {"residuals"}. Multiclass: {"confusion_matrix"}.

    Args:
        task: The use case's task.
        y_true: Labels or targets.
        y_pred: Predictions as for `compute_metrics`.
        evaluation: Calibration bins, costs and the default threshold.
        classes: Multiclass class names.
        threshold: Binary: a fixed decision threshold overriding costs and the spec's.

    Raises:
        ValueError: bad inputs, or a `threshold` for a task that is not binary.
    """
    _check_task(task)
    if threshold is not None and task != "binary_classification":
        raise ValueError(f"threshold applies to binary_classification only, not {task}")
    if task == "regression":
        return {"residuals": residuals(y_true, y_pred)}
    if task == "multiclass_classification":
        return {"confusion_matrix": confusion_matrix(y_true, y_pred, classes)}
    y, p = validate_binary(y_true, y_pred)
    _needs_rows("task curves", y.shape[0])
    return {
        "calibration": calibration_curve(y, p, evaluation.calibration_bins),
        "threshold": decision_threshold(y, p, evaluation, threshold),
        "roc": _or_none(lambda: roc_curve_points(y, p)),
        "pr": _or_none(lambda: pr_curve_points(y, p)),
    }

"""The evaluation report of a model on its holdout: overall metrics, slices, fairness, curves.

Pure functions over a Polars frame and a prediction array (no I/O). The report is a plain,
JSON-serialisable dict (`None` where a value is undefined, never NaN) so it can be stored as a
run artifact, read by promotion gates and shown by the app; `report_to_frames` turns its tables
into frames.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from loopline.spec import TASK_METRICS, EvaluationSpec, Segment, Task
from loopline.training.metrics import (
    compute_metrics_or_none,
    task_curves,
    validate_predictions,
)

NULL_LABEL = "(null)"
"""The slice or group of rows whose column is null (or NaN, for binned columns)."""

RATE_MEASURES: dict[str, bool] = {"selection_rate": True, "tpr": True, "fpr": False}
"""Fairness measures and whether higher is better (the best group has the highest TPR and
selection rate, the lowest FPR)."""

NON_BINARY_FAIRNESS_NOTE = (
    "selection rate, TPR and FPR are defined for binary_classification only; "
    "groups carry the task metrics instead"
)


def _format_edge(edge: float) -> str:
    return str(int(edge)) if float(edge).is_integer() and abs(edge) < 1e15 else repr(float(edge))


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Labels of the bins a segment's edges make, open bins included.

    For edges [0, 20, 100]: ["(-inf, 0)", "[0, 20)", "[20, 100)", "[100, inf)"]; label i is
    the bin of values v with `searchsorted(edges, v, side="right") == i`.
    """
    text = [_format_edge(e) for e in edges]
    inner = [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(text)]
    return [f"(-inf, {text[0]})", *inner, f"[{text[-1]}, inf)"]


def _value_groups(frame: pl.DataFrame, column: str) -> list[tuple[str, np.ndarray]]:
    """One group per distinct value (sorted, null last, labelled NULL_LABEL): row indices."""
    try:
        grouped = (
            frame.select(pl.col(column).alias("value"))
            .with_row_index("row")
            .group_by("value")
            .agg(pl.col("row"))
            .sort("value", nulls_last=True)
            .with_columns(
                pl.col("value").cast(pl.String).fill_null(NULL_LABEL).alias("label"),
            )
        )
    except pl.exceptions.PolarsError as exc:
        dtype = frame.schema[column]
        raise ValueError(f"column '{column}' of type {dtype} cannot be grouped: {exc}") from exc
    return [
        (label, np.asarray(rows, dtype=np.int64))
        for label, rows in zip(grouped["label"], grouped["row"], strict=True)
    ]


def _bin_groups(frame: pl.DataFrame, segment: Segment) -> list[tuple[str, np.ndarray]]:
    """Declared bins always (maybe empty); the open bins and nulls only when they have rows."""
    assert segment.bins is not None
    series = frame[segment.column]
    if not series.dtype.is_numeric():
        raise ValueError(
            f"segment '{segment.name}': bins need a numeric column, "
            f"'{segment.column}' is {series.dtype}"
        )
    values = series.cast(pl.Float64).to_numpy()
    missing = np.isnan(values)
    ids = np.searchsorted(np.asarray(segment.bins, dtype=np.float64), values, side="right")
    labels = bin_labels(segment.bins)
    groups = []
    for i, label in enumerate(labels):
        rows = np.flatnonzero((ids == i) & ~missing)
        if rows.size or 0 < i < len(labels) - 1:
            groups.append((label, rows))
    if missing.any():
        groups.append((NULL_LABEL, np.flatnonzero(missing)))
    return groups


def _metrics(
    task: Task, y: np.ndarray, p: np.ndarray, metrics: Sequence[str]
) -> dict[str, float | None]:
    if y.shape[0] == 0:
        return dict.fromkeys(metrics)
    return compute_metrics_or_none(task, y, p, metrics)[0]


def _slices(
    frame: pl.DataFrame,
    task: Task,
    y: np.ndarray,
    p: np.ndarray,
    evaluation: EvaluationSpec,
    metrics: Sequence[str],
) -> list[dict[str, Any]]:
    slices = []
    for segment in evaluation.segments:
        if segment.bins is None:
            groups = _value_groups(frame, segment.column)
        else:
            groups = _bin_groups(frame, segment)
        for label, rows in groups:
            slices.append(
                {
                    "segment": segment.name,
                    "column": segment.column,
                    "value": label,
                    "rows": int(rows.size),
                    **_metrics(task, y[rows], p[rows], metrics),
                    "small": bool(rows.size < evaluation.min_slice_rows),
                }
            )
    return slices


def _rate_ratio(rate: float | None, best: float | None, higher_is_better: bool) -> float | None:
    """rate/best (higher is better) or best/rate (lower is better); 1 when equal (so 0 vs 0)."""
    if rate is None or best is None:
        return None
    if rate == best:
        return 1.0
    numerator, denominator = (rate, best) if higher_is_better else (best, rate)
    return numerator / denominator if denominator else None


def _group_rates(
    y: np.ndarray, chosen: np.ndarray, rows: np.ndarray
) -> dict[str, float | int | None]:
    labels, picked = y[rows], chosen[rows]
    positives = int(labels.sum())
    negatives = int(rows.size - positives)
    return {
        "positives": positives,
        "negatives": negatives,
        "selection_rate": float(picked.mean()) if rows.size else None,
        "tpr": float(picked[labels == 1].mean()) if positives else None,
        "fpr": float(picked[labels == 0].mean()) if negatives else None,
    }


def _compare_groups(groups: list[dict[str, Any]]) -> tuple[dict[str, float | None], str]:
    """Add each group's ratio and difference to the best group; return the worst per measure.

    Best and worst are taken over the groups that are not small (all groups when every one is
    small), so a handful of rows cannot decide a fairness gate; small groups still get ratios.
    """
    reference = [g for g in groups if not g["small"]] or groups
    basis = "groups not flagged small" if len(reference) < len(groups) else "all groups"
    worst: dict[str, float | None] = {}
    for measure, higher_is_better in RATE_MEASURES.items():
        defined = [g[measure] for g in reference if g[measure] is not None]
        pick = max if higher_is_better else min
        best = pick(defined) if defined else None
        for group in groups:
            rate = group[measure]
            group[f"{measure}_ratio"] = _rate_ratio(rate, best, higher_is_better)
            group[f"{measure}_difference"] = (
                None if rate is None or best is None else float(rate - best)
            )
        ratios = [g[f"{measure}_ratio"] for g in reference if g[f"{measure}_ratio"] is not None]
        gaps = [
            abs(g[f"{measure}_difference"])
            for g in reference
            if g[f"{measure}_difference"] is not None
        ]
        worst[f"{measure}_ratio"] = min(ratios) if ratios else None
        worst[f"{measure}_difference"] = max(gaps) if gaps else None
    return worst, basis


def _fairness(
    frame: pl.DataFrame,
    task: Task,
    y: np.ndarray,
    p: np.ndarray,
    evaluation: EvaluationSpec,
    metrics: Sequence[str],
    threshold: float | None,
) -> list[dict[str, Any]]:
    binary = task == "binary_classification"
    chosen = p >= threshold if binary and threshold is not None else None
    attributes = []
    for column in evaluation.sensitive:
        groups = []
        for label, rows in _value_groups(frame, column):
            group: dict[str, Any] = {"group": label, "rows": int(rows.size)}
            if chosen is not None:
                group |= _group_rates(y, chosen, rows)
            group |= _metrics(task, y[rows], p[rows], metrics)
            group["small"] = bool(rows.size < evaluation.min_slice_rows)
            groups.append(group)
        entry: dict[str, Any] = {"attribute": column, "threshold": threshold, "groups": groups}
        if chosen is not None:
            worst, basis = _compare_groups(groups)
            entry |= {"worst": worst, "best_and_worst_over": basis, "note": None}
        else:
            entry |= {"worst": {}, "best_and_worst_over": None, "note": NON_BINARY_FAIRNESS_NOTE}
        attributes.append(entry)
    return attributes


def _check_frame(
    frame: pl.DataFrame, y_true_col: str, pred: np.ndarray, evaluation: EvaluationSpec
) -> None:
    if y_true_col not in frame.columns:
        raise ValueError(
            f"y_true_col '{y_true_col}' is not a column of the frame (columns: {frame.columns})"
        )
    if frame.height == 0:
        raise ValueError("the holdout frame has no rows: nothing to evaluate")
    if pred.ndim == 0 or pred.shape[0] != frame.height:
        got = "a scalar" if pred.ndim == 0 else f"{pred.shape[0]} rows"
        raise ValueError(f"pred has {got} but the frame has {frame.height}: they must align")
    nulls = frame[y_true_col].null_count()
    if nulls:
        raise ValueError(
            f"y_true_col '{y_true_col}' has {nulls} null label(s); labels are required"
        )
    for segment in evaluation.segments:
        if segment.column not in frame.columns:
            raise ValueError(
                f"evaluation segment '{segment.name}': column '{segment.column}' is not a column "
                "of the frame"
            )
    for column in evaluation.sensitive:
        if column not in frame.columns:
            raise ValueError(
                f"evaluation sensitive attribute '{column}' is not a column of the frame"
            )


def evaluation_report(
    frame: pl.DataFrame,
    *,
    task: Task,
    y_true_col: str,
    pred: ArrayLike,
    evaluation: EvaluationSpec,
    metrics: Sequence[str],
    classes: Sequence[str] | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Evaluate holdout predictions overall, per slice and per sensitive group.

    Metrics use `compute_metrics` (binary accuracy at 0.5, so models stay comparable); a
    metric undefined on a slice (one class for AUC, a constant target for r2) is `None`, as is
    every metric of an empty bin. Binary fairness rates use the report's decision threshold:
    `threshold` when given, else the cost-minimising one on this holdout when
    `evaluation.costs` is set, else `evaluation.threshold` (see `extras["threshold"]`).

    Args:
        frame: The holdout: the label column and the events columns that the segments and
            sensitive attributes name, one row per prediction.
        task: The use case's task.
        y_true_col: The label column (0/1, class index, or regression target).
        pred: Predictions aligned with the rows: class-1 probabilities, regression predictions,
            or an (n, k) probability matrix.
        evaluation: Segments, sensitive attributes, costs, threshold, bins, min slice rows.
        metrics: Metric names of the task (`TASK_METRICS`).
        classes: Multiclass class names (label i is classes[i]).
        threshold: Binary only: a fixed decision threshold (e.g. chosen on validation data).

    Returns:
        {"task", "overall": {"rows", metric...}, "slices": [{"segment", "column", "value",
        "rows", metric..., "small"}], "fairness": [{"attribute", "threshold", "groups": [...],
        "worst": {"<measure>_ratio", "<measure>_difference"}, "best_and_worst_over", "note"}],
        "extras": `task_curves(...)`, "notes": [why overall metrics are undefined]}.
        Slices of one segment partition the rows. Fairness groups (binary) carry rows,
        positives, negatives, selection_rate, tpr, fpr, and per measure the ratio and the
        difference (rate - best) against the best group (highest selection rate and TPR,
        lowest FPR; ratios are <= 1 for groups in the reference set, 1 for the best); `worst`
        holds the lowest ratio and the largest absolute difference per measure, over groups
        not flagged small. Rates undefined for a group (TPR without positives, FPR without
        negatives) are `None`.

    Raises:
        ValueError: a named column is missing, labels are null, `pred` does not align with the
            frame, a metric does not apply to the task, or the predictions are invalid.
    """
    if task not in TASK_METRICS:
        raise ValueError(f"task '{task}' is unknown (known: {sorted(TASK_METRICS)})")
    unknown = [m for m in metrics if m not in TASK_METRICS[task]]
    if unknown:
        raise ValueError(
            f"metric(s) {unknown} do not apply to {task} (known: {sorted(TASK_METRICS[task])})"
        )
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    predictions = np.asarray(pred)
    _check_frame(frame, y_true_col, predictions, evaluation)
    y, p = validate_predictions(task, frame[y_true_col].to_numpy(), predictions)
    extras = task_curves(task, y, p, evaluation, classes, threshold=threshold)
    overall, reasons = compute_metrics_or_none(task, y, p, metrics)
    decision = extras["threshold"]["threshold"] if task == "binary_classification" else None
    return {
        "task": task,
        "overall": {"rows": int(y.shape[0]), **overall},
        "slices": _slices(frame, task, y, p, evaluation, metrics),
        "fairness": _fairness(frame, task, y, p, evaluation, metrics, decision),
        "extras": extras,
        "notes": [f"overall {name}: {reason}" for name, reason in reasons.items()],
    }


_TEXT = {"segment", "column", "value", "attribute", "group"}
_COUNTS = {"rows", "positives", "negatives"}


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {}
    for name in columns:
        if name in _TEXT:
            schema[name] = pl.String()
        elif name in _COUNTS:
            schema[name] = pl.Int64()
        elif name == "small":
            schema[name] = pl.Boolean()
        else:
            schema[name] = pl.Float64()
    return pl.DataFrame([{c: row.get(c) for c in columns} for row in rows], schema=schema)


def report_to_frames(report: dict[str, Any]) -> dict[str, pl.DataFrame]:
    """The report's tables as frames, for storage and display.

    Returns:
        {"slices": one row per slice, "fairness": one row per (attribute, group) with the
        attribute's decision threshold}; undefined values are null, metric columns Float64.
    """
    metric_names = [k for k in report["overall"] if k != "rows"]
    slices = _frame(
        report["slices"],
        ["segment", "column", "value", "rows", *metric_names, "small"],
    )
    binary = report.get("task") == "binary_classification"
    rates = [
        name
        for measure in RATE_MEASURES
        for name in (measure, f"{measure}_ratio", f"{measure}_difference")
    ]
    fairness_columns = [
        "attribute",
        "threshold",
        "group",
        "rows",
        *(["positives", "negatives", *rates] if binary else []),
        *metric_names,
        "small",
    ]
    fairness_rows = [
        {"attribute": entry["attribute"], "threshold": entry["threshold"], **group}
        for entry in report["fairness"]
        for group in entry["groups"]
    ]
    return {
        "slices": slices,
        "fairness": _frame(fairness_rows, fairness_columns),
    }

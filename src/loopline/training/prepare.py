"""From a point-in-time training set to model matrices: the time-ordered split, the encoding,
the labels per task, and the split's record (boundaries and row counts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from loopline.features import transform
from loopline.spec import UseCaseSpec
from loopline.training.model import time_split


@dataclass
class Prepared:
    """Both sides of a training set, as frames and as model matrices.

    Attributes:
        train, valid: The rows of each side (all columns of the training set).
        x_train, y_train, x_valid, y_valid: Float64 model inputs and labels.
        feature_names: Model input columns, in order.
        num_class: Classes of a multiclass task (None otherwise).
    """

    train: pl.DataFrame
    valid: pl.DataFrame
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    feature_names: list[str]
    num_class: int | None

    def split_record(self, timestamp: str) -> dict[str, Any]:
        """Row counts and time boundaries of both sides, for the run record."""

        def bounds(frame: pl.DataFrame) -> dict[str, Any]:
            column = frame.get_column(timestamp)
            return {
                "rows": frame.height,
                "start": str(column.min()),
                "end": str(column.max()),
            }

        return {"train": bounds(self.train), "valid": bounds(self.valid)}


def labels_for_task(values: pl.Series, spec: UseCaseSpec) -> np.ndarray:
    """The label column as LightGBM wants it for the task.

    Raises:
        ValueError: nulls, or labels outside what the task allows (0/1 for binary, 0..k-1 for
            multiclass, finite numbers for regression).
    """
    column = spec.labels.column
    if values.null_count():
        raise ValueError(f"label '{column}': {values.null_count()} null value(s)")
    array = values.cast(pl.Float64).to_numpy()
    if not np.isfinite(array).all():
        raise ValueError(f"label '{column}': values must be finite numbers")
    if spec.task == "regression":
        return array
    allowed = 2 if spec.task == "binary_classification" else len(spec.labels.classes or [])
    whole = np.equal(np.mod(array, 1), 0)
    if not (whole & (array >= 0) & (array < allowed)).all():
        bad = array[~(whole & (array >= 0) & (array < allowed))][:5].tolist()
        raise ValueError(
            f"label '{column}': {spec.task} needs integer labels in 0..{allowed - 1}, got {bad}"
        )
    return array.astype(np.int64)


def prepare(training_set: pl.DataFrame, spec: UseCaseSpec) -> Prepared:
    """Split a training set by time and encode both sides for the model.

    Raises:
        ValueError: a side would be empty, or the labels do not fit the task.
    """
    train, valid = time_split(training_set, spec.events.timestamp, spec.training.valid_fraction)
    label = spec.labels.column
    return Prepared(
        train=train,
        valid=valid,
        x_train=transform.to_numpy(transform.model_inputs(train, spec)),
        y_train=labels_for_task(train.get_column(label), spec),
        x_valid=transform.to_numpy(transform.model_inputs(valid, spec)),
        y_valid=labels_for_task(valid.get_column(label), spec),
        feature_names=transform.feature_names(spec),
        num_class=len(spec.labels.classes or []) or None
        if spec.task == "multiclass_classification"
        else None,
    )

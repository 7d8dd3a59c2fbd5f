"""The one transformation from request fields and Feast features to model inputs.

Training, batch scoring and online serving all call `model_inputs`, so a model sees the same
encoding whichever path fed it. What goes in is declared, not coded: request fields and their
categories come from the use-case spec, Feast features and request-time inputs from the feature
service's layout in `loopline.features.feast_ops.SERVICES`.

Request-time inputs are values only known when the event happens: the amount against the
customer's own 30-day mean (`Ratio`), its z-score against the customer's amounts (`ZScore`),
the seconds since the customer's last transaction (`Elapsed`, from the event timestamp: the
event's own time in training and batch scoring, the request's time online). They are computed
here and nowhere else.

Every model input is Float64 and missing values are NaN (LightGBM's missing value), never null:
unknown categories, null fields, absent Feast rows and undefined ratios all become NaN.

A model is served through the feature service it was trained on: pass `service` (the model
version's `feature_service`) to get that service's inputs; the spec's service is the default.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from loopline.features.feast_ops import Elapsed, Ratio, ZScore, service_layout
from loopline.spec import UseCaseSpec

_NAN = float("nan")
_CATEGORY_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Null)


def feature_names(spec: UseCaseSpec, service: str | None = None) -> list[str]:
    """Model input columns in their fixed order: request fields, Feast features, request-time
    inputs.

    Args:
        spec: The use case.
        service: Feature service (default: the spec's).

    Raises:
        ValueError: the feature service has no declared layout.
    """
    layout = service_layout(service or spec.features.service, spec)
    return [*spec.features.request, *layout.model_features, *(d.name for d in layout.derived)]


def model_inputs(
    frame: pl.DataFrame, spec: UseCaseSpec, service: str | None = None
) -> pl.DataFrame:
    """Turn request fields plus Feast features into model inputs (all Float64, NaN for missing).

    Numeric request fields are cast to Float64; categorical ones become the index of the value in
    the spec's declared `values` (NaN when null or unknown); Feast features are cast to Float64;
    request-time inputs are computed from them (see the module doc), NaN when an input is
    missing or a denominator is 0. Extra columns in `frame` are ignored. Row i of the result
    depends only on row i of `frame`, so one row scored alone equals the same row inside a large
    frame.

    Args:
        frame: One row per event, with the spec's request fields, the service's features and,
            when the service has an `Elapsed` input, the spec's event timestamp.
        spec: The use case.
        service: Feature service the features came from (default: the spec's).

    Returns:
        The columns of `feature_names(spec, service)`, in that order.

    Raises:
        ValueError: a needed column is missing or a field has a type that cannot be encoded.
    """
    layout = service_layout(service or spec.features.service, spec)
    timestamp = spec.events.timestamp
    needed = [*spec.features.request, *layout.features]
    for derived in layout.derived:
        needed += [c for c in derived.needs if c not in needed]
        if isinstance(derived, Elapsed) and timestamp not in needed:
            needed.append(timestamp)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"model inputs: missing column(s) {', '.join(missing)}")

    categorical = set(spec.features.categorical)
    columns: dict[str, pl.Expr] = {}
    for name in spec.features.request:
        if name in categorical:
            columns[name] = _category_codes(frame, name, spec.events.columns[name].values or [])
        else:
            columns[name] = _numeric(frame, name)
    for name in layout.features:
        columns[name] = _numeric(frame, name)

    def value(name: str) -> pl.Expr:
        return columns.get(name, _numeric(frame, name))

    derived_columns: dict[str, pl.Expr] = {}
    for derived in layout.derived:
        if isinstance(derived, Ratio):
            expr = _divide(value(derived.numerator), value(derived.denominator))
        elif isinstance(derived, ZScore):
            expr = _divide(value(derived.value) - value(derived.mean), value(derived.std))
        elif isinstance(derived, Elapsed):
            # Microseconds below 2**53 subtract exactly; a multiply (not a division, which
            # Polars may turn into a reciprocal on long columns only) keeps rows independent.
            expr = (_epoch_us(frame, timestamp) - value(derived.since)) * 1e-6
        else:  # pragma: no cover - the layout types are closed
            raise TypeError(f"unknown request-time input {derived!r}")
        derived_columns[derived.name] = expr
    outputs = {name: columns[name] for name in feature_names_of(spec, layout)}
    outputs.update(derived_columns)
    return frame.select(expr.alias(name) for name, expr in outputs.items())


def feature_names_of(spec: UseCaseSpec, layout: object) -> list[str]:
    """Request fields and model features of a layout (without the request-time inputs)."""
    return [*spec.features.request, *layout.model_features]  # type: ignore[attr-defined]


def _divide(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator; NaN when the denominator is 0 (or either side is NaN)."""
    return pl.when(denominator == 0).then(pl.lit(_NAN)).otherwise(numerator / denominator)


def _epoch_us(frame: pl.DataFrame, name: str) -> pl.Expr:
    """A timestamp column as Float64 microseconds since the epoch (naive values are UTC)."""
    dtype = frame.schema[name]
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"{name}: must be a datetime to compute elapsed time, got {dtype}")
    return pl.col(name).dt.epoch("us").cast(pl.Float64).fill_null(_NAN)


def to_numpy(frame: pl.DataFrame) -> np.ndarray:
    """Model inputs as a row-major float64 matrix for LightGBM (NaN marks missing values).

    Raises:
        ValueError: a column is not Float64 (pass the output of `model_inputs`).
    """
    wrong = [f"{n} ({t})" for n, t in frame.schema.items() if t != pl.Float64]
    if wrong:
        raise ValueError(f"model inputs: columns must be Float64: {', '.join(wrong)}")
    # Row-major straight from Polars: ~10x faster than a column-major copy made contiguous.
    return np.ascontiguousarray(frame.to_numpy(order="c"), dtype=np.float64)


def _numeric(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema[name]
    if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.Null)):
        raise ValueError(f"{name}: must be numeric to become a model input, got {dtype}")
    return pl.col(name).cast(pl.Float64).fill_null(_NAN)


def _category_codes(frame: pl.DataFrame, name: str, values: list[str]) -> pl.Expr:
    dtype = frame.schema[name]
    if not isinstance(dtype, _CATEGORY_DTYPES):
        raise ValueError(f"{name}: a categorical field must hold strings, got {dtype}")
    codes = [float(i) for i in range(len(values))]
    return (
        pl.col(name)
        .cast(pl.String)
        .replace_strict(values, codes, default=None, return_dtype=pl.Float64)
        .fill_null(_NAN)
    )

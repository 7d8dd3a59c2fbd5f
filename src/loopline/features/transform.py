"""The one transformation from request fields and Feast features to model inputs.

Training, batch scoring and online serving all call `model_inputs`, so a model sees the same
encoding whichever path fed it. What goes in is declared, not coded: request fields and their
categories come from the use-case spec, Feast features and derived ratios from the feature
service's layout in `loopline.features.feast_ops.SERVICES`.

Every model input is Float64 and missing values are NaN (LightGBM's missing value), never null:
unknown categories, null fields, absent Feast rows and undefined ratios all become NaN.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from loopline.features.feast_ops import service_layout
from loopline.spec import UseCaseSpec

_NAN = float("nan")
_CATEGORY_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Null)


def feature_names(spec: UseCaseSpec) -> list[str]:
    """Model input columns in their fixed order: request fields, Feast features, derived ratios.

    Raises:
        ValueError: the spec's feature service has no declared layout.
    """
    layout = service_layout(spec.features.service)
    return [*spec.features.request, *layout.features, *(r.name for r in layout.derived)]


def model_inputs(frame: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """Turn request fields plus Feast features into model inputs (all Float64, NaN for missing).

    Numeric request fields are cast to Float64; categorical ones become the index of the value in
    the spec's declared `values` (NaN when null or unknown); Feast features are cast to Float64;
    each declared ratio is numerator / denominator, NaN when either is missing or the
    denominator is 0. Extra columns in `frame` are ignored. Row i of the result depends only on
    row i of `frame`, so one row scored alone equals the same row inside a large frame.

    Args:
        frame: One row per event, with the spec's request fields and the service's features.
        spec: The use case.

    Returns:
        The columns of `feature_names(spec)`, in that order.

    Raises:
        ValueError: a needed column is missing or a field has a type that cannot be encoded.
    """
    layout = service_layout(spec.features.service)
    needed = [*spec.features.request, *layout.features]
    needed += [c for r in layout.derived for c in (r.numerator, r.denominator) if c not in needed]
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
    for ratio in layout.derived:
        numerator = columns.get(ratio.numerator, _numeric(frame, ratio.numerator))
        denominator = columns.get(ratio.denominator, _numeric(frame, ratio.denominator))
        columns[ratio.name] = (
            pl.when(denominator == 0).then(pl.lit(_NAN)).otherwise(numerator / denominator)
        )
    return frame.select(expr.alias(name) for name, expr in columns.items())


def to_numpy(frame: pl.DataFrame) -> np.ndarray:
    """Model inputs as a row-major float64 matrix for LightGBM (NaN marks missing values).

    Raises:
        ValueError: a column is not Float64 (pass the output of `model_inputs`).
    """
    wrong = [f"{n} ({t})" for n, t in frame.schema.items() if t != pl.Float64]
    if wrong:
        raise ValueError(f"model inputs: columns must be Float64: {', '.join(wrong)}")
    return np.ascontiguousarray(frame.to_numpy(), dtype=np.float64)


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

"""Feature drift between two whylogs profiles: the population stability index (PSI).

PSI is an effect size: how far the target distribution moved from the reference, whatever the
sample size. (whylogs' own KS test gives p-values, which call a negligible shift "drift" once
samples are large.) It is computed from the profiles' KLL sketches alone:

1. split points: the reference's quantiles at 1/bins, 2/bins, ... (duplicates dropped, so a
   discrete or categorical feature, encoded as Float64 codes, gets one bin per code or group
   of codes instead of empty bins), plus the reference's range, so values outside it (a
   category code never seen in training) get bins of their own;
2. the mass of each bin [s_i, s_i+1) in reference and target, from each sketch's CDF at those
   split points, scaled by the share of non-null rows; nulls get a bin of their own, so a
   feature that stops arriving (unknown entities in the online store) is drift too;
3. epsilon smoothing (an empty bin would make the log infinite), then
   PSI = sum((target - reference) * ln(target / reference)).

Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large. Under no drift the expected PSI
is about (bins - 1) * (1/n_target + 1/n_reference), 0.004 at 5,000 rows each; `min_rows` keeps
small windows, whose noise floor is higher, from being judged at all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

PSI = "psi"


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict on one feature (or on the prediction) for one window."""

    feature: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    sample_size: int
    reference_size: int
    note: str | None = None


@dataclass(frozen=True)
class _Column:
    rows: int
    nulls: int
    sketch: Any  # whylogs_sketching.kll_doubles_sketch, or None for a non-numeric column

    @property
    def values(self) -> int:
        return 0 if self.sketch is None or self.sketch.is_empty() else self.sketch.get_n()


def _column(view: DatasetProfileView, name: str) -> _Column | None:
    column = view.get_column(name)
    if column is None:
        return None
    counts = column.get_metric("counts")
    distribution = column.get_metric("distribution")
    rows = int(counts.n.value) if counts is not None else 0
    nulls = int(counts.null.value) if counts is not None else 0
    sketch = distribution.kll.value if distribution is not None else None
    return _Column(rows=rows, nulls=nulls, sketch=sketch)


def split_points(sketch: Any, bins: int) -> list[float]:
    """Bin edges from a reference sketch; empty for an empty sketch.

    The unique quantiles at 1/bins .. (bins-1)/bins, plus the reference minimum and the next
    float above its maximum: values outside the reference range (a new category code, amounts
    never seen in training) land in bins of their own, which the reference left empty.
    """
    if sketch is None or sketch.is_empty():
        return []
    quantiles = sketch.get_quantiles([i / bins for i in range(1, bins)])
    low, high = float(sketch.get_min_value()), float(sketch.get_max_value())
    edges = {float(q) for q in quantiles} | {low, math.nextafter(high, math.inf)}
    return sorted(e for e in edges if math.isfinite(e))


def bin_masses(column: _Column, points: list[float]) -> list[float]:
    """Share of rows in each bin (len(points) + 1 value bins, then the null bin); sums to 1."""
    if column.rows == 0:
        return [0.0] * (len(points) + 2)
    null_share = column.nulls / column.rows
    value_share = 1.0 - null_share
    if column.values == 0:
        # No finite values at all: everything non-null is unaccounted for, put it in bin 0.
        return [value_share, *([0.0] * len(points)), null_share]
    if points:
        cdf = column.sketch.get_cdf(points)
        cumulative = [0.0, *[float(c) for c in cdf[:-1]], 1.0]
        shares = [max(b - a, 0.0) for a, b in itertools.pairwise(cumulative)]
    else:
        shares = [1.0]
    return [s * value_share for s in shares] + [null_share]


def psi(reference: Sequence[float], target: Sequence[float], *, epsilon: float = 1e-4) -> float:
    """Population stability index of two bin-mass vectors (each summing to 1), smoothed.

    Raises:
        ValueError: the vectors differ in length or epsilon is not positive.
    """
    if len(reference) != len(target):
        raise ValueError(f"reference has {len(reference)} bins but target has {len(target)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon: must be > 0, got {epsilon}")
    k = len(reference)
    total = 0.0
    for r, t in zip(reference, target, strict=True):
        r_s = (r + epsilon) / (1 + k * epsilon)
        t_s = (t + epsilon) / (1 + k * epsilon)
        total += (t_s - r_s) * math.log(t_s / r_s)
    return total


def feature_drift(
    reference: DatasetProfileView,
    target: DatasetProfileView,
    features: list[str],
    *,
    psi_threshold: float,
    min_rows: int,
    bins: int = 10,
    epsilon: float = 1e-4,
) -> list[FeatureDrift]:
    """PSI of each feature between a reference profile and a target profile.

    A feature is drifted when its PSI exceeds `psi_threshold` and the target holds at least
    `min_rows` rows. A feature with fewer target rows, missing from either profile, or without
    numeric values is reported with drifted False and a note saying why, never as drift.

    Args:
        reference: Profile of the training data of the model (its model inputs).
        target: Profile of what was served in the window.
        features: Column names to compare, in the order results are returned.
        psi_threshold: PSI above which a feature counts as drifted (e.g. 0.2).
        min_rows: Fewest target rows a verdict is made on.
        bins: Reference-quantile bins (before dropping duplicate split points).
        epsilon: Smoothing added to every bin share.

    Raises:
        ValueError: psi_threshold, min_rows or bins out of range.
    """
    if not psi_threshold > 0:
        raise ValueError(f"psi_threshold: must be > 0, got {psi_threshold}")
    if min_rows < 1:
        raise ValueError(f"min_rows: must be >= 1, got {min_rows}")
    if bins < 2:
        raise ValueError(f"bins: must be >= 2, got {bins}")
    results = []
    for name in features:
        ref, tgt = _column(reference, name), _column(target, name)
        statistic, note = _compare(ref, tgt, bins=bins, epsilon=epsilon)
        sample = tgt.rows if tgt else 0
        if note is None and sample < min_rows:
            note = f"only {sample} rows in the window (min_rows {min_rows}); not judged"
        results.append(
            FeatureDrift(
                feature=name,
                method=PSI,
                statistic=statistic,
                threshold=psi_threshold,
                drifted=note is None and statistic > psi_threshold,
                sample_size=sample,
                reference_size=ref.rows if ref else 0,
                note=note,
            )
        )
    return results


def _compare(
    ref: _Column | None, tgt: _Column | None, *, bins: int, epsilon: float
) -> tuple[float, str | None]:
    """(PSI, None), or (0.0, why no PSI could be computed)."""
    if ref is None or ref.rows == 0:
        return 0.0, "not in the reference profile"
    if tgt is None:
        return 0.0, "not in the window's profile (not logged by serving)"
    if tgt.rows == 0:
        return 0.0, "no rows in the window"
    for side, column in (("reference", ref), ("window", tgt)):
        if column.values == 0 and column.nulls < column.rows:
            return 0.0, f"no numeric values in the {side}; PSI needs numbers"
    points = split_points(ref.sketch, bins)
    return psi(bin_masses(ref, points), bin_masses(tgt, points), epsilon=epsilon), None

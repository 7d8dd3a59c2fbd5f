"""Served-vs-offline parity: what a request was served against the point-in-time offline value.

For each logged prediction, the offline value of every feature of its service is recomputed at
the request's own time (the event time the service used) through the same point-in-time join
training uses (`feast_ops.training_set`), and compared with the value the request was actually
served. Counts must match exactly; floats within a relative and absolute tolerance; a value
served as missing must be missing offline, and the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from loopline.features.feast_ops import TIMESTAMP, service_layout, training_set
from loopline.spec import UseCaseSpec

DEFAULT_TOLERANCE = 1e-9
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class FeatureParity:
    """One feature's comparison.

    Attributes:
        feature: Feature name.
        view: Feature view it belongs to.
        checked: Requests compared.
        mismatches: Requests whose served value differs from the offline one.
        examples: Up to MAX_EXAMPLES mismatches: request_id, ts, served, offline.
    """

    feature: str
    view: str
    checked: int
    mismatches: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    beyond_watermark: int = 0


@dataclass(frozen=True)
class ServedSkewReport:
    """Parity of served features over logged requests.

    Attributes:
        requests: Logged requests compared.
        checked: Feature values compared (requests x features).
        mismatches: Values that differ beyond the tolerance.
        tolerance: Relative and absolute tolerance for floats.
        features: Per feature, in service order.
        services: Feature services of the compared requests.
    """

    requests: int
    checked: int
    mismatches: int
    tolerance: float
    features: list[FeatureParity]
    services: list[str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, worst features first."""
        worst = sorted(self.features, key=lambda f: -f.mismatches)
        return {
            "requests": self.requests,
            "checked": self.checked,
            "mismatches": self.mismatches,
            "tolerance": self.tolerance,
            "services": self.services,
            "features": [f.__dict__ for f in worst],
        }


def same_value(served: Any, offline: Any, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether a served value equals the offline one (None and NaN both mean missing)."""
    served_missing = served is None or (isinstance(served, float) and math.isnan(served))
    offline_missing = offline is None or (isinstance(offline, float) and math.isnan(offline))
    if served_missing or offline_missing:
        return served_missing and offline_missing
    if isinstance(served, bool) or isinstance(offline, bool):
        return bool(served) == bool(offline)
    if isinstance(served, int | float) and isinstance(offline, int | float):
        return math.isclose(float(served), float(offline), rel_tol=tolerance, abs_tol=tolerance)
    return served == offline


def served_skew(
    store: Any,
    logged: pl.DataFrame,
    spec: UseCaseSpec,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    watermarks: Mapping[str, datetime | None] | None = None,
) -> ServedSkewReport:
    """Compare logged served features with point-in-time offline values at each request's time.

    A request later than its view's offline watermark (the instant the table is built to) is
    not compared for that view: windows that emptied after the watermark have no offline row
    yet, so the offline value there is stale while the served one is right. Such requests are
    counted per feature as `beyond_watermark`.

    Args:
        store: An open Feast feature store.
        logged: Prediction log rows (`read_prediction_log`): request_id, ts, feature_service,
            and struct columns `entities` and `features`.
        spec: The use case.
        tolerance: Relative and absolute tolerance for floats.
        watermarks: View -> the offline table's watermark (None or missing: no limit).

    Raises:
        ValueError: the log lacks the columns the comparison needs (written by an older
            service that did not log the served features).
    """
    needed = ["request_id", "ts", "feature_service", "entities", "features"]
    missing = [c for c in needed if c not in logged.columns]
    if missing:
        raise ValueError(
            f"prediction log: missing column(s) {', '.join(missing)} (predictions logged "
            "before the service recorded the features it served cannot be compared)"
        )
    per_feature: list[FeatureParity] = []
    services = sorted(s for s in logged["feature_service"].unique().to_list() if s)
    for service in services:
        rows = logged.filter(pl.col("feature_service") == service)
        per_feature.extend(_compare(store, rows, spec, service, tolerance, watermarks or {}))
    checked = sum(f.checked for f in per_feature)
    mismatches = sum(f.mismatches for f in per_feature)
    return ServedSkewReport(
        requests=logged.height,
        checked=checked,
        mismatches=mismatches,
        tolerance=tolerance,
        features=per_feature,
        services=services,
    )


def _compare(
    store: Any,
    rows: pl.DataFrame,
    spec: UseCaseSpec,
    service: str,
    tolerance: float,
    watermarks: Mapping[str, datetime | None],
) -> Sequence[FeatureParity]:
    layout = service_layout(service, spec)
    entities = rows.get_column("entities").struct.unnest()
    keys = [k for k in spec.entity_keys if k in entities.columns]
    entity_df = entities.select(keys).with_columns(
        rows.get_column("ts").dt.convert_time_zone("UTC").alias(TIMESTAMP)
    )
    offline = training_set(store, entity_df, service).frame
    served = rows.get_column("features").struct.unnest()
    ids = rows.get_column("request_id").to_list()
    stamps = rows.get_column("ts").to_list()
    out = []
    for view, names in layout.views.items():
        limit = watermarks.get(view)
        comparable = [limit is None or stamp <= limit for stamp in stamps]
        for name in names:
            got = served.get_column(name).to_list() if name in served.columns else [None] * len(ids)
            want = offline.get_column(name).to_list()
            bad = [i for i, (a, b) in enumerate(zip(got, want, strict=True))
                   if comparable[i] and not same_value(a, b, tolerance)]  # fmt: skip
            examples = [
                {"request_id": ids[i], "ts": stamps[i].isoformat(), "served": got[i],
                 "offline": want[i]}
                for i in bad[:MAX_EXAMPLES]
            ]  # fmt: skip
            checked = sum(comparable)
            out.append(FeatureParity(name, view, checked, len(bad), examples, len(ids) - checked))
    return out

"""Champion vs challenger on live traffic, from the prediction log (and labels once they land).

A challenger runs beside the champion in one of two ways (`spec.serving`):

- `shadow`: it scores the same requests as the champion, off the critical path; each request
  has a champion row and a shadow row with the same `request_id`. The rows are paired: how
  often the two agree (binary: the same decision, each at its own decision threshold;
  regression: the mean absolute difference and the share of pairs within 5% of the champion),
  how far apart their score distributions are, and, on labelled requests, the primary metric
  of both on the same requests (a paired bootstrap).
- `canary`: it answers a sticky share of the entities itself; the two groups are different
  requests, so only their distributions (and each group's metric on its own labelled requests,
  an unpaired bootstrap) can be compared.

Distances: the two-sample Kolmogorov-Smirnov statistic (the largest gap between the empirical
CDFs) and the population stability index over the champion's score deciles (`drift.psi`).
Labels come from the lake table of `spec.labels`, joined by event id (the log's `event_id`,
else the request id); requests without a label yet are left out of the metric, never counted
as negatives.

Nothing here raises on an empty window, a missing challenger or missing labels: the result
says why a figure is absent (`reason`, `metric_reason`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from loopline.lake import tables
from loopline.monitoring.drift import psi
from loopline.registry.gates import LOWER_IS_BETTER
from loopline.serving.prediction_log import read_prediction_log
from loopline.spec import UseCaseSpec
from loopline.training.metrics import UndefinedMetricError, compute_metrics

if TYPE_CHECKING:
    from loopline.settings import Settings
    from loopline.store import Store

log = logging.getLogger(__name__)

AUTO = "auto"
SHADOW = "shadow"
CANARY = "canary"
CHAMPION = "champion"
CHALLENGER_ROLES = (AUTO, SHADOW, CANARY)
WITHIN = 0.05
"""Regression: a shadow score agrees when it is within this share of the champion's."""
DECILES = 10
HISTOGRAM_BINS = 20
MIN_LABELLED = 2
_LOWER = LOWER_IS_BETTER | {"mape"}


@dataclass(frozen=True)
class RoleScores:
    """One side of the comparison: which version answered, on how many requests, how.

    Attributes:
        role: "champion", "shadow" or "canary".
        model_version: The version number of the rows compared.
        model_version_id: Its registry id (None if the log did not record it).
        rows: Rows compared (for a shadow: the paired requests).
        mean_score: Mean score of those rows.
        threshold: Binary tasks: the decision threshold of this version.
    """

    role: str
    model_version: int
    model_version_id: str | None
    rows: int
    mean_score: float | None
    threshold: float | None = None


@dataclass(frozen=True)
class Agreement:
    """How often a shadow agrees with the champion on the same requests.

    Attributes:
        pairs: Requests scored by both.
        decisions: Binary: the share of pairs with the same decision (None otherwise).
        mean_abs_difference: Mean |shadow - champion| score.
        within_share: Regression: the share of pairs within `WITHIN` of the champion's score.
    """

    pairs: int
    decisions: float | None
    mean_abs_difference: float
    within_share: float | None


@dataclass(frozen=True)
class Distance:
    """How far the challenger's score distribution is from the champion's.

    Attributes:
        ks: Two-sample Kolmogorov-Smirnov statistic in [0, 1].
        psi: Population stability index over the champion's score deciles.
    """

    ks: float
    psi: float


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap 95% confidence interval (None without resamples)."""

    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class LiveMetric:
    """The primary metric of both models on labelled live requests.

    Attributes:
        metric: The spec's primary metric.
        higher_is_better: Whether a larger value is better (False for losses and errors).
        paired: True for a shadow (the same requests), False for a canary.
        champion_rows: Labelled champion rows.
        challenger_rows: Labelled challenger rows.
        champion: The champion's metric.
        challenger: The challenger's metric.
        difference: challenger - champion.
        resamples: Bootstrap resamples on which the metric was defined for both.
    """

    metric: str
    higher_is_better: bool
    paired: bool
    champion_rows: int
    challenger_rows: int
    champion: Interval
    challenger: Interval
    difference: Interval
    resamples: int


@dataclass(frozen=True)
class ScoreBin:
    """One bar of the score histograms: the share of a role's rows in [low, high)."""

    role: str
    low: float
    high: float
    rows: int
    share: float


@dataclass(frozen=True)
class LiveComparison:
    """Champion vs challenger over one window of the prediction log.

    Attributes:
        model_name: The model compared.
        task: The use case's task.
        challenger_role: "shadow" or "canary" (None: no challenger was found).
        since: Inclusive lower bound of the window (None: from the start of the log).
        until: Exclusive upper bound (None: up to now).
        champion: The champion's side (None: no champion rows).
        challenger: The challenger's side (None: no challenger rows).
        agreement: Shadow only: agreement on the paired requests.
        distance: Distance between the score distributions.
        metric: The primary metric on labelled requests (None: see `metric_reason`).
        histogram: Score histograms of both sides, for charts.
        reason: Why nothing could be compared (None when something was).
        metric_reason: Why `metric` is None.
        notes: What was left out, e.g. rows of earlier versions.
    """

    model_name: str
    task: str
    challenger_role: str | None
    since: datetime | None
    until: datetime | None
    champion: RoleScores | None = None
    challenger: RoleScores | None = None
    agreement: Agreement | None = None
    distance: Distance | None = None
    metric: LiveMetric | None = None
    histogram: tuple[ScoreBin, ...] = ()
    reason: str | None = None
    metric_reason: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO strings, the nested results as dicts."""
        out = asdict(self)
        for key in ("since", "until"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["histogram"] = [asdict(b) for b in self.histogram]
        out["notes"] = list(self.notes)
        return out


# --- pure statistics ----------------------------------------------------------------------


def ks_statistic(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: max |F_a(x) - F_b(x)| over all x.

    Raises:
        ValueError: either sample is empty.
    """
    x, y = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if not x.size or not y.size:
        raise ValueError("ks_statistic: both samples need at least one value")
    grid = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, grid, side="right") / x.size
    cdf_y = np.searchsorted(y, grid, side="right") / y.size
    return float(np.max(np.abs(cdf_x - cdf_y)))


def decile_psi(
    reference: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray
) -> float:
    """PSI of `target` against `reference` over the reference's deciles.

    Bins are cut at the reference's 10%, ..., 90% quantiles (duplicates dropped, so a score
    with few distinct values gets fewer bins), each bin right-closed.

    Raises:
        ValueError: either sample is empty.
    """
    ref, tgt = np.asarray(reference, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if not ref.size or not tgt.size:
        raise ValueError("decile_psi: both samples need at least one value")
    edges = np.unique(np.quantile(ref, np.arange(1, DECILES) / DECILES))
    k = edges.size + 1
    ref_share = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=k) / ref.size
    tgt_share = np.bincount(np.searchsorted(edges, tgt, side="left"), minlength=k) / tgt.size
    return psi(ref_share.tolist(), tgt_share.tolist())


def score_histogram(
    groups: dict[str, np.ndarray], *, bins: int = HISTOGRAM_BINS, unit: bool = False
) -> tuple[ScoreBin, ...]:
    """Equal-width histograms of each role's scores over their common range.

    Args:
        groups: Role -> scores.
        bins: Number of bins.
        unit: Use [0, 1] as the range (probabilities) instead of the scores' own.
    """
    values = [v for v in groups.values() if v.size]
    if not values:
        return ()
    if unit:
        low, high = 0.0, 1.0
    else:
        low = float(min(v.min() for v in values))
        high = float(max(v.max() for v in values))
        if high <= low:
            high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    out = []
    for role, scores in groups.items():
        counts, _ = np.histogram(scores, bins=edges)
        total = max(int(scores.size), 1)
        out.extend(
            ScoreBin(role, float(edges[i]), float(edges[i + 1]), int(c), int(c) / total)
            for i, c in enumerate(counts)
        )
    return tuple(out)


def agreement(
    task: str,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    thresholds: tuple[float, float] = (0.5, 0.5),
) -> Agreement:
    """How two models' scores on the same requests agree (see `Agreement`).

    Args:
        task: The use case's task.
        champion: The champion's scores, one per paired request.
        challenger: The challenger's scores on the same requests, in the same order.
        thresholds: Binary: the (champion, challenger) decision thresholds.
    """
    difference = np.abs(challenger - champion)
    decisions = within = None
    if task == "binary_classification":
        same = (champion >= thresholds[0]) == (challenger >= thresholds[1])
        decisions = float(same.mean()) if same.size else None
    elif task == "regression" and champion.size:
        within = float((difference <= WITHIN * np.abs(champion)).mean())
    mean_diff = float(difference.mean()) if difference.size else 0.0
    return Agreement(int(champion.size), decisions, mean_diff, within)


def _metric(task: str, metric: str, y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    value = compute_metrics(task, y, p, [metric], threshold=threshold)[metric]  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise UndefinedMetricError(f"{metric} is not finite on these rows")
    return float(value)


def _interval(value: float | None, samples: list[float]) -> Interval:
    if not samples:
        return Interval(value, None, None)
    low, high = np.percentile(np.asarray(samples), [2.5, 97.5])
    return Interval(value, float(low), float(high))


def bootstrap_metric(
    task: str,
    metric: str,
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    *,
    paired: bool,
    bootstrap: int = 1000,
    seed: int = 0,
    thresholds: tuple[float, float] = (0.5, 0.5),
) -> LiveMetric:
    """The metric of both models with bootstrap 95% intervals of each and of the difference.

    Args:
        task: The use case's task.
        metric: A metric of `loopline.training.metrics` for this task.
        champion: (labels, scores) of the champion's labelled rows.
        challenger: (labels, scores) of the challenger's labelled rows; when `paired`, the same
            requests in the same order as the champion's (so the labels are the same).
        paired: Resample requests once for both (shadow) or each side on its own (canary).
        bootstrap: Resamples (0: point estimates only).
        seed: Seed of the resampling.
        thresholds: Binary: decision thresholds (for `accuracy`).

    Raises:
        UndefinedMetricError: the metric is undefined on the full rows of either side.
        ValueError: bad labels or scores (see `validate_predictions`), or `paired` with sides
            of different lengths.
    """
    (y_c, p_c), (y_s, p_s) = champion, challenger
    if paired and y_c.shape[0] != y_s.shape[0]:
        raise ValueError("paired: champion and challenger need the same requests")
    value_c = _metric(task, metric, y_c, p_c, thresholds[0])
    value_s = _metric(task, metric, y_s, p_s, thresholds[1])
    rng = np.random.default_rng(seed)
    samples: tuple[list[float], list[float], list[float]] = ([], [], [])
    for _ in range(bootstrap):
        i_c = rng.integers(0, y_c.shape[0], y_c.shape[0])
        i_s = i_c if paired else rng.integers(0, y_s.shape[0], y_s.shape[0])
        try:
            m_c = _metric(task, metric, y_c[i_c], p_c[i_c], thresholds[0])
            m_s = _metric(task, metric, y_s[i_s], p_s[i_s], thresholds[1])
        except UndefinedMetricError:  # e.g. a resample with one class: skip it
            continue
        for bucket, value in zip(samples, (m_c, m_s, m_s - m_c), strict=True):
            bucket.append(value)
    return LiveMetric(
        metric=metric,
        higher_is_better=metric not in _LOWER,
        paired=paired,
        champion_rows=int(y_c.shape[0]),
        challenger_rows=int(y_s.shape[0]),
        champion=_interval(value_c, samples[0]),
        challenger=_interval(value_s, samples[1]),
        difference=_interval(value_s - value_c, samples[2]),
        resamples=len(samples[0]),
    )


# --- reading the log, the labels and the registry -------------------------------------------


def _with_event_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """The log rows with an `event_id` column: the logged event id, else the request id."""
    extra = frame.schema.get("extra")
    logged = pl.lit(None, pl.String)
    if isinstance(extra, pl.Struct) and "event_id" in [f.name for f in extra.fields]:
        logged = pl.col("extra").struct.field("event_id").cast(pl.String)
    return frame.with_columns(event_id=pl.coalesce(logged, pl.col("request_id")))


def read_labels(settings: Settings, spec: UseCaseSpec) -> pl.DataFrame | None:
    """The labels table as (event_id, label), the latest label per id; None if not ingested."""
    uri = tables.table_uri(settings.lake_dir, spec.labels.table)
    if not tables.exists(uri):
        return None
    id_column = spec.labels.id or spec.events.id
    if id_column is None:
        return None
    frame = tables.read(uri)
    stamp = spec.labels.timestamp
    order = [stamp] if stamp in frame.columns else []
    return (
        frame.select(
            pl.col(id_column).cast(pl.String).alias("event_id"),
            pl.col(spec.labels.column).cast(pl.Float64).alias("label"),
            *order,
        )
        .filter(pl.col("event_id").is_not_null() & pl.col("label").is_finite())
        .sort(order or "event_id", nulls_last=False)
        .unique("event_id", keep="last", maintain_order=True)
        .select("event_id", "label")
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 < value < 1 else None


def decision_thresholds(
    store: Store | None, spec: UseCaseSpec, version_ids: Sequence[str | None]
) -> dict[str | None, float]:
    """Each version's binary decision threshold: the one it records (its metrics, else its
    run's evaluation summary), else the spec's `evaluation.threshold`."""
    from loopline.store.tables import ModelVersion, Run

    out: dict[str | None, float] = {vid: spec.evaluation.threshold for vid in version_ids}
    if store is None:
        return out
    with store.reader() as session:
        for vid in version_ids:
            version = session.get(ModelVersion, vid) if vid else None
            if version is None:
                continue
            recorded = _number((version.metrics or {}).get("threshold"))
            if recorded is None:
                run = session.get(Run, version.run_id)
                evaluation = (run.summary or {}).get("evaluation") if run else None
                if isinstance(evaluation, dict):
                    recorded = _number(evaluation.get("threshold"))
            if recorded is not None:
                out[vid] = recorded
    return out


def _latest_version(rows: pl.DataFrame, role: str, notes: list[str]) -> pl.DataFrame:
    """The rows of the version that answered last in this role (a promotion mid-window leaves
    rows of an earlier one: they are left out, with a note)."""
    last = rows.row(rows.height - 1, named=True)
    keep = rows.filter(pl.col("model_version") == last["model_version"])
    if keep.height < rows.height:
        earlier = sorted(set(rows["model_version"].to_list()) - {last["model_version"]})
        notes.append(
            f"{rows.height - keep.height} {role} row(s) of earlier version(s) "
            f"{', '.join(f'v{v}' for v in earlier)} left out"
        )
    return keep


def _pick_role(frame: pl.DataFrame, requested: str) -> str | None:
    if requested != AUTO:
        return requested if frame.filter(pl.col("role") == requested).height else None
    found = frame.filter(pl.col("role").is_in([SHADOW, CANARY]))
    if found.is_empty():
        return None
    return str(found.sort("ts").row(found.height - 1, named=True)["role"])


def _side(rows: pl.DataFrame, role: str, threshold: float | None) -> RoleScores:
    first = rows.row(0, named=True)
    scores = rows["score"].drop_nulls()
    return RoleScores(
        role=role,
        model_version=int(first["model_version"]),
        model_version_id=first["model_version_id"],
        rows=rows.height,
        mean_score=float(scores.mean()) if scores.len() else None,  # type: ignore[arg-type]
        threshold=threshold,
    )


def _check(challenger_role: str, since: datetime | None, until: datetime | None, boot: int) -> None:
    if challenger_role not in CHALLENGER_ROLES:
        raise ValueError(
            f"challenger_role: must be one of {', '.join(CHALLENGER_ROLES)}, "
            f"got {challenger_role!r}"
        )
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise ValueError(f"{name}: must be timezone-aware (UTC)")
    if since is not None and until is not None and since >= until:
        raise ValueError("since: must be before until")
    if isinstance(boot, bool) or not isinstance(boot, int) or boot < 0:
        raise ValueError(f"bootstrap: must be an integer >= 0, got {boot!r}")


def compare_live(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    model_name: str | None = None,
    challenger_role: str = AUTO,
    since: datetime | None = None,
    until: datetime | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    store: Store | None = None,
) -> LiveComparison:
    """Compare the champion with its shadow or canary on the logged traffic of a window.

    Args:
        settings: Where the prediction log, the lake and the metadata store are.
        spec: The use case (task, primary metric, labels, default decision threshold).
        model_name: The model (default: the use case's).
        challenger_role: "shadow", "canary", or "auto": whichever answered last in the window.
        since: Inclusive lower bound on the requests' `ts` (UTC-aware).
        until: Exclusive upper bound on `ts`.
        bootstrap: Resamples of the confidence intervals (0: none).
        seed: Seed of the resampling.
        store: The metadata store, for the versions' decision thresholds (default: opened
            from `settings` when the task is binary, and closed again).

    Returns:
        The comparison; on an empty window, without a challenger or without labels, the
        figures it cannot give are None and `reason` / `metric_reason` say why.

    Raises:
        ValueError: a bound is naive or the window is empty by construction, an unknown
            challenger role, or a negative bootstrap count.
    """
    _check(challenger_role, since, until, bootstrap)
    name = model_name or spec.model_name
    base = {"model_name": name, "task": spec.task, "since": since, "until": until}
    frame = read_prediction_log(settings.prediction_log_dir, since=since, until=until)
    frame = frame.filter(  # model names are unique case-insensitively (registry.names)
        (pl.col("model_name").str.to_lowercase() == name.lower()) & pl.col("score").is_not_null()
    )
    if frame.is_empty():
        return LiveComparison(
            **base, challenger_role=None, reason=f"no prediction of {name} is logged in the window"
        )
    frame = _with_event_ids(frame.with_columns(pl.col("role").fill_null(CHAMPION)))
    notes: list[str] = []
    champion_rows = frame.filter(pl.col("role") == CHAMPION)
    role = _pick_role(frame, challenger_role)
    champion_rows = (
        _latest_version(champion_rows, CHAMPION, notes) if champion_rows.height else None
    )
    if role is None:
        wanted = "shadow or canary" if challenger_role == AUTO else challenger_role
        side = _side(champion_rows, CHAMPION, None) if champion_rows is not None else None
        return LiveComparison(
            **base, challenger_role=None, champion=side, notes=tuple(notes),
            reason=f"no {wanted} prediction of {name} is logged in the window",
        )  # fmt: skip
    challenger_rows = _latest_version(frame.filter(pl.col("role") == role), role, notes)
    if champion_rows is None:
        return LiveComparison(
            **base, challenger_role=role, challenger=_side(challenger_rows, role, None),
            notes=tuple(notes), reason=f"no champion prediction of {name} is logged in the window",
        )  # fmt: skip
    binary = spec.task == "binary_classification"
    thresholds = (None, None)
    if binary:
        ids = [champion_rows["model_version_id"][0], challenger_rows["model_version_id"][0]]
        found = _thresholds(settings, spec, ids, store)
        thresholds = (found[ids[0]], found[ids[1]])
    paired = role == SHADOW
    agreed = None
    if paired:
        pairs = champion_rows.select("request_id", "event_id", champion="score").join(
            challenger_rows.select("request_id", challenger="score"), on="request_id", how="inner"
        )
        pairs = pairs.unique("request_id", keep="first", maintain_order=True)
        if pairs.is_empty():
            return LiveComparison(
                **base, challenger_role=role, notes=tuple(notes),
                champion=_side(champion_rows, CHAMPION, thresholds[0]),
                challenger=_side(challenger_rows, role, thresholds[1]),
                reason="no request was scored by both the champion and the shadow",
            )  # fmt: skip
        champion_rows = champion_rows.join(pairs.select("request_id"), on="request_id", how="semi")
        champion_rows = champion_rows.unique("request_id", keep="first", maintain_order=True)
        challenger_rows = challenger_rows.join(
            pairs.select("request_id"), on="request_id", how="semi"
        ).unique("request_id", keep="first", maintain_order=True)
        c_scores, s_scores = pairs["champion"].to_numpy(), pairs["challenger"].to_numpy()
        agreed = agreement(spec.task, c_scores, s_scores, thresholds=(
            thresholds[0] or 0.5, thresholds[1] or 0.5))  # fmt: skip
    else:
        c_scores, s_scores = champion_rows["score"].to_numpy(), challenger_rows["score"].to_numpy()
    result = {
        **base,
        "challenger_role": role,
        "champion": _side(champion_rows, CHAMPION, thresholds[0]),
        "challenger": _side(challenger_rows, role, thresholds[1]),
        "agreement": agreed,
        "distance": Distance(ks_statistic(c_scores, s_scores), decile_psi(c_scores, s_scores)),
        "histogram": score_histogram(
            {CHAMPION: c_scores, role: s_scores},
            unit=binary and bool(c_scores.min() >= 0 and max(c_scores.max(), s_scores.max()) <= 1),
        ),
    }
    metric, why = _live_metric(
        settings, spec, pairs if paired else None, champion_rows, challenger_rows,
        paired=paired, bootstrap=bootstrap, seed=seed,
        thresholds=(thresholds[0] or 0.5, thresholds[1] or 0.5),
    )  # fmt: skip
    return LiveComparison(**result, metric=metric, metric_reason=why, notes=tuple(notes))


def _thresholds(
    settings: Settings, spec: UseCaseSpec, ids: list[str | None], store: Store | None
) -> dict[str | None, float]:
    if store is not None:
        return decision_thresholds(store, spec, ids)
    from loopline.store import Store

    if settings.database_url is None and not (settings.home / "loopline.db").exists():
        return decision_thresholds(None, spec, ids)  # no store yet: do not create one
    try:
        opened = Store.open(settings, migrate=False)
    except Exception as exc:  # no store: the spec's threshold still gives an answer
        log.warning("cannot open the metadata store for decision thresholds: %s", exc)
        return decision_thresholds(None, spec, ids)
    try:
        return decision_thresholds(opened, spec, ids)
    except Exception as exc:  # an unmigrated or unreachable store, likewise
        log.warning("cannot read decision thresholds: %s", exc)
        return decision_thresholds(None, spec, ids)
    finally:
        opened.dispose()


def _live_metric(
    settings: Settings,
    spec: UseCaseSpec,
    pairs: pl.DataFrame | None,
    champion_rows: pl.DataFrame,
    challenger_rows: pl.DataFrame,
    *,
    paired: bool,
    bootstrap: int,
    seed: int,
    thresholds: tuple[float, float],
) -> tuple[LiveMetric | None, str | None]:
    """The primary metric on labelled requests, or why there is none."""
    if spec.task == "multiclass_classification":
        return None, "the log holds one score per request; multiclass metrics need every class"
    labels = read_labels(settings, spec)
    if labels is None:
        return None, f"no labels yet: the '{spec.labels.table}' table is not in the lake"
    metric = spec.primary_metric
    if paired:
        assert pairs is not None
        labelled = pairs.join(labels, on="event_id", how="inner")
        sides = (
            (labelled["label"].to_numpy(), labelled["champion"].to_numpy()),
            (labelled["label"].to_numpy(), labelled["challenger"].to_numpy()),
        )
    else:
        sides = tuple(
            (found["label"].to_numpy(), found["score"].to_numpy())
            for found in (rows.join(labels, on="event_id", how="inner")
                          for rows in (champion_rows, challenger_rows))
        )  # fmt: skip
    fewest = min(side[0].shape[0] for side in sides)
    if fewest < MIN_LABELLED:
        what = "paired requests" if paired else "requests of each model"
        return None, (
            f"not enough labels yet: {fewest} labelled {what}, {MIN_LABELLED} needed "
            f"(labels arrive up to {spec.labels.delay_days} days late)"
        )
    try:
        return bootstrap_metric(
            spec.task, metric, sides[0], sides[1], paired=paired, bootstrap=bootstrap,
            seed=seed, thresholds=thresholds,
        ), None  # fmt: skip
    except ValueError as exc:  # UndefinedMetricError included: one class only, ...
        return None, f"{metric} is undefined on the labelled requests: {exc}"

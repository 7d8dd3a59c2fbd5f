"""Evidence for the promotion gates: measured once per candidate, JSON-serialisable.

`collect_evidence` measures what a spec's gates need and nothing more: the candidate and the
current champion scored on the same rows (the candidate's holdout, and separately its last
days), the evaluation report's fairness and calibration, single-row latency and size of the
model file, and statistics of the training rows. `loopline.registry.gates.evaluate_gates`
judges the gates on it without I/O; each verdict carries the part of the evidence it used.
`load_champion` reads the current champion through the registry's verified loader.

A comparison with the champion has a `basis`:

- `rescored`: both models scored on the same rows (the champion's inputs rebuilt from the
  candidate's holdout frame through its own feature service);
- `recorded_metric`: the champion is pinned to a feature service whose inputs the frame does
  not hold, so the candidate's holdout metric is compared with the metric recorded when the
  champion was trained (the recent window is not evaluated; the note says why);
- `no_champion`: nothing to beat;
- `unavailable`: the champion could not be loaded or scored (`error` says why; the gate fails).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from loopline.spec import (
    BeatsChampionGate,
    CalibrationGate,
    DataGate,
    FairnessGate,
    Gate,
    LatencyGate,
    UseCaseSpec,
)

if TYPE_CHECKING:
    from loopline.lake.artifacts import ArtifactStore
    from loopline.store import Store
    from loopline.training.model import TrainedModel
    from loopline.training.prepare import Prepared

RESCORED = "rescored"
RECORDED_METRIC = "recorded_metric"
NO_CHAMPION = "no_champion"
UNAVAILABLE = "unavailable"

LATENCY_ROUNDS = 3
"""Latency rounds at most: one over budget is measured again, and the best round is kept."""


@dataclass(frozen=True)
class Champion:
    """The current champion, as the gates need it.

    Attributes:
        version: Its version number.
        feature_service: The feature service it is pinned to.
        inputs: Its model inputs, in order.
        metrics: The holdout metrics recorded when it was trained.
        booster: The verified booster; None when it could not be loaded.
        error: Why it could not be loaded, if it could not.
    """

    version: int
    feature_service: str
    inputs: tuple[str, ...]
    metrics: Mapping[str, Any]
    booster: lgb.Booster | None = None
    error: str | None = None


@dataclass(frozen=True)
class Evidence:
    """What the gates judge. A field no gate needed is None (a gate reading it then fails).

    Attributes:
        metrics: The candidate's holdout metrics.
        comparisons: `beats_champion` gate name -> {"basis", "champion": {"version",
            "feature_service"} or None, "note", "error", "windows": [{"window" ("holdout" or
            "recent"), "rows", "start", "end", "days" (recent), "candidate", "champion",
            "undefined" (why a value is None)}]}.
        fairness: The evaluation report's fairness entries (attribute, threshold, groups,
            worst, best_and_worst_over).
        calibration: {"ece", "mce", "bins"} of the holdout.
        latency: Single-row predict timings in ms of the best round: {"samples", "warmup",
            "distinct_rows", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "rounds",
            "round_p99_ms"}.
        model_bytes: Size of the model file (LightGBM text).
        data: Training rows: {"rows", "positive_rate" (binary), "null_fraction": {input:
            share of rows where it is missing}}.
    """

    metrics: Mapping[str, Any] = field(default_factory=dict)
    comparisons: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fairness: Sequence[Mapping[str, Any]] | None = None
    calibration: Mapping[str, Any] | None = None
    latency: Mapping[str, Any] | None = None
    model_bytes: int | None = None
    data: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The evidence as plain JSON values (NaN and infinities as None)."""
        return json_safe(asdict(self))


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars, tuples and datetimes made plain JSON; NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


# --- the champion ------------------------------------------------------------------------------


def load_champion(store: Store, artifacts: ArtifactStore, model_name: str) -> Champion | None:
    """The model's current champion with its verified booster, or None when there is none.

    A champion whose package is refused is returned with `error` set (the refusal is audited by
    the loader), so that gates comparing with it fail with the reason.
    """
    from loopline.registry import models as registry
    from loopline.registry.package import PackageError, load_version

    with store.reader() as session:
        target = registry.get_alias(session, model_name, registry.CHAMPION)
        if target is None:
            return None
        version = target.model_version
        champion = Champion(
            version=version.version,
            feature_service=version.feature_service,
            inputs=tuple((version.feature_names or {}).get("inputs", [])),
            metrics=dict(version.metrics or {}),
        )
    try:
        booster = load_version(store, artifacts, version, actor="gates").booster
    except PackageError as exc:
        return replace(champion, error=f"champion could not be loaded: {exc}")
    return replace(champion, booster=booster)


def _champion_inputs(
    champion: Champion, prepared: Prepared, spec: UseCaseSpec
) -> tuple[np.ndarray | None, str]:
    """The champion's input matrix for the candidate's holdout rows, or (None, why not)."""
    from loopline.features import transform

    assert champion.booster is not None
    wanted = tuple(champion.booster.feature_name())
    if champion.feature_service == spec.features.service and wanted == tuple(
        prepared.feature_names
    ):
        return prepared.x_valid, ""
    try:
        names = transform.feature_names(spec, champion.feature_service)
        frame = transform.model_inputs(prepared.valid, spec, champion.feature_service)
    except ValueError as exc:
        return None, (
            f"the champion is pinned to feature service '{champion.feature_service}' whose "
            f"inputs the candidate's holdout does not hold ({exc})"
        )
    if tuple(names) != wanted:
        return None, (
            f"the champion's inputs differ from what service '{champion.feature_service}' "
            "gives today"
        )
    return transform.to_numpy(frame), ""


def _window_masks(
    prepared: Prepared, spec: UseCaseSpec, days: int
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The holdout, and its last `days` days: (row indices, description) each."""
    stamps = prepared.valid.get_column(spec.events.timestamp)
    end = stamps.max()
    assert isinstance(end, datetime)
    since = end - timedelta(days=days)
    recent = np.flatnonzero((stamps >= since).fill_null(False).to_numpy())
    everything = np.arange(prepared.valid.height)

    def describe(name: str, rows: np.ndarray) -> dict[str, Any]:
        picked = stamps.gather(rows)
        return {"window": name, "rows": int(rows.size), "start": picked.min(), "end": end}

    return [
        (everything, describe("holdout", everything)),
        (recent, {**describe("recent", recent), "days": days}),
    ]


def _metric_on(
    spec: UseCaseSpec, y: np.ndarray, predictions: np.ndarray, metric: str
) -> tuple[float | None, str | None]:
    from loopline.training.metrics import compute_metrics_or_none

    values, reasons = compute_metrics_or_none(spec.task, y, predictions, [metric])
    return values[metric], reasons.get(metric)


def compare_with_champion(
    gate: BeatsChampionGate,
    *,
    spec: UseCaseSpec,
    prepared: Prepared,
    candidate: np.ndarray,
    champion: Champion | None,
    champion_scores: np.ndarray | None,
    note: str = "",
) -> dict[str, Any]:
    """Both models' `gate.metric` on the holdout and on its last `gate.recent_days` days.

    Args:
        candidate: The candidate's predictions on the holdout rows.
        champion_scores: The champion's predictions on the same rows; None when it could not be
            scored there (then `note` says why and its recorded metric stands in).

    Returns:
        A comparison record (see `Evidence.comparisons`).
    """
    if champion is None:
        return {"basis": NO_CHAMPION, "champion": None, "note": "no champion", "windows": []}
    who = {"version": champion.version, "feature_service": champion.feature_service}
    if champion.error is not None:
        return {"basis": UNAVAILABLE, "champion": who, "error": champion.error, "windows": []}
    windows = []
    if champion_scores is None:
        _, window = _window_masks(prepared, spec, gate.recent_days)[0]
        value, why = _metric_on(spec, prepared.y_valid, candidate, gate.metric)
        recorded = champion.metrics.get(gate.metric)
        window |= {"candidate": value, "champion": recorded}
        undefined = {"candidate": why} if why else {}
        if recorded is None:
            undefined["champion"] = f"no recorded {gate.metric}"
        windows.append(window | ({"undefined": undefined} if undefined else {}))
        note = "; ".join(
            (
                note or "the champion could not be scored on these rows",
                f"compared with its recorded {gate.metric} (on its own holdout)",
                "the recent window is not evaluated",
            )
        )
        return {"basis": RECORDED_METRIC, "champion": who, "note": note, "windows": windows}
    for rows, window in _window_masks(prepared, spec, gate.recent_days):
        y = prepared.y_valid[rows]
        ours, our_why = _metric_on(spec, y, candidate[rows], gate.metric)
        theirs, their_why = _metric_on(spec, y, champion_scores[rows], gate.metric)
        undefined = {k: v for k, v in (("candidate", our_why), ("champion", their_why)) if v}
        window |= {"candidate": ours, "champion": theirs}
        windows.append(window | ({"undefined": undefined} if undefined else {}))
    note = "both models scored on the same rows"
    return {"basis": RESCORED, "champion": who, "note": note, "windows": windows}


def _comparisons(
    gates: Sequence[BeatsChampionGate],
    spec: UseCaseSpec,
    prepared: Prepared,
    candidate: np.ndarray,
    champion: Champion | None,
) -> dict[str, dict[str, Any]]:
    scores, note = None, ""
    if champion is not None and champion.booster is not None and champion.error is None:
        try:
            x, note = _champion_inputs(champion, prepared, spec)
            scores = None if x is None else np.asarray(champion.booster.predict(x))
        except (ValueError, lgb.basic.LightGBMError) as exc:
            error = f"the champion could not be scored on the candidate's holdout: {exc}"
            champion = replace(champion, error=error)
    out = {}
    for gate in gates:
        try:
            out[gate.name] = compare_with_champion(
                gate,
                spec=spec,
                prepared=prepared,
                candidate=candidate,
                champion=champion,
                champion_scores=scores,
                note=note,
            )
        except ValueError as exc:  # e.g. the champion's predictions do not fit the task
            who = None if champion is None else {"version": champion.version}
            out[gate.name] = {"basis": UNAVAILABLE, "champion": who, "error": str(exc)}
    return out


# --- latency, size, data -----------------------------------------------------------------------


def measure_latency(
    predict: Callable[[np.ndarray], Any],
    rows: np.ndarray,
    *,
    samples: int,
    warmup: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Time `predict` on one row at a time: `warmup` untimed calls, then `samples` timed ones.

    Rows are drawn (seeded) from `rows`, with replacement only when there are fewer than
    needed.

    Returns:
        {"samples", "warmup", "distinct_rows", "p50_ms", "p90_ms", "p99_ms", "max_ms",
        "mean_ms"}.

    Raises:
        ValueError: `rows` is empty or not 2-D, or `samples` < 1.
    """
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"latency needs a non-empty 2-D matrix of rows, got shape {rows.shape}")
    if samples < 1 or warmup < 0:
        raise ValueError(f"latency needs samples >= 1 and warmup >= 0, got {samples}, {warmup}")
    total = samples + warmup
    picked = np.random.default_rng(seed).choice(rows.shape[0], total, replace=total > rows.shape[0])
    singles = [np.ascontiguousarray(rows[i : i + 1], dtype=np.float64) for i in picked]
    timings = np.empty(samples, dtype=np.float64)
    for i, single in enumerate(singles):
        started = time.perf_counter_ns()
        predict(single)
        elapsed = time.perf_counter_ns() - started
        if i >= warmup:
            timings[i - warmup] = elapsed / 1e6
    p50, p90, p99 = np.percentile(timings, [50, 90, 99])
    return {
        "samples": samples,
        "warmup": warmup,
        "distinct_rows": int(np.unique(picked[warmup:]).size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(timings.max()),
        "mean_ms": float(timings.mean()),
    }


def _latency(
    model_text: bytes, prepared: Prepared, gates: Sequence[LatencyGate], seed: int
) -> dict[str, Any]:
    """Latency of the model file on holdout rows: the best of up to LATENCY_ROUNDS rounds.

    A round over the strictest budget is repeated: a machine busy for a moment should not block
    a model, while a slow model fails every round. All rounds' p99 are kept as evidence.
    """
    # The model file as serving loads it, not the booster still holding training state.
    served = lgb.Booster(model_str=model_text.decode())
    budget = min(g.p99_ms for g in gates)
    rounds = []
    for attempt in range(LATENCY_ROUNDS):
        rounds.append(
            measure_latency(
                served.predict,
                prepared.x_valid,
                samples=max(g.rows for g in gates),
                warmup=max(g.warmup for g in gates),
                seed=seed + attempt,
            )
        )
        if rounds[-1]["p99_ms"] <= budget:
            break
    best = min(rounds, key=lambda r: r["p99_ms"])
    return {**best, "rounds": len(rounds), "round_p99_ms": [r["p99_ms"] for r in rounds]}


def training_data_stats(prepared: Prepared, spec: UseCaseSpec) -> dict[str, Any]:
    """Rows, positive rate (binary) and per-input missing share of the training side."""
    x = prepared.x_train
    rows = int(x.shape[0])
    nulls = np.isnan(x).mean(axis=0) if rows else np.ones(x.shape[1])
    positive_rate = None
    if spec.task == "binary_classification" and rows:
        positive_rate = float(np.mean(prepared.y_train == 1))
    return {
        "rows": rows,
        "positive_rate": positive_rate,
        "null_fraction": {
            name: float(share) for name, share in zip(prepared.feature_names, nulls, strict=True)
        },
    }


# --- all of it ---------------------------------------------------------------------------------


def collect_evidence(
    gates: Sequence[Gate],
    *,
    spec: UseCaseSpec,
    prepared: Prepared,
    model: TrainedModel,
    metrics: Mapping[str, float],
    champion: Champion | None = None,
    report: Mapping[str, Any] | None = None,
) -> Evidence:
    """Measure what `gates` need to judge the candidate `model`, once.

    Args:
        gates: The gates to collect for (usually `spec.gates`).
        spec: The use case.
        prepared: The candidate's training set, split (holdout rows and training rows).
        model: The candidate.
        metrics: The candidate's holdout metrics.
        champion: The current champion (`load_champion`), or None when there is none.
        report: The candidate's evaluation report, if already built (else built here when a
            fairness or calibration gate needs it).

    Returns:
        The evidence; see `Evidence` for its parts.
    """
    from loopline.training.report import evaluation_report

    kinds = {type(gate) for gate in gates}
    beats = [g for g in gates if isinstance(g, BeatsChampionGate)]
    needs_report = bool(kinds & {FairnessGate, CalibrationGate})
    predictions = model.predict(prepared.x_valid)
    comparisons = _comparisons(beats, spec, prepared, predictions, champion) if beats else {}
    fairness: list[Mapping[str, Any]] | None = None
    calibration: dict[str, Any] | None = None
    if needs_report:
        if report is None:
            report = evaluation_report(
                prepared.valid,
                task=spec.task,
                y_true_col=spec.labels.column,
                pred=predictions,
                evaluation=spec.evaluation,
                metrics=spec.metrics,
                classes=spec.labels.classes,
            )
        fairness = list(report.get("fairness") or [])
        curve = (report.get("extras") or {}).get("calibration")
        if curve:
            bins = len(curve.get("count") or [])
            calibration = {"ece": curve.get("ece"), "mce": curve.get("mce"), "bins": bins}
    model_text = model.to_bytes()
    timed = [g for g in gates if isinstance(g, LatencyGate)]
    latency = _latency(model_text, prepared, timed, spec.training.seed) if timed else None
    data = training_data_stats(prepared, spec) if DataGate in kinds else None
    return Evidence(
        metrics=dict(metrics),
        comparisons=comparisons,
        fairness=fairness,
        calibration=calibration,
        latency=latency,
        model_bytes=len(model_text),
        data=data,
    )

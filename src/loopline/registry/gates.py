"""Promotion gates: pure verdicts on a candidate's evidence.

`evaluate_gates` judges each gate of a spec on the `Evidence` that
`loopline.registry.evidence.collect_evidence` measured, without I/O. A verdict carries what it
observed, the threshold it held that against, and a JSON detail with the evidence behind it
(both models' metrics on both windows, latency percentiles, group rates, ...). Evidence that is
missing or undefined fails the gate with the reason: a gate never passes for lack of data.

`observed` and `threshold` per kind (the gate passes when observed is on the right side):

- `min` / `max`: the holdout metric, >= / <= the threshold;
- `beats_champion`: the smallest improvement over the champion across the windows (in the
  metric's better direction, `LOWER_IS_BETTER`), >= the margin;
- `fairness`, `data`: the first failing check's value and limit (the first check's when all
  pass); every check is in `detail["checks"]`;
- `calibration`: the expected calibration error, <= `max_ece`;
- `latency`: the p99 of single-row predictions in ms, <= `p99_ms`;
- `model_size`: the model file in MB (2**20 bytes), <= `max_mb`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from loopline.registry.evidence import NO_CHAMPION, UNAVAILABLE, Evidence, json_safe
from loopline.spec import (
    BeatsChampionGate,
    CalibrationGate,
    DataGate,
    FairnessGate,
    Gate,
    LatencyGate,
    MetricGate,
    ModelSizeGate,
)
from loopline.store.tables import GateResult

# Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mape", "brier"})

MB = 2**20
"""Bytes in the MB of `model_size` gates."""


@dataclass(frozen=True)
class GateVerdict:
    """One gate's outcome with the evidence behind it (all JSON values)."""

    gate: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: dict[str, Any]


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, infinite, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _verdict(
    gate: Gate,
    passed: bool,
    observed: Any,
    threshold: Any,
    detail: Mapping[str, Any],
) -> GateVerdict:
    return GateVerdict(
        gate=gate.name,
        passed=bool(passed),
        observed=_number(observed),
        threshold=_number(threshold),
        detail=json_safe({"kind": gate.kind, **detail}),
    )


def _missing(gate: Gate, threshold: Any, reason: str, **detail: Any) -> GateVerdict:
    return _verdict(gate, False, None, threshold, {"error": reason, **detail})


def _check(name: str, observed: Any, limit: float, *, at_least: bool) -> dict[str, Any]:
    """One bounded check: passes when observed >= limit (at_least) or <= limit."""
    value = _number(observed)
    if value is None:
        return {
            "check": name,
            "observed": None,
            "threshold": limit,
            "passed": False,
            "error": "not measured or undefined",
        }
    passed = value >= limit if at_least else value <= limit
    return {"check": name, "observed": value, "threshold": limit, "passed": passed}


def _from_checks(gate: Gate, checks: list[dict[str, Any]], detail: dict[str, Any]) -> GateVerdict:
    failed = [c for c in checks if not c["passed"]]
    shown = failed[0] if failed else checks[0]
    return _verdict(
        gate, not failed, shown["observed"], shown["threshold"], {**detail, "checks": checks}
    )


# --- per kind ----------------------------------------------------------------------------------


def _metric(gate: MetricGate, evidence: Evidence) -> GateVerdict:
    assert gate.threshold is not None
    observed = _number(evidence.metrics.get(gate.metric))
    detail = {"metric": gate.metric, "rule": f"{'>=' if gate.kind == 'min' else '<='} threshold"}
    if observed is None:
        return _missing(gate, gate.threshold, f"'{gate.metric}' was not measured", **detail)
    passed = observed >= gate.threshold if gate.kind == "min" else observed <= gate.threshold
    return _verdict(gate, passed, observed, gate.threshold, detail)


def improvement(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is than the champion (negative when worse)."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def _beats_champion(gate: BeatsChampionGate, evidence: Evidence) -> GateVerdict:
    detail: dict[str, Any] = {
        "metric": gate.metric,
        "direction": "lower is better" if gate.metric in LOWER_IS_BETTER else "higher is better",
        "margin": gate.margin,
        "recent_days": gate.recent_days,
    }
    comparison = evidence.comparisons.get(gate.name)
    if comparison is None:
        return _missing(gate, gate.margin, "no comparison with the champion was collected")
    basis = comparison.get("basis")
    detail |= {k: comparison.get(k) for k in ("basis", "champion", "note")}
    if basis == NO_CHAMPION:
        return _verdict(gate, True, None, gate.margin, detail)
    if basis == UNAVAILABLE or comparison.get("error"):
        reason = comparison.get("error") or "the champion could not be compared"
        return _missing(gate, gate.margin, reason, **detail)
    windows = []
    for window in comparison.get("windows") or []:
        ours, theirs = _number(window.get("candidate")), _number(window.get("champion"))
        gain = None if ours is None or theirs is None else improvement(gate.metric, ours, theirs)
        passed = gain is not None and gain >= gate.margin
        windows.append({**window, "improvement": gain, "passed": passed})
    detail["windows"] = windows
    if not windows:
        return _missing(gate, gate.margin, "the comparison holds no window", **detail)
    undefined = [w["window"] for w in windows if w["improvement"] is None]
    if undefined:
        reason = f"{gate.metric} is undefined on window(s) {undefined}: see each window"
        return _missing(gate, gate.margin, reason, **detail)
    observed = min(w["improvement"] for w in windows)
    return _verdict(gate, all(w["passed"] for w in windows), observed, gate.margin, detail)


def _fairness(gate: FairnessGate, evidence: Evidence) -> GateVerdict:
    detail: dict[str, Any] = {"attribute": gate.attribute, "measure": gate.measure}
    limit = gate.min_ratio if gate.min_ratio is not None else gate.max_difference
    if evidence.fairness is None:
        return _missing(gate, limit, "fairness was not evaluated", **detail)
    entry = next((e for e in evidence.fairness if e.get("attribute") == gate.attribute), None)
    if entry is None:
        reason = f"the evaluation report has no fairness entry for '{gate.attribute}'"
        return _missing(gate, limit, reason, **detail)
    worst = entry.get("worst") or {}
    measure = gate.measure
    detail |= {
        "decision_threshold": entry.get("threshold"),
        "best_and_worst_over": entry.get("best_and_worst_over"),
        "groups": [
            {
                "group": g.get("group"),
                "rows": g.get("rows"),
                "small": g.get("small"),
                measure: g.get(measure),
                "ratio": g.get(f"{measure}_ratio"),
                "difference": g.get(f"{measure}_difference"),
            }
            for g in entry.get("groups") or []
        ],
    }
    checks = []
    if gate.min_ratio is not None:
        ratio = worst.get(f"{measure}_ratio")
        checks.append(_check(f"{measure}_ratio", ratio, gate.min_ratio, at_least=True))
    if gate.max_difference is not None:
        gap = worst.get(f"{measure}_difference")
        checks.append(_check(f"{measure}_difference", gap, gate.max_difference, at_least=False))
    return _from_checks(gate, checks, detail)


def _calibration(gate: CalibrationGate, evidence: Evidence) -> GateVerdict:
    if evidence.calibration is None:
        return _missing(gate, gate.max_ece, "calibration was not evaluated")
    ece = _number(evidence.calibration.get("ece"))
    detail = dict(evidence.calibration)
    if ece is None:
        return _missing(gate, gate.max_ece, "the calibration error is undefined", **detail)
    return _verdict(gate, ece <= gate.max_ece, ece, gate.max_ece, detail)


def _latency(gate: LatencyGate, evidence: Evidence) -> GateVerdict:
    if evidence.latency is None:
        return _missing(gate, gate.p99_ms, "latency was not measured")
    p99 = _number(evidence.latency.get("p99_ms"))
    detail = dict(evidence.latency)
    if p99 is None:
        return _missing(gate, gate.p99_ms, "no p99 latency was measured", **detail)
    return _verdict(gate, p99 <= gate.p99_ms, p99, gate.p99_ms, detail)


def _model_size(gate: ModelSizeGate, evidence: Evidence) -> GateVerdict:
    size = _number(evidence.model_bytes)
    if size is None:
        return _missing(gate, gate.max_mb, "the model file's size is unknown")
    megabytes = size / MB
    detail = {"bytes": int(size), "mb": megabytes}
    return _verdict(gate, megabytes <= gate.max_mb, megabytes, gate.max_mb, detail)


def _data(gate: DataGate, evidence: Evidence) -> GateVerdict:
    limit = next(
        value
        for value in (
            gate.min_rows,
            gate.min_positive_rate,
            gate.max_positive_rate,
            gate.max_null_fraction,
        )
        if value is not None
    )
    if evidence.data is None:
        return _missing(gate, limit, "the training data was not profiled")
    data = evidence.data
    checks = []
    if gate.min_rows is not None:
        checks.append(_check("min_rows", data.get("rows"), gate.min_rows, at_least=True))
    rate = data.get("positive_rate")
    if gate.min_positive_rate is not None:
        checks.append(_check("min_positive_rate", rate, gate.min_positive_rate, at_least=True))
    if gate.max_positive_rate is not None:
        checks.append(_check("max_positive_rate", rate, gate.max_positive_rate, at_least=False))
    detail: dict[str, Any] = {"rows": data.get("rows"), "positive_rate": rate}
    if gate.max_null_fraction is not None:
        nulls = {k: _number(v) for k, v in (data.get("null_fraction") or {}).items()}
        unknown = sorted(k for k, v in nulls.items() if v is None)
        ranked = sorted(
            ((k, v) for k, v in nulls.items() if v is not None), key=lambda kv: (-kv[1], kv[0])
        )
        worst = ranked[0][1] if ranked and not unknown else None
        check = _check("max_null_fraction", worst, gate.max_null_fraction, at_least=False)
        if not nulls:
            check["error"] = "no model inputs were profiled"
        elif unknown:
            check["error"] = f"missing share unknown for {unknown}"
        check["over"] = unknown + [k for k, v in ranked if v > gate.max_null_fraction]
        checks.append(check)
        detail["null_fraction_top"] = dict(ranked[:5])
    return _from_checks(gate, checks, detail)


_JUDGES: dict[type[Gate], Callable[[Any, Evidence], GateVerdict]] = {
    MetricGate: _metric,
    BeatsChampionGate: _beats_champion,
    FairnessGate: _fairness,
    CalibrationGate: _calibration,
    LatencyGate: _latency,
    ModelSizeGate: _model_size,
    DataGate: _data,
}


def evaluate_gates(gates: Sequence[Gate], evidence: Evidence) -> list[GateVerdict]:
    """Judge a candidate against every gate, in order (pure: no I/O).

    Args:
        gates: The spec's gates.
        evidence: What `collect_evidence` measured for the candidate.

    Returns:
        One verdict per gate; missing or undefined evidence fails its gate with the reason in
        `detail["error"]`.

    Raises:
        TypeError: a gate of a kind this module does not know.
    """
    verdicts = []
    for gate in gates:
        judge = _JUDGES.get(type(gate))
        if judge is None:
            raise TypeError(f"gate '{gate.name}': no rule for kind '{gate.kind}'")
        verdicts.append(judge(gate, evidence))
    return verdicts


def record_gate_results(
    session: Session, *, model_version_id: str, verdicts: list[GateVerdict], run_id: str | None
) -> None:
    """Store verdicts as gate results of a model version."""
    for verdict in verdicts:
        row = asdict(verdict)
        session.add(GateResult(model_version_id=model_version_id, run_id=run_id, **row))

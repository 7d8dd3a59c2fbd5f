"""Promotion gates: pure verdicts from a candidate's metrics (and the champion's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from loopline.spec import Gate
from loopline.store.tables import GateResult

# Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mape", "brier"})


@dataclass(frozen=True)
class GateVerdict:
    """One gate's outcome with the evidence behind it."""

    gate: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: dict[str, Any]


def evaluate_gates(
    gates: list[Gate],
    metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
) -> list[GateVerdict]:
    """Judge a candidate against every gate.

    A `beats_champion` gate passes when there is no champion yet, or when the candidate is at
    least as good as the champion minus the tolerance (in the metric's better direction).
    """
    verdicts = []
    for gate in gates:
        observed = metrics.get(gate.metric)
        if observed is None:
            verdicts.append(
                GateVerdict(gate.name, False, None, gate.threshold, {"error": "metric missing"})
            )
            continue
        if gate.kind == "min":
            assert gate.threshold is not None
            passed, threshold, detail = observed >= gate.threshold, gate.threshold, {}
        elif gate.kind == "max":
            assert gate.threshold is not None
            passed, threshold, detail = observed <= gate.threshold, gate.threshold, {}
        else:
            champion = (champion_metrics or {}).get(gate.metric)
            if champion is None:
                passed, threshold, detail = True, None, {"champion": None}
            elif gate.metric in LOWER_IS_BETTER:
                threshold = champion + gate.tolerance
                passed, detail = observed <= threshold, {"champion": champion}
            else:
                threshold = champion - gate.tolerance
                passed, detail = observed >= threshold, {"champion": champion}
        verdicts.append(GateVerdict(gate.name, bool(passed), observed, threshold, detail))
    return verdicts


def record_gate_results(
    session: Session, *, model_version_id: str, verdicts: list[GateVerdict], run_id: str | None
) -> None:
    """Store verdicts as gate results of a model version."""
    for verdict in verdicts:
        row = asdict(verdict)
        session.add(GateResult(model_version_id=model_version_id, run_id=run_id, **row))

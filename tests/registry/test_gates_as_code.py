"""Promotion gates as code: each kind on constructed evidence, the champion rescored on the same
rows (whole holdout and recent window), latency measured, bad gates refused, failures block."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import average_precision_score
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.evidence import (
    LATENCY_ROUNDS,
    NO_CHAMPION,
    RECORDED_METRIC,
    RESCORED,
    Champion,
    Evidence,
    collect_evidence,
    load_champion,
    measure_latency,
    training_data_stats,
)
from loopline.registry.gates import MB, evaluate_gates, record_gate_results
from loopline.registry.package import build_package, register_package
from loopline.registry.policy import PolicyError
from loopline.settings import Settings
from loopline.spec import (
    USECASES_DIR,
    BeatsChampionGate,
    CalibrationGate,
    DataGate,
    EvaluationSpec,
    FairnessGate,
    Gate,
    LatencyGate,
    MetricGate,
    ModelSizeGate,
    SpecError,
    TrainingSpec,
    UseCaseSpec,
    load_spec,
)
from loopline.stages.promote import run_promote
from loopline.store import Store
from loopline.store.tables import GateResult, Run
from loopline.training.metrics import compute_metrics
from loopline.training.model import TrainedModel, train_booster
from loopline.training.prepare import Prepared

pytestmark = pytest.mark.timeout(120)

FRAUD = load_spec("fraud")
FEATURES = ["f0", "f1", "f2", "f3"]
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS, ROWS, TRAIN_SHARE = 40, 4000, 0.75
SHIFT_DAYS = 3  # in the last days the label follows f2 instead of f0
TRAINING = TrainingSpec(num_boost_round=60, early_stopping_rounds=60, seed=3)


def _spec(*gates: Gate) -> UseCaseSpec:
    """The fraud spec with these gates and an evaluation the synthetic frame can feed."""
    return FRAUD.model_copy(
        update={"gates": list(gates), "evaluation": EvaluationSpec(sensitive=["country"])}
    )


def _prepared() -> Prepared:
    rng = np.random.default_rng(0)
    stamps = [START + timedelta(days=DAYS * i / ROWS) for i in range(ROWS)]
    x = rng.normal(size=(ROWS, len(FEATURES)))
    late = np.array([s >= START + timedelta(days=DAYS - SHIFT_DAYS) for s in stamps])
    signal = np.where(late, 2 * x[:, 2], 2 * x[:, 0]) + x[:, 1]
    y = (signal + rng.normal(size=ROWS) > 2.0).astype(np.int64)
    frame = pl.DataFrame(
        {
            "event_timestamp": stamps,
            "is_fraud": y,
            "country": rng.choice(["US", "GB", "DE"], ROWS),
        }
    )
    cut = int(ROWS * TRAIN_SHARE)
    return Prepared(
        train=frame[:cut],
        valid=frame[cut:],
        x_train=x[:cut],
        y_train=y[:cut],
        x_valid=x[cut:],
        y_valid=y[cut:],
        feature_names=FEATURES,
        num_class=None,
    )


def _fit(prepared: Prepared, x_train: np.ndarray, y_train: np.ndarray) -> TrainedModel:
    return train_booster(
        x_train,
        y_train,
        prepared.x_valid,
        prepared.y_valid,
        feature_names=FEATURES,
        config=TRAINING,
        task="binary_classification",
    )


@dataclass(frozen=True)
class World:
    prepared: Prepared
    good: TrainedModel  # learned f0 (the holdout's regime but for its last days)
    weak: TrainedModel  # never saw f0: worse everywhere
    late: TrainedModel  # learned f2 (the regime of the last days only)


@pytest.fixture(scope="module")
def world() -> World:
    prepared = _prepared()
    x, y = prepared.x_train, prepared.y_train
    shuffled = x.copy()
    shuffled[:, 0] = np.random.default_rng(1).permutation(shuffled[:, 0])
    late_y = 2 * x[:, 2] + x[:, 1] + np.random.default_rng(2).normal(size=len(y)) > 2.0
    return World(
        prepared,
        _fit(prepared, x, y),
        _fit(prepared, shuffled, y),
        _fit(prepared, x, late_y.astype(np.int64)),
    )


def _champion(
    model: TrainedModel, service: str = FRAUD.features.service, **metrics: float
) -> Champion:
    return Champion(
        version=1,
        feature_service=service,
        inputs=tuple(FEATURES),
        metrics=metrics,
        booster=lgb.Booster(model_str=model.to_bytes().decode()),
    )


def _metrics(world: World, model: TrainedModel) -> dict[str, float]:
    p = world.prepared
    return compute_metrics(
        "binary_classification", p.y_valid, model.predict(p.x_valid), FRAUD.metrics
    )


def _judge(
    world: World, gate: Gate, *, model: TrainedModel | None = None, champion: Champion | None = None
) -> tuple[Any, Evidence]:
    model = model or world.good
    evidence = collect_evidence(
        [gate],
        spec=_spec(gate),
        prepared=world.prepared,
        model=model,
        metrics=_metrics(world, model),
        champion=champion,
    )
    [verdict] = evaluate_gates([gate], evidence)
    json.dumps(verdict.detail, allow_nan=False)  # what the store records must be plain JSON
    json.dumps(evidence.as_dict(), allow_nan=False)
    return verdict, evidence


# --- beats_champion: both models rescored on the same rows ------------------------------------


def _beats(margin: float = 0.0, recent_days: int = 7) -> BeatsChampionGate:
    return BeatsChampionGate(
        name="beats", kind="beats_champion", metric="average_precision",
        margin=margin, recent_days=recent_days,
    )  # fmt: skip


def test_a_worse_champion_passes_and_both_windows_are_rescored(world: World) -> None:
    verdict, _ = _judge(world, _beats(), champion=_champion(world.weak))
    assert verdict.passed, verdict.detail
    assert verdict.detail["basis"] == RESCORED and verdict.detail["champion"]["version"] == 1
    holdout, recent = verdict.detail["windows"]
    p = world.prepared
    stamps = p.valid["event_timestamp"]
    newest = stamps.max()
    assert isinstance(newest, datetime)
    in_recent = (stamps >= newest - timedelta(days=7)).to_numpy()
    assert (holdout["rows"], recent["rows"]) == (p.valid.height, int(in_recent.sum()))
    assert 0 < recent["rows"] < holdout["rows"]
    for window, rows in ((holdout, slice(None)), (recent, in_recent)):
        y = p.y_valid[rows]
        ours = average_precision_score(y, world.good.predict(p.x_valid)[rows])
        theirs = average_precision_score(y, world.weak.predict(p.x_valid)[rows])
        assert window["candidate"] == pytest.approx(ours)
        assert window["champion"] == pytest.approx(theirs)
        assert window["improvement"] == pytest.approx(ours - theirs) and window["passed"]
    assert verdict.observed == pytest.approx(min(holdout["improvement"], recent["improvement"]))


def test_a_better_champion_fails(world: World) -> None:
    verdict, _ = _judge(world, _beats(), model=world.weak, champion=_champion(world.good))
    assert not verdict.passed
    assert verdict.observed is not None and verdict.observed < 0
    assert not any(w["passed"] for w in verdict.detail["windows"])


def test_the_margin_is_respected(world: World) -> None:
    passed, _ = _judge(world, _beats(), champion=_champion(world.weak))
    gain = passed.observed
    assert gain is not None and gain > 0.01
    assert _judge(world, _beats(gain - 0.005), champion=_champion(world.weak))[0].passed
    tight, _ = _judge(world, _beats(gain + 0.005), champion=_champion(world.weak))
    assert not tight.passed and tight.threshold == pytest.approx(gain + 0.005)


def test_the_recent_window_is_judged_on_its_own(world: World) -> None:
    # `late` learned the regime of the last days only: the candidate wins the holdout overall
    # but loses its newest days, and that alone fails the gate.
    verdict, _ = _judge(world, _beats(recent_days=SHIFT_DAYS), champion=_champion(world.late))
    holdout, recent = verdict.detail["windows"]
    assert holdout["passed"] and not recent["passed"]
    assert recent["days"] == SHIFT_DAYS and recent["rows"] < holdout["rows"]
    assert not verdict.passed and verdict.observed == pytest.approx(recent["improvement"])


def test_no_champion_passes_saying_so(world: World) -> None:
    verdict, _ = _judge(world, _beats(0.5))
    assert verdict.passed and verdict.detail["basis"] == NO_CHAMPION
    assert verdict.detail["note"] == "no champion"


@pytest.mark.parametrize(("recorded", "passed"), [(0.1, True), (0.99, False)])
def test_a_champion_on_another_service_falls_back_to_its_recorded_metric(
    world: World, recorded: float, passed: bool
) -> None:
    champion = _champion(world.weak, "fraud_v1", average_precision=recorded)
    verdict, _ = _judge(world, _beats(), champion=champion)
    assert verdict.passed is passed
    assert verdict.detail["basis"] == RECORDED_METRIC
    assert "fraud_v1" in verdict.detail["note"] and "recorded" in verdict.detail["note"]
    [window] = verdict.detail["windows"]
    assert window["champion"] == recorded
    assert window["candidate"] == pytest.approx(_metrics(world, world.good)["average_precision"])


def test_a_champion_that_cannot_be_loaded_fails_the_gate(world: World) -> None:
    broken = replace(_champion(world.weak), booster=None, error="hash mismatch")
    verdict, _ = _judge(world, _beats(), champion=broken)
    assert not verdict.passed and verdict.detail["error"] == "hash mismatch"


def test_load_champion_reads_the_verified_model(
    world: World, settings: Settings, store: Store
) -> None:
    artifacts = ArtifactStore(settings.artifacts_dir)
    assert load_champion(store, artifacts, FRAUD.model_name) is None
    package = build_package(
        world.weak.to_bytes(),
        feature_names=FEATURES,
        feature_types=["float64"] * len(FEATURES),
        feature_service=FRAUD.features.service,
    )
    with store.session() as session:
        run = Run(kind="train", use_case="fraud")
        session.add(run)
        session.flush()
        register_package(
            session, artifacts, package, model_name=FRAUD.model_name, use_case="fraud",
            run_id=run.id, metrics={"average_precision": 0.3},
        )  # fmt: skip
        registry.set_alias(
            session, model_name=FRAUD.model_name, alias=registry.CHAMPION, version=1,
            expected_revision=None, actor="test",
        )  # fmt: skip
    champion = load_champion(store, artifacts, FRAUD.model_name)
    assert champion is not None and champion.error is None and champion.booster is not None
    assert champion.metrics == {"average_precision": 0.3} and champion.inputs == tuple(FEATURES)
    x = world.prepared.x_valid
    assert np.array_equal(champion.booster.predict(x), world.weak.predict(x))
    assert _judge(world, _beats(), champion=champion)[0].passed


# --- the other kinds on constructed evidence --------------------------------------------------


FLOOR = MetricGate(name="ap_floor", kind="min", metric="average_precision", threshold=0.5)
CEILING = MetricGate(name="ll_ceiling", kind="max", metric="log_loss", threshold=0.2)


@pytest.mark.parametrize(
    ("gate", "metrics", "passed", "observed"),
    [
        (FLOOR, {"average_precision": 0.5}, True, 0.5),
        (FLOOR, {"average_precision": 0.49}, False, 0.49),
        (FLOOR, {}, False, None),
        (FLOOR, {"average_precision": float("nan")}, False, None),
        (CEILING, {"log_loss": 0.1}, True, 0.1),
        (CEILING, {"log_loss": 0.3}, False, 0.3),
    ],
)
def test_metric_floors_and_ceilings(
    gate: MetricGate, metrics: dict[str, float], passed: bool, observed: float | None
) -> None:
    [verdict] = evaluate_gates([gate], Evidence(metrics=metrics))
    assert (verdict.passed, verdict.observed, verdict.threshold) == (
        passed, observed, gate.threshold,
    )  # fmt: skip
    if observed is None:
        assert "not measured" in verdict.detail["error"]


def _fairness_entry(worst_ratio: float | None, worst_gap: float | None) -> dict[str, Any]:
    groups = [
        {"group": "US", "rows": 900, "small": False, "selection_rate": 0.10},
        {"group": "GB", "rows": 100, "small": False, "selection_rate": 0.05},
    ]
    return {
        "attribute": "country",
        "threshold": 0.4,
        "groups": groups,
        "worst": {"selection_rate_ratio": worst_ratio, "selection_rate_difference": worst_gap},
        "best_and_worst_over": "all groups",
    }


def _fair(**bounds: float) -> FairnessGate:
    return FairnessGate(
        name="fair", kind="fairness", attribute="country", measure="selection_rate", **bounds
    )


@pytest.mark.parametrize(
    ("gate", "ratio", "gap", "passed", "observed"),
    [
        (_fair(min_ratio=0.5), 0.5, 0.05, True, 0.5),
        (_fair(min_ratio=0.8), 0.5, 0.05, False, 0.5),
        (_fair(max_difference=0.1), 0.5, 0.05, True, 0.05),
        (_fair(max_difference=0.01), 0.5, 0.05, False, 0.05),
        (_fair(min_ratio=0.4, max_difference=0.01), 0.5, 0.05, False, 0.05),
        (_fair(min_ratio=0.4), None, 0.05, False, None),
    ],
)
def test_fairness_bounds(
    gate: FairnessGate, ratio: float | None, gap: float, passed: bool, observed: float | None
) -> None:
    evidence = Evidence(fairness=[_fairness_entry(ratio, gap)])
    [verdict] = evaluate_gates([gate], evidence)
    assert (verdict.passed, verdict.observed) == (passed, observed)
    assert [g["group"] for g in verdict.detail["groups"]] == ["US", "GB"]
    assert verdict.detail["decision_threshold"] == 0.4
    assert len(verdict.detail["checks"]) == (gate.min_ratio is not None) + (
        gate.max_difference is not None
    )


def test_fairness_without_the_attribute_or_the_report_fails() -> None:
    gate = _fair(min_ratio=0.1)
    other = {**_fairness_entry(1.0, 0.0), "attribute": "channel"}
    for evidence in (Evidence(), Evidence(fairness=[other])):
        [verdict] = evaluate_gates([gate], evidence)
        assert not verdict.passed and verdict.detail["error"]


def test_fairness_and_calibration_from_the_real_report(world: World) -> None:
    fair, _ = _judge(world, _fair(min_ratio=0.01, max_difference=1.0))
    assert fair.passed and {g["group"] for g in fair.detail["groups"]} == {"US", "GB", "DE"}
    calibrated, evidence = _judge(world, CalibrationGate(name="cal", kind="calibration", max_ece=1))
    assert evidence.calibration is not None and evidence.calibration["bins"] == 10
    assert calibrated.passed and calibrated.observed == evidence.calibration["ece"] > 0
    strict = CalibrationGate(name="cal", kind="calibration", max_ece=calibrated.observed / 2)
    assert not evaluate_gates([strict], evidence)[0].passed


@pytest.mark.parametrize(
    ("calibration", "passed"), [({"ece": 0.02}, True), ({"ece": 0.2}, False), (None, False)]
)
def test_calibration_bound(calibration: dict[str, float] | None, passed: bool) -> None:
    gate = CalibrationGate(name="cal", kind="calibration", max_ece=0.05)
    [verdict] = evaluate_gates([gate], Evidence(calibration=calibration))
    assert verdict.passed is passed


@pytest.mark.parametrize(("size", "passed"), [(MB, True), (2 * MB + 1, False), (None, False)])
def test_model_size_budget(size: int | None, passed: bool) -> None:
    gate = ModelSizeGate(name="size", kind="model_size", max_mb=2)
    [verdict] = evaluate_gates([gate], Evidence(model_bytes=size))
    assert verdict.passed is passed
    if size is not None:
        assert verdict.observed == pytest.approx(size / MB) and verdict.detail["bytes"] == size


def test_model_size_is_the_model_file(world: World) -> None:
    verdict, evidence = _judge(world, ModelSizeGate(name="size", kind="model_size", max_mb=50))
    assert verdict.passed and evidence.model_bytes == len(world.good.to_bytes())


DATA = {"rows": 3000, "positive_rate": 0.2, "null_fraction": {"f0": 0.0, "f1": 0.6}}


@pytest.mark.parametrize(
    ("bounds", "failed_check"),
    [
        ({"min_rows": 3000, "min_positive_rate": 0.1, "max_positive_rate": 0.3}, None),
        ({"min_rows": 3001}, "min_rows"),
        ({"min_positive_rate": 0.25}, "min_positive_rate"),
        ({"max_positive_rate": 0.15}, "max_positive_rate"),
        ({"max_null_fraction": 0.6}, None),
        ({"max_null_fraction": 0.5}, "max_null_fraction"),
    ],
)
def test_data_checks(bounds: dict[str, Any], failed_check: str | None) -> None:
    gate = DataGate.model_validate({"name": "data", "kind": "data", **bounds})
    [verdict] = evaluate_gates([gate], Evidence(data=DATA))
    assert verdict.passed is (failed_check is None)
    failed = [c["check"] for c in verdict.detail["checks"] if not c["passed"]]
    assert failed == ([failed_check] if failed_check else [])
    if failed_check == "max_null_fraction":
        assert verdict.detail["checks"][0]["over"] == ["f1"] and verdict.observed == 0.6


def test_data_stats_come_from_the_training_rows(world: World) -> None:
    p = world.prepared
    x = p.x_train.copy()
    x[: len(x) // 4, 3] = np.nan
    stats = training_data_stats(replace(p, x_train=x), FRAUD)
    assert stats["rows"] == p.train.height
    assert stats["positive_rate"] == pytest.approx(p.y_train.mean())
    assert stats["null_fraction"] == pytest.approx({"f0": 0, "f1": 0, "f2": 0, "f3": 0.25})
    gate = DataGate(name="data", kind="data", max_null_fraction=0.2)
    [verdict] = evaluate_gates([gate], Evidence(data=stats))
    assert not verdict.passed and verdict.observed == pytest.approx(0.25)
    assert verdict.detail["checks"][0]["over"] == ["f3"]


def test_missing_evidence_never_passes() -> None:
    gates: list[Gate] = [
        FLOOR,
        _beats(),
        _fair(min_ratio=0.5),
        CalibrationGate(name="cal", kind="calibration", max_ece=0.5),
        LatencyGate(name="lat", kind="latency", p99_ms=1000),
        ModelSizeGate(name="size", kind="model_size", max_mb=1000),
        DataGate(name="data", kind="data", min_rows=1),
    ]
    verdicts = evaluate_gates(gates, Evidence())
    assert [v.passed for v in verdicts] == [False] * len(gates)
    assert all(v.detail["error"] for v in verdicts)


# --- latency ------------------------------------------------------------------------------------


def test_latency_is_measured_on_single_real_rows(world: World) -> None:
    gate = LatencyGate(name="lat", kind="latency", p99_ms=1000, rows=200, warmup=20)
    verdict, evidence = _judge(world, gate)
    assert verdict.passed and evidence.latency is not None
    assert (evidence.latency["samples"], evidence.latency["warmup"]) == (200, 20)
    assert evidence.latency["rounds"] == 1  # within budget: measured once
    assert 0 < evidence.latency["p50_ms"] <= verdict.observed == evidence.latency["p99_ms"]
    impossible = LatencyGate(name="lat", kind="latency", p99_ms=0.000001, rows=50, warmup=5)
    failed, _ = _judge(world, impossible)
    assert not failed.passed and failed.observed is not None and failed.observed > 0.000001
    # Over budget, the measure is repeated (a busy moment must not block a model): all fail.
    assert failed.detail["rounds"] == LATENCY_ROUNDS == len(failed.detail["round_p99_ms"])
    assert failed.observed == min(failed.detail["round_p99_ms"])


def test_latency_excludes_the_warm_up() -> None:
    calls: list[int] = []

    def predict(row: np.ndarray) -> None:
        assert row.shape == (1, 2)
        calls.append(1)
        if len(calls) <= 3:  # a slow start: caches, lazy initialisation
            time.sleep(0.05)

    rows = np.arange(20, dtype=np.float64).reshape(10, 2)
    warm = measure_latency(predict, rows, samples=30, warmup=3)
    assert len(calls) == 33 and warm["samples"] == 30 and warm["max_ms"] < 50
    calls.clear()
    cold = measure_latency(predict, rows, samples=30, warmup=0)
    assert cold["max_ms"] >= 50


# --- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"kind": "beats_champion", "metric": "average_precision", "margin": -0.1},
         "gates.0.beats_champion.margin"),
        ({"kind": "beats_champion", "metric": "average_precision", "tolerance": 0.01},
         "'tolerance' was replaced by 'margin'"),
        ({"kind": "beats_champion", "metric": "rmse"}, "uses metric 'rmse' not in 'metrics'"),
        ({"kind": "max", "metric": "log_loss"}, "needs a threshold"),
        ({"kind": "fairness", "attribute": "country", "measure": "ppv", "min_ratio": 0.8},
         "gates.0.fairness.measure"),
        ({"kind": "fairness", "attribute": "country", "measure": "tpr"},
         "needs min_ratio and/or max_difference"),
        ({"kind": "fairness", "attribute": "channel", "measure": "tpr", "min_ratio": 0.8},
         "attribute 'channel' is not in evaluation.sensitive"),
        ({"kind": "fairness", "attribute": "country", "measure": "tpr", "min_ratio": 1.5},
         "gates.0.fairness.min_ratio"),
        ({"kind": "calibration", "max_ece": 0}, "gates.0.calibration.max_ece"),
        ({"kind": "latency", "p99_ms": 0}, "gates.0.latency.p99_ms"),
        ({"kind": "latency"}, "gates.0.latency.p99_ms"),
        ({"kind": "model_size", "max_mb": -1}, "gates.0.model_size.max_mb"),
        ({"kind": "data"}, "needs at least one of min_rows"),
        ({"kind": "data", "min_positive_rate": 0.5, "max_positive_rate": 0.1},
         "min_positive_rate (0.5) is greater than max_positive_rate"),
        ({"kind": "data", "max_null_fraction": 1.5}, "gates.0.data.max_null_fraction"),
        ({"kind": "coin_flip"}, "does not match any of the expected tags"),
    ],
)  # fmt: skip
def test_a_spec_with_a_bad_gate_is_refused_naming_the_field(
    tmp_path: Path, gate: dict[str, Any], message: str
) -> None:
    raw = yaml.safe_load((USECASES_DIR / "fraud.yaml").read_text())
    raw["gates"] = [{"name": "g", **gate}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(path)


def test_gate_names_are_unique_and_rate_gates_need_a_binary_task(tmp_path: Path) -> None:
    raw = yaml.safe_load((USECASES_DIR / "fraud.yaml").read_text())
    raw["gates"] = [raw["gates"][0], raw["gates"][0]]
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="gate names must be unique"):
        load_spec(path)
    delivery = Path(__file__).parents[1] / "usecases" / "delivery" / "delivery.yaml"
    raw = yaml.safe_load(delivery.read_text())
    raw["gates"] = [{"name": "cal", "kind": "calibration", "max_ece": 0.1}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="applies to binary_classification only, not regression"):
        load_spec(path)


def test_the_shipped_fraud_gates_cover_every_kind() -> None:
    assert {g.kind for g in FRAUD.gates} == {
        "min", "beats_champion", "fairness", "calibration", "latency", "model_size", "data",
    }  # fmt: skip


# --- recorded per version, and a failure blocks promotion -------------------------------------


def test_failed_gates_are_recorded_with_evidence_and_block_promotion(
    world: World, settings: Settings, store: Store
) -> None:
    artifacts = ArtifactStore(settings.artifacts_dir)
    package = build_package(
        world.good.to_bytes(),
        feature_names=FEATURES,
        feature_types=["float64"] * len(FEATURES),
        feature_service=FRAUD.features.service,
    )
    gates: list[Gate] = [FLOOR, LatencyGate(name="lat", kind="latency", p99_ms=0.000001)]
    verdicts = evaluate_gates(
        gates,
        collect_evidence(
            gates, spec=_spec(*gates), prepared=world.prepared, model=world.good,
            metrics=_metrics(world, world.good),
        ),
    )  # fmt: skip
    assert [v.passed for v in verdicts] == [True, False]
    with store.session() as session:
        run = Run(kind="train", use_case="fraud")
        session.add(run)
        session.flush()
        version = register_package(
            session, artifacts, package, model_name=FRAUD.model_name, use_case="fraud",
            run_id=run.id, metrics=_metrics(world, world.good),
        )  # fmt: skip
        record_gate_results(session, model_version_id=version.id, verdicts=verdicts, run_id=run.id)
    with store.reader() as session:
        rows = {r.gate: r for r in session.scalars(select(GateResult))}
    assert rows["lat"].detail["p99_ms"] == rows["lat"].observed and not rows["lat"].passed
    assert rows["lat"].detail["samples"] == 500 and rows["ap_floor"].passed

    refused = run_promote(settings, FRAUD, model_version=1)
    assert refused["promoted"] is False and refused["failed_gates"] == ["lat"]
    with pytest.raises(PolicyError, match="needs a reason"):
        run_promote(settings, FRAUD, model_version=1, force=True)
    forced = run_promote(
        settings, FRAUD, model_version=1, override=True, reason="latency waived", role="model-risk"
    )
    assert forced["promoted"] is True and forced["override"] is True

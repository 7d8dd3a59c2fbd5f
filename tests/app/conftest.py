"""Fixtures for the control-panel tests: an empty and a populated metadata store in tmp.

`populate(store)` writes a small but realistic history through the SQLAlchemy models: data
ingested twice, features built, two trainings registering fraud-detector v1 and v2 (with gate
verdicts and dataset lineage), a failed training, the champion moved v1 -> v2 with its alias
history, three monitoring windows of drift results with one open alert, and four ingest
batches (one quarantining rows, one rejected).

`real_lake` is a home built by the real ingest and features stages, for the Data page.

`training_home` is a store of real training runs (`write_training_runs`: LightGBM through the
train stage's `fit_and_record`, with its importance, SHAP and evaluation-report artifacts), for
run search, comparison and the Evaluation tab.
"""

from __future__ import annotations

import csv
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from loopline.settings import Settings
from loopline.store.db import Store
from loopline.store.tables import (
    Alert,
    Alias,
    AliasEvent,
    Artifact,
    DataBatch,
    DatasetVersion,
    DriftResult,
    GateResult,
    Model,
    ModelVersion,
    ModelVersionDataset,
    Run,
    RunArtifact,
    RunMetric,
)

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
MODEL = "fraud-detector"
CHAMPION_VERSION = 2
V1_METRICS = {"roc_auc": 0.8812, "average_precision": 0.4103, "log_loss": 0.1274}
V2_METRICS = {"roc_auc": 0.9135, "average_precision": 0.4721, "log_loss": 0.1019}
RUN_KINDS = {"ingest": 2, "features": 1, "train": 3, "promote": 1, "monitor": 3}


@dataclass(frozen=True)
class Facts:
    """What `populate` wrote, for the tests to assert on."""

    model: str = MODEL
    champion_version: int = CHAMPION_VERSION
    champion_metrics: dict[str, float] = field(default_factory=lambda: dict(V2_METRICS))
    run_kinds: dict[str, int] = field(default_factory=lambda: dict(RUN_KINDS))


@dataclass(frozen=True)
class Home:
    """A LOOPLINE_HOME for the app and the settings that point at it."""

    path: Path
    settings: Settings


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _run(run_id: str, kind: str, hours: float, seconds: float, **extra: object) -> Run:
    started = _at(hours)
    return Run(
        id=run_id,
        kind=kind,
        use_case="fraud",
        name=extra.pop("name", f"{kind}-{run_id[-2:]}"),
        status=extra.pop("status", "completed"),
        started_at=started,
        ended_at=started + timedelta(seconds=seconds),
        duration_s=seconds,
        prefect_flow_run_id=f"pf-{run_id}",
        git_commit="3f2a9c1d0b7e6a5f4c3b2a1908f7e6d5c4b3a291",
        environment={"python": "3.11.9", "lightgbm": "4.7.0"},
        **extra,
    )


def populate(store: Store) -> None:
    """Write the realistic history described in the module docstring into `store`."""
    with store.session() as s:
        s.add_all(
            [
                _run("ingest01", "ingest", 0, 4.2, summary={"rows_accepted": 5000}),
                _run("ingest02", "ingest", 24, 3.9, summary={"rows_accepted": 5200}),
                _run("feat01", "features", 25, 11.5),
                _run("train01", "train", 1, 42.0, params={"learning_rate": 0.05, "seed": 42}),
                _run("train02", "train", 26, 47.5, params={"learning_rate": 0.05, "seed": 42}),
                _run("train03", "train", 30, 2.1, status="failed", error="KeyError: 'amount'"),
                _run("promote01", "promote", 27, 0.4),
                *(_run(f"monitor0{i}", "monitor", 48 + 24 * i, 6.0) for i in range(3)),
            ]
        )
        s.flush()  # no ORM relationships: flush parents before the rows that point at them
        for run_id, metrics in (("train01", V1_METRICS), ("train02", V2_METRICS)):
            s.add_all(RunMetric(run_id=run_id, key=k, step=0, value=v) for k, v in metrics.items())
            s.add_all(
                RunMetric(
                    run_id=run_id,
                    key="valid_binary_logloss",
                    step=step,
                    value=0.3 * 0.93**step + 0.09,
                    is_final=False,
                )
                for step in range(1, 21)
            )
        s.add_all(
            Artifact(id=f"sha256:{c * 64}", size_bytes=1000, media_type="application/octet-stream")
            for c in "abc"
        )
        s.flush()
        s.add(RunArtifact(run_id="train02", name="model", artifact_id="sha256:" + "b" * 64))
        datasets = [
            ("dv-tx0", "transactions", 0, 5000, "ingest01", 0),
            ("dv-tx1", "transactions", 1, 10200, "ingest02", 24),
            ("dv-lb0", "labels", 0, 9800, "ingest02", 24),
            ("dv-cs3", "customer_stats", 3, 1200, "feat01", 25),
        ]
        s.add_all(
            DatasetVersion(
                id=dv_id,
                dataset=name,
                use_case="fraud",
                table_version=version,
                uri=f"/lake/{name}",
                content_hash=f"sha256:{dv_id}",
                row_count=rows,
                rows_in=rows,
                rows_accepted=rows,
                run_id=run_id,
                created_at=_at(hours),
            )
            for dv_id, name, version, rows, run_id, hours in datasets
        )
        s.add_all(_batches())
        s.add(Model(name=MODEL, use_case="fraud", created_at=_at(1)))
        s.flush()
        for number, run_id, metrics, hours, artifact in (
            (1, "train01", V1_METRICS, 1.2, "a"),
            (2, "train02", V2_METRICS, 26.2, "b"),
        ):
            s.add(
                ModelVersion(
                    id=f"mv{number}",
                    model_name=MODEL,
                    version=number,
                    run_id=run_id,
                    artifact_id=f"sha256:{artifact * 64}",
                    feature_service="fraud_v1",
                    feature_names={"inputs": ["amount", "hour", "customer_txn_count_7d"]},
                    metrics={**metrics, "slices": {"online": 0.5}},
                    created_at=_at(hours),
                )
            )
        s.flush()
        lineage = {
            "mv1": [("events", "dv-tx0"), ("labels", "dv-lb0")],
            "mv2": [("events", "dv-tx1"), ("labels", "dv-lb0"), ("feature:customer", "dv-cs3")],
        }
        s.add_all(
            ModelVersionDataset(model_version_id=mv, dataset_version_id=dv, role=role)
            for mv, pairs in lineage.items()
            for role, dv in pairs
        )
        for mv, metrics, champion_ap, hours in (
            ("mv1", V1_METRICS, None, 1.3),
            ("mv2", V2_METRICS, V1_METRICS["average_precision"], 26.3),
        ):
            s.add_all(
                [
                    GateResult(
                        model_version_id=mv,
                        gate="auc_floor",
                        passed=True,
                        observed=metrics["roc_auc"],
                        threshold=0.70,
                        evaluated_at=_at(hours),
                    ),
                    GateResult(
                        model_version_id=mv,
                        gate="ap_floor",
                        passed=True,
                        observed=metrics["average_precision"],
                        threshold=0.05,
                        evaluated_at=_at(hours),
                    ),
                    GateResult(
                        model_version_id=mv,
                        gate="beats_champion",
                        passed=True,
                        observed=metrics["average_precision"],
                        threshold=None if champion_ap is None else champion_ap - 0.01,
                        detail={"champion": champion_ap},
                        evaluated_at=_at(hours),
                    ),
                ]
            )
        s.add_all(
            [
                Alias(
                    model_name=MODEL,
                    alias="champion",
                    model_version_id="mv2",
                    revision=2,
                    updated_at=_at(27),
                ),
                Alias(
                    model_name=MODEL,
                    alias="challenger",
                    model_version_id="mv2",
                    revision=1,
                    updated_at=_at(26.5),
                ),
                AliasEvent(
                    model_name=MODEL,
                    alias="champion",
                    from_version_id=None,
                    to_version_id="mv1",
                    revision=1,
                    action="promote",
                    actor="alice",
                    reason="first model",
                    at=_at(2),
                ),
                AliasEvent(
                    model_name=MODEL,
                    alias="challenger",
                    from_version_id=None,
                    to_version_id="mv2",
                    revision=1,
                    action="promote",
                    actor="loopline",
                    reason="passed gates",
                    at=_at(26.5),
                ),
                AliasEvent(
                    model_name=MODEL,
                    alias="champion",
                    from_version_id="mv1",
                    to_version_id="mv2",
                    revision=2,
                    action="promote",
                    actor="bob",
                    reason="beats champion on average precision",
                    at=_at(27),
                ),
            ]
        )
        psi = {
            "amount": (0.04, 0.11, 0.31),
            "hour": (0.02, 0.03, 0.05),
            "merchant_category": (0.06, 0.08, 0.12),
            "prediction": (0.03, 0.07, 0.16),
        }
        s.add_all(
            DriftResult(
                run_id=f"monitor0{w}",
                model_version_id="mv2",
                window_start=_at(24 + 24 * w),
                window_end=_at(48 + 24 * w),
                feature=feature,
                method="psi",
                statistic=values[w],
                threshold=0.2,
                drifted=values[w] > 0.2,
                sample_size=900 + 50 * w,
                reference_size=8000,
            )
            for feature, values in psi.items()
            for w in range(3)
        )
        s.add(
            Alert(
                kind="drift",
                severity="warning",
                subject_type="model_version",
                subject_id=f"{MODEL}/2",
                message="amount drifted: PSI 0.31 > 0.2",
                run_id="monitor02",
                created_at=_at(96),
            )
        )


REJECTED_RULE = {
    "column": "amount",
    "rule": "not_null",
    "severity": "hard",
    "failures": 3,
    "examples": [{"column": "amount", "rule": "not_null", "value": None, "row": 17,
                  "source": "tx-day3.csv", "severity": "hard"}],
}  # fmt: skip
QUARANTINE_RULE = {
    "column": "hour",
    "rule": "between 0 and 23",
    "severity": "soft",
    "failures": 40,
    "examples": [{"column": "hour", "rule": "between 0 and 23", "value": 25, "row": 4,
                  "source": "tx-day2.csv", "severity": "soft"}],
}  # fmt: skip


def _batch(batch_id: str, dataset: str, hours: float, **fields: Any) -> DataBatch:
    source = fields.pop("source", f"{dataset}-{batch_id}.csv")
    return DataBatch(
        id=batch_id,
        dataset=dataset,
        use_case="fraud",
        sources={"files": [{"name": source, "path": f"/raw/{source}", "format": "csv",
                            "bytes": 81920, "rows": fields.get("rows_in"),
                            "sha256": "9" * 64}]},
        created_at=_at(hours),
        finished_at=_at(hours) + timedelta(seconds=3),
        **fields,
    )  # fmt: skip


def _batches() -> list[DataBatch]:
    """Ingest batches: two committed transactions batches (one with quarantined rows), a
    committed labels batch and a rejected transactions batch with a hard rule broken."""
    return [
        _batch("batch-tx0", "transactions", 0, status="committed", run_id="ingest01",
               rows_in=5000, rows_accepted=5000, table_version=0),
        _batch("batch-tx1", "transactions", 24, status="committed", run_id="ingest02",
               rows_in=5240, rows_accepted=5200, rows_quarantined=40, table_version=1,
               rules={"results": [QUARANTINE_RULE]},
               source="tx-day2.csv", message="40 of 5240 rows fail soft rules"),
        _batch("batch-lb0", "labels", 24, status="committed", run_id="ingest02",
               rows_in=9800, rows_accepted=9800, table_version=0),
        _batch("batch-tx2", "transactions", 30, status="rejected", rows_in=1200,
               rules={"results": [REJECTED_RULE]}, source="tx-day3.csv",
               message="transactions: 3 rows break hard rules (amount not_null)"),
    ]  # fmt: skip


def _home(path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("LOOPLINE_HOME", str(path))
    monkeypatch.delenv("LOOPLINE_DATABASE_URL", raising=False)
    return Home(path=path, settings=Settings(home=path))


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A LOOPLINE_HOME with nothing in it (the app creates the schema itself)."""
    return _home(tmp_path / "empty", monkeypatch)


@pytest.fixture
def populated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A LOOPLINE_HOME whose store holds the history `populate` writes."""
    home = _home(tmp_path / "populated", monkeypatch)
    store = Store.open(home.settings)
    try:
        populate(store)
    finally:
        store.dispose()
    return home


@pytest.fixture
def facts() -> Facts:
    """The values `populate` wrote."""
    return Facts()


# --- training runs with real evaluation artifacts (search, compare, the Evaluation tab) --------

TRAIN_LEAVES = (7, 31, 63)
"""One binary training run per `num_leaves` override; nothing else differs between them."""


@dataclass(frozen=True)
class TrainingRuns:
    """What `write_training_runs` recorded: run ids by name, and each binary run's metrics."""

    home: Home
    ids: dict[str, str]
    metrics: dict[str, dict[str, float]]

    def leaves(self, num_leaves: int) -> str:
        """The id of the binary run trained with this `num_leaves`."""
        return self.ids[f"train-{num_leaves}"]


def _fraud_holdout(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """Synthetic fraud-like events (time-ordered), their model inputs and labels.

    NG card holders spend more, so the model flags them more often: the fairness view has a
    group gap to show.
    """
    rng = np.random.default_rng(seed)
    country = rng.choice(["US", "GB", "DE", "NG"], n, p=[0.45, 0.3, 0.15, 0.1])
    amount = rng.exponential(150, n) * np.where(country == "NG", 2.5, 1.0)
    hour = rng.integers(0, 24, n)
    count = rng.poisson(5, n)
    chargebacks = rng.beta(1, 30, n)
    logit = -4.5 + 0.008 * amount + 1.5 * (hour < 6) + 25 * chargebacks
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    events = pl.DataFrame(
        {
            "event_timestamp": [T0 + timedelta(minutes=10 * i) for i in range(n)],
            "amount": amount,
            "hour": hour,
            "channel": rng.choice(["chip", "contactless", "swipe", "online"], n).tolist(),
            "country": country.tolist(),
            "is_fraud": label,
        }
    )
    inputs = np.column_stack([amount, hour, count, chargebacks]).astype(np.float64)
    return events, inputs, label, ["amount", "hour", "customer_txn_count_7d", "merchant_cb_rate"]


def write_training_runs(settings: Settings) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Record real training runs into the store under `settings.home`.

    Three binary runs go through the train stage's own `fit_and_record` (LightGBM, learning
    curves, importance, SHAP, the evaluation report) on synthetic fraud events; a regression
    and a multiclass run carry the evaluation report of synthetic predictions; an ingest run
    has no evaluation.
    """
    from loopline.lake.artifacts import ArtifactStore
    from loopline.spec import CostMatrix, EvaluationSpec, Segment, load_spec
    from loopline.stages.train import fit_and_record
    from loopline.tracking import RunHandle, tracked_run
    from loopline.training.prepare import Prepared
    from loopline.training.report import evaluation_report

    spec = load_spec("fraud")
    # Fewer rounds (fast), and misses costing 4 false alarms, not 25: a threshold that splits
    # the synthetic holdout instead of flagging nearly everything.
    spec = spec.model_copy(
        update={
            "training": spec.training.model_copy(
                update={"num_boost_round": 40, "early_stopping_rounds": 40}
            ),
            "evaluation": spec.evaluation.model_copy(
                update={"costs": CostMatrix(false_positive=1.0, false_negative=4.0)}
            ),
        }
    )
    events, inputs, label, names = _fraud_holdout(3000, seed=3)
    cut = 2400
    prepared = Prepared(
        train=events[:cut],
        valid=events[cut:],
        x_train=inputs[:cut],
        y_train=label[:cut],
        x_valid=inputs[cut:],
        y_valid=label[cut:],
        feature_names=names,
        num_class=None,
    )
    store = Store.open(settings)
    artifacts = ArtifactStore(settings.artifacts_dir)
    ids: dict[str, str] = {}
    metrics: dict[str, dict[str, float]] = {}

    def record(name: str, kind: str, **params: object) -> AbstractContextManager[RunHandle]:
        return tracked_run(
            store, artifacts, kind=kind, use_case="fraud", project_dir=settings.home,
            name=name, params=params, tags={"team": "risk"},
        )  # fmt: skip

    try:
        with record("ingest-1", "ingest", paths=["tx.csv"]) as run:
            run.log_metrics({"rows_accepted": 3000})
            ids["ingest-1"] = run.run_id
        for leaves in TRAIN_LEAVES:
            overrides = {"num_leaves": leaves}
            training = spec.training.model_dump()
            with record(f"train-{leaves}", "train", training=training, overrides=overrides) as run:
                metrics[f"train-{leaves}"] = fit_and_record(
                    run, prepared, spec, overrides=overrides
                ).metrics
                ids[f"train-{leaves}"] = run.run_id
        rng = np.random.default_rng(5)
        segments = EvaluationSpec(segments=[Segment(name="channel", column="channel")])
        frame = events[cut:]
        target = frame["amount"].to_numpy()
        with record("train-regression", "train") as run:
            report = evaluation_report(
                frame.with_columns(target=target), task="regression", y_true_col="target",
                pred=target + rng.normal(0, 20, frame.height), evaluation=segments,
                metrics=["rmse", "mae", "r2"],
            )  # fmt: skip
            run.log_artifact_bytes(
                "evaluation_report", json.dumps(report).encode(), media_type="application/json"
            )
            ids["train-regression"] = run.run_id
        with record("train-multiclass", "train") as run:
            classes = rng.integers(0, 3, frame.height)
            proba = rng.dirichlet([1, 1, 1], frame.height) + 0.5 * np.eye(3)[classes]
            report = evaluation_report(
                frame.with_columns(cls=classes), task="multiclass_classification",
                y_true_col="cls", pred=proba / proba.sum(axis=1, keepdims=True),
                evaluation=segments, metrics=["log_loss", "accuracy", "macro_f1"],
                classes=["low", "mid", "high"],
            )  # fmt: skip
            run.log_artifact_bytes(
                "evaluation_report", json.dumps(report).encode(), media_type="application/json"
            )
            ids["train-multiclass"] = run.run_id
    finally:
        store.dispose()
    return ids, metrics


@pytest.fixture(scope="session")
def _training_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    path = tmp_path_factory.mktemp("training") / "home"
    ids, metrics = write_training_runs(Settings(home=path))
    return path, ids, metrics


@pytest.fixture
def training_home(
    _training_store: tuple[Path, dict, dict], monkeypatch: pytest.MonkeyPatch
) -> TrainingRuns:
    """A LOOPLINE_HOME with real training runs (built once per session; tests only read it)."""
    path, ids, metrics = _training_store
    return TrainingRuns(home=_home(path, monkeypatch), ids=dict(ids), metrics=dict(metrics))


# --- a registry written through the registry API (the Models page's actions) -------------------

REGISTRY_FEATURES = ["amount", "hour", "txn_count_7d", "merchant_risk"]
REGISTRY_TYPES = ["float64", "float64", "float64", "categorical"]
SLOW_P99_MS = 35.0
"""The p99 latency of `Registry.failing`: over the fraud spec's 20 ms budget."""


@dataclass(frozen=True)
class Registry:
    """What `write_registry` made: three packaged versions, v3's latency gate failing, and v1
    promoted to champion by alice through the policy."""

    home: Home
    model: str = MODEL
    champion: int = 1
    passing: int = 2
    failing: int = 3
    failed_gate: str = "single_row_latency"
    package_ids: dict[int, str] = field(default_factory=dict)


def _tiny_model(seed: int) -> str:
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [rng.gamma(2.0, 50.0, 400), rng.integers(0, 24, 400), rng.poisson(3, 400),
         rng.integers(0, 4, 400)]
    ).astype(np.float64)  # fmt: skip
    y = (x[:, 0] / 100 + (x[:, 1] < 6) > 1.2).astype(int)
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "num_leaves": 7,
              "seed": seed, "deterministic": True}  # fmt: skip
    return lgb.train(
        params, lgb.Dataset(x, y, feature_name=REGISTRY_FEATURES), num_boost_round=6
    ).model_to_string()


def _window(window: str, rows: int, start: str, candidate: float, champion: float) -> dict:
    end = "2026-10-31T00:00:00+00:00"
    return dict(
        window=window, rows=rows, start=start, end=end, candidate=candidate, champion=champion
    )


def _group(group: str, rows: int, rate: float, best: float = 0.18) -> dict:
    return {
        "group": group,
        "rows": rows,
        "small": False,
        "selection_rate": rate,
        "selection_rate_ratio": rate / best,
        "selection_rate_difference": best - rate,
    }


def _evidence(version: int, *, p99_ms: float, model_bytes: int) -> Any:
    """Evidence as `collect_evidence` records it: v1 had no champion, later versions beat v1."""
    from loopline.registry.evidence import NO_CHAMPION, RESCORED, Evidence

    ap = 0.40 + 0.02 * version
    comparison: dict[str, Any] = {"basis": NO_CHAMPION, "champion": None, "note": "no champion"}
    if version > 1:
        comparison = {
            "basis": RESCORED,
            "champion": {"version": 1, "feature_service": "fraud_v1"},
            "note": "",
            "windows": [
                _window("holdout", 2400, "2026-10-01T00:00:00+00:00", ap, 0.41),
                _window("recent", 560, "2026-10-24T00:00:00+00:00", ap - 0.004, 0.40),
            ],
        }
    groups = [("US", 1100, 0.060), ("GB", 700, 0.055), ("DE", 380, 0.050), ("NG", 220, 0.180)]
    fairness = {
        "attribute": "country",
        "threshold": 0.31,
        "best_and_worst_over": "groups with at least 100 rows",
        "groups": [_group(*g) for g in groups],
        "worst": {"selection_rate_ratio": 0.05 / 0.18, "selection_rate_difference": 0.13},
    }
    latency = {"samples": 500, "warmup": 50, "p50_ms": 0.41, "p90_ms": 0.66, "p99_ms": p99_ms}
    nulls = {"amount": 0.0, "hour": 0.0, "txn_count_7d": 0.12, "merchant_risk": 0.0}
    return Evidence(
        metrics={"roc_auc": 0.88 + 0.01 * version, "average_precision": ap},
        comparisons={"beats_champion": comparison},
        fairness=[fairness],
        calibration={"ece": 0.012, "mce": 0.041},
        latency={**latency, "max_ms": p99_ms + 2.0, "mean_ms": 0.5, "rounds": 1},
        model_bytes=model_bytes,
        data={"rows": 2400, "positive_rate": 0.031, "null_fraction": nulls},
    )


def write_registry(settings: Settings) -> dict[int, str]:
    """Register three packaged versions of fraud-detector with gate verdicts judged by the
    fraud spec's gates (v3 too slow), and promote v1 to champion as alice; returns package ids.
    """
    from loopline.lake.artifacts import ArtifactStore
    from loopline.registry import models as registry
    from loopline.registry.gates import evaluate_gates, record_gate_results
    from loopline.registry.package import build_package, register_package
    from loopline.registry.policy import promote
    from loopline.spec import load_spec

    spec = load_spec("fraud")
    store = Store.open(settings)
    artifacts = ArtifactStore(settings.artifacts_dir)
    package_ids: dict[int, str] = {}
    try:
        for seed in range(3):
            text = _tiny_model(seed)
            package = build_package(
                text, feature_names=REGISTRY_FEATURES, feature_types=REGISTRY_TYPES,
                feature_service="fraud_v1", metadata={"trainer": "tests/app"},
            )  # fmt: skip
            with store.session() as session:
                run = Run(kind="train", use_case="fraud", name=f"train-v{seed + 1}")
                session.add(run)
                session.flush()
                evidence = _evidence(
                    seed + 1, p99_ms=SLOW_P99_MS if seed == 2 else 1.2, model_bytes=len(text)
                )
                version = register_package(
                    session, artifacts, package, model_name=MODEL, use_case="fraud",
                    run_id=run.id, metrics=dict(evidence.metrics),
                )  # fmt: skip
                record_gate_results(
                    session,
                    model_version_id=version.id,
                    verdicts=evaluate_gates(spec.gates, evidence),
                    run_id=run.id,
                )
                package_ids[version.version] = str(version.package_id)
        promote(
            store, spec.promotion, model_name=MODEL, version=1, actor="alice",
            reason="first model", use_case="fraud",
        )  # fmt: skip
        with store.reader() as session:
            assert registry.aliases_of(session, MODEL) == {"champion": 1}
    finally:
        store.dispose()
    return package_ids


def _registry_home(path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    home = _home(path, monkeypatch)
    for name in ("LOOPLINE_ACTOR", "LOOPLINE_ROLE", "LOOPLINE_USE_CASE", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)  # who acts is set on the page; no events sent
    return Registry(home=home, package_ids=write_registry(home.settings))


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A store written through the registry API, under the fraud spec's policy (overrides need
    the `model-risk` role; no two-person rule)."""
    return _registry_home(tmp_path / "registry", monkeypatch)


@pytest.fixture
def two_person_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """`registry_home`, then the use case switched to a copy of the fraud spec with the
    two-person rule on for `champion` (LOOPLINE_USE_CASE names the copy)."""
    import yaml

    from loopline.spec import USECASES_DIR

    registry = _registry_home(tmp_path / "registry", monkeypatch)
    raw = yaml.safe_load((USECASES_DIR / "fraud.yaml").read_text())
    raw["promotion"]["two_person_rule"] = True
    path = tmp_path / "fraud-two-person.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LOOPLINE_USE_CASE", str(path))
    return registry


# --- a real lake for the Data page: the ingest stage, then Feast -------------------------------


@dataclass(frozen=True)
class RealLake:
    """A home built by the real stages: what the Data page reads, and how one ingest failed."""

    settings: Settings
    rejected_message: str


def _extra_transactions(raw: Path, out: Path, *, rows: int, bad_hour_row: int) -> Path:
    """A copy of the last `rows` demo transactions under new ids, one row's hour out of range."""
    from loopline.spec import load_spec

    events = load_spec("fraud").events
    source = sorted((raw / events.table).glob("*.csv"))[-1]
    with source.open(newline="") as handle:
        records = list(csv.DictReader(handle))[-rows:]
    for i, record in enumerate(records):
        record[events.id] = f"extra-{out.stem}-{i}"
        if i == bad_hour_row:
            record["hour"] = "25"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return out


@pytest.fixture(scope="session")
def real_lake_built(tmp_path_factory: pytest.TempPathFactory) -> RealLake:
    """Demo data ingested (then one batch quarantining a row, one rejected as a duplicate),
    features built and materialized through Feast. Built once per session; read only."""
    from loopline.data.contracts import ContractError
    from loopline.spec import load_spec
    from loopline.stages import run_ingest, write_demo_data
    from loopline.stages.features import run_features

    spec = load_spec("fraud")
    home = tmp_path_factory.mktemp("real-lake")
    settings = Settings(home=home)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LOOPLINE_DATABASE_URL", raising=False)
        env.delenv("LOOPLINE_HOME", raising=False)
        write_demo_data(settings, days=24, customers=60, seed=5)
        run_ingest(settings, spec)
        extra = home / "extra"
        extra.mkdir()
        late = _extra_transactions(settings.raw_dir, extra / "late.csv", rows=40, bad_hour_row=3)
        run_ingest(settings, spec, paths={spec.events.table: [late]})
        duplicate = extra / "duplicate.csv"
        duplicate.write_text(late.read_text())  # the same ids again: a hard rule
        with pytest.raises(ContractError) as caught:
            run_ingest(settings, spec, paths={spec.events.table: [duplicate]})
        run_features(settings, spec)
    return RealLake(settings, str(caught.value).splitlines()[0])


@pytest.fixture
def real_lake(real_lake_built: RealLake, monkeypatch: pytest.MonkeyPatch) -> RealLake:
    """`real_lake_built`, with LOOPLINE_HOME pointing at it (for the app)."""
    monkeypatch.setenv("LOOPLINE_HOME", str(real_lake_built.settings.home))
    monkeypatch.delenv("LOOPLINE_DATABASE_URL", raising=False)
    return real_lake_built

"""Fixtures for the control-panel tests: an empty and a populated metadata store in tmp.

`populate(store)` writes a small but realistic history through the SQLAlchemy models: data
ingested twice, features built, two trainings registering fraud-detector v1 and v2 (with gate
verdicts and dataset lineage), a failed training, the champion moved v1 -> v2 with its alias
history, and three monitoring windows of drift results with one open alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loopline.settings import Settings
from loopline.store.db import Store
from loopline.store.tables import (
    Alert,
    Alias,
    AliasEvent,
    Artifact,
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

"""The whole loop through the real platform: `loopline up` on a small demo, then everything a
user does next, then `loopline down`.

One module-scoped platform (Prefect server, worker, deployments, API, app on free loopback
ports, data home in a temporary folder) is shared by the tests below, which run in file order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from sqlalchemy import select

from loopline.features import transform
from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.serving.prediction_log import read_prediction_log
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.store import Store
from loopline.store.tables import (
    AliasEvent,
    AuditEvent,
    DatasetVersion,
    DriftResult,
    ModelVersionDataset,
    Run,
)
from loopline.training.model import load_booster

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
SPEC = load_spec("fraud")
DEMO = ["--days", "90", "--customers", "2000"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of a running platform; `loopline down` (and a kill sweep) at the end."""
    home = tmp_path_factory.mktemp("e2e") / "home"
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(home),
        "LOOPLINE_PREFECT_PORT": str(_free_port()),
        "LOOPLINE_API_PORT": str(_free_port()),
        "LOOPLINE_APP_PORT": str(_free_port()),
    }
    env.pop("PREFECT_API_URL", None)
    yield env
    subprocess.run([BIN / "loopline", "down"], env=env, timeout=120, check=False)
    for pid_file in (home / "run").glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def _loopline(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "loopline", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _settings(env: dict[str, str]) -> Settings:
    return Settings(home=Path(env["LOOPLINE_HOME"]), api_port=int(env["LOOPLINE_API_PORT"]))


def test_up_brings_the_platform_up_and_trains_a_champion(platform: dict[str, str]) -> None:
    started = time.perf_counter()
    done = _loopline(platform, "up", *DEMO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loopline is up" in done.stdout
    assert f"127.0.0.1:{platform['LOOPLINE_API_PORT']}" in done.stdout
    print(f"\nloopline up (cold, 90 days x 2000 customers): {time.perf_counter() - started:.1f}s")


def test_champion_has_lineage_to_run_datasets_and_feature_service(
    platform: dict[str, str],
) -> None:
    store = Store.open(_settings(platform))
    with store.reader() as session:
        champion = registry.get_alias(session, SPEC.model_name, registry.CHAMPION)
        assert champion is not None
        version = champion.model_version
        run = session.get_one(Run, version.run_id)
        assert (run.kind, run.status) == ("train", "succeeded")
        assert run.prefect_flow_run_id, "the train run did not go through Prefect"
        assert run.git_commit and run.lock_hash and run.environment["packages"]["lightgbm"]
        assert version.feature_service == SPEC.features.service
        roles = dict(
            session.execute(
                select(ModelVersionDataset.role, DatasetVersion.dataset)
                .join(DatasetVersion, DatasetVersion.id == ModelVersionDataset.dataset_version_id)
                .where(ModelVersionDataset.model_version_id == version.id)
            ).all()
        )
        assert roles == {
            "events": "transactions",
            "labels": "labels",
            "feature:customer_activity": "customer_activity",
            "feature:merchant_activity": "merchant_activity",
        }
        moves = session.scalars(select(AliasEvent).where(AliasEvent.to_version_id == version.id))
        assert [m.alias for m in moves] == ["champion"]
        actions = set(session.scalars(select(AuditEvent.action)))
        assert {"register", "alias.promote"} <= actions


def test_predict_over_http_equals_the_offline_model(platform: dict[str, str]) -> None:
    settings = _settings(platform)
    body = {
        "customer_id": 11, "merchant_id": 3, "amount": 412.5, "merchant_category": "electronics",
        "channel": "online", "country": "NG", "hour": 2, "request_id": "e2e-parity-1",
    }  # fmt: skip
    response = httpx.post(f"http://127.0.0.1:{settings.api_port}/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    served = response.json()

    store = Store.open(settings)
    with store.reader() as session:
        version = registry.get_version(session, SPEC.model_name, served["model_version"])
    booster = load_booster(ArtifactStore(settings.artifacts_dir).get_bytes(version.artifact_id))
    logged = read_prediction_log(settings.prediction_log_dir).filter(
        pl.col("request_id") == "e2e-parity-1"
    )
    # The features it was served (fresh, at the request's time), exactly as logged.
    features = logged.get_column("features").item()
    assert features["cust_txn_count_30d"] is not None
    served_at = logged.get_column("ts").item()  # request-time features are relative to it
    row = (
        {k: v for k, v in body.items() if k != "request_id"}
        | features
        | {SPEC.events.timestamp: served_at}
    )
    inputs = transform.model_inputs(pl.DataFrame([row]), SPEC, version.feature_service)
    offline = float(booster.predict(transform.to_numpy(inputs))[0])
    assert served["score"] == pytest.approx(offline, abs=1e-9)
    assert 0.0 < served["score"] < 1.0
    assert not np.isnan(inputs.row(0)).all()


@pytest.mark.parametrize(
    ("change", "field"),
    [({"amount": -1}, "amount"), ({"channel": "carrier-pigeon"}, "channel"), ({"x": 1}, "x")],
)
def test_bad_predict_input_names_the_field(
    platform: dict[str, str], change: dict[str, object], field: str
) -> None:
    body = {
        "customer_id": 1, "merchant_id": 1, "amount": 5.0, "merchant_category": "grocery",
        "channel": "chip", "country": "US", "hour": 9,
    } | change  # fmt: skip
    port = platform["LOOPLINE_API_PORT"]
    response = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=30)
    assert response.status_code == 422
    assert field in json.dumps(response.json())


def test_demo_traffic_was_monitored_into_drift_results(platform: dict[str, str]) -> None:
    store = Store.open(_settings(platform))
    with store.reader() as session:
        results = list(session.scalars(select(DriftResult)))
    features = {r.feature for r in results}
    assert set(transform.feature_names(SPEC)) <= features
    assert "prediction" in features
    assert all(r.sample_size >= SPEC.drift.min_rows for r in results)
    # An untouched demo is a clean baseline: every served value equals the offline one (the
    # serving tests measure 0 mismatches) and the distributions match training's. Before
    # fresh features 10 of 41 inputs were flagged here. What the fixed PSI threshold of 0.2
    # may still flag at 300 rows is merch_fraud_labels_30d: a slow merchant-level count whose
    # training window held card-testing bursts a one-day window does not (its top bin is
    # empty at n=300); thresholds calibrated to the window's size are the monitoring issue.
    drifted = [r.feature for r in results if r.drifted]
    assert len(drifted) <= 1 and set(drifted) <= {"merch_fraud_labels_30d"}, drifted


def test_up_again_reuses_everything(platform: dict[str, str]) -> None:
    started = time.perf_counter()
    done = _loopline(platform, "up", *DEMO, "--traffic", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.perf_counter() - started < 30
    status = _loopline(platform, "status")
    assert status.stdout.count("running") == 4, status.stdout


def test_prefect_deployment_run_from_another_shell_trains_again(platform: dict[str, str]) -> None:
    env = platform | {
        "PREFECT_API_URL": f"http://127.0.0.1:{platform['LOOPLINE_PREFECT_PORT']}/api"
    }
    done = subprocess.run(
        [BIN / "prefect", "deployment", "run", "pipeline/loopline", "--watch"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    listing = _loopline(platform, "models", "list", "--json")
    versions = json.loads(listing.stdout)["model_versions"]
    assert sorted(v["version"] for v in versions) == [1, 2]
    runs = json.loads(_loopline(platform, "runs", "list", "--json", "--limit", "100").stdout)
    assert {r["kind"] for r in runs["runs"]} >= {"ingest", "features", "train", "promote"}


def _champion(env: dict[str, str]) -> int:
    store = Store.open(_settings(env), migrate=False)
    try:
        with store.reader() as session:
            found = registry.get_alias(session, SPEC.model_name, registry.CHAMPION)
            assert found is not None
            return found.model_version.version
    finally:
        store.dispose()


def _registry_events(api_url: str, wanted: set[str]) -> list[dict]:
    """The server's loopline registry events, once every name in `wanted` is among them."""
    deadline = time.monotonic() + 60
    while True:  # the server persists events in batches, a few seconds after they arrive
        body = {"filter": {"event": {"prefix": ["loopline."]}}, "limit": 50}
        found = httpx.post(f"{api_url}/events/filter", json=body, timeout=10).json()["events"]
        if wanted <= {e["event"] for e in found} or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_promote_and_rollback_deployments_move_champion_and_send_events(
    platform: dict[str, str],
) -> None:
    api_url = f"http://127.0.0.1:{platform['LOOPLINE_PREFECT_PORT']}/api"
    env = platform | {"PREFECT_API_URL": api_url}

    def run(deployment: str, *params: str) -> None:
        args = [BIN / "prefect", "deployment", "run", deployment, "--watch"]
        for param in params:
            args += ["-p", param]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr

    # Version 2 takes champion (by override of its gates if they failed: a model-risk role).
    run(
        "promote/loopline", "version=2", "override=true", "reason=e2e: take the retrained model",
        "role=model-risk", "actor=e2e-tester",
    )  # fmt: skip
    assert _champion(platform) == 2
    run("rollback/loopline", "reason=e2e: back to the first model", "actor=e2e-tester")
    assert _champion(platform) == 1

    found = _registry_events(api_url, {"loopline.model.promoted", "loopline.model.rolled_back"})
    rolled_back = [e for e in found if e["event"] == "loopline.model.rolled_back"]
    assert len(rolled_back) == 1, found
    event = rolled_back[0]
    assert event["resource"]["prefect.resource.id"] == f"loopline.model.{SPEC.model_name}"
    assert (event["payload"]["from"], event["payload"]["to"]) == (2, 1)
    assert event["payload"]["actor"] == "e2e-tester"
    assert event["payload"]["reason"] == "e2e: back to the first model"
    promoted_to = {e["payload"]["to"] for e in found if e["event"] == "loopline.model.promoted"}
    assert promoted_to >= {1, 2}  # the first pipeline's promotion, and version 2's

    store = Store.open(_settings(platform), migrate=False)
    try:
        with store.reader() as session:
            actions = [
                a.action
                for a in session.scalars(select(AuditEvent).where(AuditEvent.actor == "e2e-tester"))
            ]
    finally:
        store.dispose()
    assert actions.count("alias.rollback") == 1
    assert "alias.refused" not in actions


def test_down_stops_everything(platform: dict[str, str]) -> None:
    done = _loopline(platform, "down")
    assert done.returncode == 0, done.stderr
    status = _loopline(platform, "status")
    assert "running" not in status.stdout
    for port in ("LOOPLINE_PREFECT_PORT", "LOOPLINE_API_PORT", "LOOPLINE_APP_PORT"):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(platform[port]))) != 0

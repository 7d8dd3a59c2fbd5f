"""Run records: environment, params, nesting, notes, heartbeats, and crash reaping."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from loopline import tracking
from loopline.lake.artifacts import ArtifactStore
from loopline.runs_query import search_runs
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import ModelVersion, Run, RunParam, RunTag, utcnow
from loopline.tracking import (
    TrackingError,
    flatten_params,
    param_values,
    reap_runs,
    set_run_notes,
    set_run_tags,
    tracked_run,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.open(settings)


@pytest.fixture
def artifacts(settings: Settings) -> ArtifactStore:
    return ArtifactStore(settings.artifacts_dir)


def _run(store: Store, run_id: str) -> Run:
    with store.reader() as session:
        return session.get_one(Run, run_id)


def test_a_run_records_process_code_and_environment(store: Store, artifacts: ArtifactStore) -> None:
    params = {"training": {"num_leaves": 63, "early_stopping": True}, "objective": "binary"}
    with tracked_run(
        store, artifacts, kind="train", use_case="fraud", project_dir=ROOT, params=params,
        tags={"team": "risk"}, notes="baseline", name="first",
    ) as run:  # fmt: skip
        during = _run(store, run.run_id)
        assert during.status == "running"
        assert during.pid == os.getpid() and during.host == socket.gethostname()
        assert during.heartbeat_at is not None
    row = _run(store, run.run_id)
    assert row.status == "succeeded" and row.error is None and row.name == "first"
    assert row.notes == "baseline" and row.tags == {"team": "risk"}
    assert row.git_commit is not None and len(row.git_commit) == 40  # no '-dirty' suffix
    assert isinstance(row.git_dirty, bool)
    assert row.lock_hash is not None and len(row.lock_hash) == 64
    assert row.duration_s is not None and row.duration_s >= 0
    assert row.peak_memory_mb is not None and row.peak_memory_mb > 10
    assert row.ended_at is not None and row.heartbeat_at == row.ended_at
    hardware = row.environment["hardware"]
    assert isinstance(hardware["cpu_model"], str) and hardware["cpu_model"]
    assert hardware["cpu_logical_cores"] >= 1 and hardware["cpu_usable_cores"] >= 1
    assert hardware["memory_total_gb"] > 0
    assert {"sqlalchemy", "polars", "lightgbm"} <= set(row.environment["packages"])
    assert row.environment["python"] == sys.version.split()[0]
    with store.reader() as session:
        flat = {
            p.key: (p.value_text, p.value_num)
            for p in session.scalars(select(RunParam).where(RunParam.run_id == run.run_id))
        }
        tags = session.scalars(select(RunTag.value).where(RunTag.run_id == run.run_id)).all()
    assert flat == {
        "training.num_leaves": ("63", 63.0),
        "training.early_stopping": ("true", None),
        "objective": ("binary", None),
    }
    assert tags == ["risk"]


def test_outside_a_git_checkout_code_state_is_unknown(
    store: Store, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    with tracked_run(store, artifacts, kind="ingest", use_case="fraud", project_dir=tmp_path) as r:
        pass
    row = _run(store, r.run_id)
    assert row.git_commit is None and row.git_dirty is None and row.lock_hash is None


def test_a_failing_body_fails_the_run_and_reraises(store: Store, artifacts: ArtifactStore) -> None:
    with (
        pytest.raises(ValueError, match="boom"),
        tracked_run(store, artifacts, kind="train", use_case="fraud", project_dir=ROOT) as run,
    ):
        raise ValueError("boom")
    row = _run(store, run.run_id)
    assert row.status == "failed" and row.error == "ValueError: boom"
    assert row.ended_at is not None


def test_heartbeats_advance_while_open_and_stop_after(
    store: Store, artifacts: ArtifactStore
) -> None:
    with tracked_run(
        store, artifacts, kind="train", use_case="fraud", project_dir=ROOT, heartbeat_s=0.05
    ) as run:
        first = _run(store, run.run_id).heartbeat_at
        deadline = time.monotonic() + 5
        while _run(store, run.run_id).heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _run(store, run.run_id).heartbeat_at > first  # type: ignore[operator]
    assert not [t for t in threading.enumerate() if t.name.startswith("loopline-heartbeat")]


def test_nested_runs_and_an_unknown_parent(store: Store, artifacts: ArtifactStore) -> None:
    common: dict[str, Any] = {"use_case": "fraud", "project_dir": ROOT}
    with tracked_run(store, artifacts, kind="tune", **common) as study:
        for trial in range(2):
            with tracked_run(
                store, artifacts, kind="tune-trial", parent_run_id=study.run_id,
                params={"trial": trial}, **common,
            ) as child:  # fmt: skip
                child.log_metrics({"roc_auc": 0.8 + trial / 10})
    page = search_runs(store, f"parent = '{study.run_id}'", order_by="metrics.roc_auc desc")
    assert [r.metrics["roc_auc"] for r in page.runs] == [0.9, 0.8]
    orphan = tracked_run(store, artifacts, kind="tune-trial", parent_run_id="nope", **common)
    with pytest.raises(TrackingError, match="unknown parent run 'nope'"):
        orphan.__enter__()  # the check runs before the run is written
    with store.reader() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 3


def test_params_tags_and_notes_can_be_added_later(store: Store, artifacts: ArtifactStore) -> None:
    with tracked_run(
        store, artifacts, kind="train", use_case="fraud", project_dir=ROOT,
        params={"training": {"num_leaves": 63, "seed": 7}},
    ) as run:  # fmt: skip
        run.log_params({"training": {"num_leaves": 31}, "lightgbm": {"max_bin": 255}})
        run.set_tags({"stage": "dev"})
        run.set_notes("lightgbm defaults recorded")
    row = _run(store, run.run_id)
    assert row.params == {"training": {"num_leaves": 31, "seed": 7}, "lightgbm": {"max_bin": 255}}
    found = search_runs(store, "params.training.num_leaves = 31 and params.lightgbm.max_bin = 255")
    assert [r.id for r in found.runs] == [run.run_id]
    assert search_runs(store, "params.training.num_leaves = 63").runs == []
    set_run_notes(store, run.run_id, "reviewed")
    set_run_tags(store, run.run_id, {"stage": "prod", "owner": "ana"})
    row = _run(store, run.run_id)
    assert row.notes == "reviewed" and row.tags == {"stage": "prod", "owner": "ana"}
    assert [
        r.id for r in search_runs(store, "tags.stage = 'prod' and notes = 'reviewed'").runs
    ] == [run.run_id]
    with pytest.raises(TrackingError, match="unknown run 'missing'"):
        set_run_notes(store, "missing", "x")
    with pytest.raises(TrackingError, match="unknown run 'missing'"):
        set_run_tags(store, "missing", {"a": "b"})
    with pytest.raises(TrackingError, match="tag key '' must be 1 to 200 characters"):
        set_run_tags(store, run.run_id, {"": "b"})


def test_a_param_key_too_long_writes_nothing(store: Store, artifacts: ArtifactStore) -> None:
    opening = tracked_run(
        store, artifacts, kind="train", use_case="fraud", project_dir=ROOT,
        params={"a" * 300: 1},
    )  # fmt: skip
    with pytest.raises(TrackingError, match="param key 'aaaa"):
        opening.__enter__()
    with store.reader() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (63, ("63", 63.0)),
        (0.05, ("0.05", 0.05)),
        ("63", ("63", 63.0)),
        ("1e-3", ("1e-3", 0.001)),
        ("binary", ("binary", None)),
        (True, ("true", None)),
        (False, ("false", None)),
        (None, (None, None)),
        ([1, "a"], ('[1, "a"]', None)),
        ({"b": 1, "a": 2}, ('{"a": 2, "b": 1}', None)),
        (math.inf, ("inf", None)),
        ("nan", ("nan", None)),
        ("x" * 1500, ("x" * 1000, None)),
    ],
)
def test_param_values_for_search(value: Any, expected: tuple[str | None, float | None]) -> None:
    assert param_values(value) == expected


@pytest.mark.parametrize(
    ("params", "flat"),
    [
        ({}, {}),
        ({"a": 1}, {"a": 1}),
        ({"a": {"b": {"c": 1}, "d": [1, 2]}}, {"a.b.c": 1, "a.d": [1, 2]}),
        ({"a": {}}, {"a": {}}),
        ({1: {"x": None}}, {"1.x": None}),
    ],
)
def test_flatten_params(params: dict[Any, Any], flat: dict[str, Any]) -> None:
    assert flatten_params(params) == flat


# --- reaping -----------------------------------------------------------------------------------


def _gone_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


HERE = socket.gethostname()


@pytest.mark.parametrize(
    ("host", "pid", "beat_age_s", "status", "reaped", "reason"),
    [
        (HERE, "gone", 1, "running", True, "ended without closing the run"),
        (HERE, "self", 1, "running", False, None),
        (HERE, "self", 600, "running", True, "no heartbeat from process"),
        ("elsewhere", 1, 1, "running", False, None),
        ("elsewhere", 1, 600, "running", True, "no heartbeat from process 1 on elsewhere"),
        (None, None, 600, "running", True, "no heartbeat from its process"),
        (None, None, 1, "running", False, None),
        (HERE, "gone", 600, "succeeded", False, None),
        ("elsewhere", 1, 600, "failed", False, None),
    ],
)
def test_reaper_closes_runs_whose_process_is_gone_or_silent(
    store: Store,
    host: str | None,
    pid: int | str | None,
    beat_age_s: float,
    status: str,
    reaped: bool,
    reason: str | None,
) -> None:
    now = utcnow()
    pids = {"gone": _gone_pid(), "self": os.getpid()}
    started = now - timedelta(seconds=beat_age_s + 30)
    last = now - timedelta(seconds=beat_age_s)
    with store.session() as session:
        run = Run(
            kind="train", use_case="fraud", status=status, host=host,
            pid=pids.get(pid, pid) if isinstance(pid, str) else pid, started_at=started,
            heartbeat_at=last if pid is not None else None,
        )  # fmt: skip
        session.add(run)
    result = reap_runs(store, stale_after_s=120, now=now)
    row = _run(store, run.id)
    if not reaped:
        assert result == [] and row.status == status
        return
    assert [r.run_id for r in result] == [run.id]
    assert reason is not None and reason in result[0].reason
    assert row.status == "crashed" and row.error == f"crashed: {result[0].reason}"
    expected_end = last if pid is not None else started
    assert row.ended_at == expected_end
    assert row.duration_s == pytest.approx((expected_end - started).total_seconds())
    assert reap_runs(store, stale_after_s=120, now=now) == []  # idempotent


def test_reaper_leaves_a_run_that_beat_meanwhile(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.session() as session:
        run = Run(kind="train", use_case="fraud", host=HERE, pid=_gone_pid(),
                  heartbeat_at=utcnow())  # fmt: skip
        session.add(run)

    def beat_then_answer(pid: int) -> bool:
        with store.session() as session:
            session.execute(update(Run).where(Run.id == run.id).values(heartbeat_at=utcnow()))
        return False

    monkeypatch.setattr(tracking, "pid_alive", beat_then_answer)
    assert reap_runs(store) == []
    assert _run(store, run.id).status == "running"


def test_reaper_refuses_a_non_positive_threshold(store: Store) -> None:
    with pytest.raises(TrackingError, match="stale_after_s must be positive"):
        reap_runs(store, stale_after_s=0)


KILLED_TRAINING = """
import sys, time
from pathlib import Path
from loopline.lake.artifacts import ArtifactStore
from loopline.registry.models import register_version
from loopline.settings import Settings
from loopline.store import Store
from loopline.tracking import tracked_run

settings = Settings(home=Path(sys.argv[1]))
store = Store.open(settings)
with tracked_run(store, ArtifactStore(settings.artifacts_dir), kind="train", use_case="fraud",
                 project_dir=Path(sys.argv[2]), params={"num_leaves": 63},
                 heartbeat_s=0.1) as run:
    run.log_metrics({"roc_auc": 0.9})
    model = run.log_artifact_bytes("model", b"booster", media_type="text/plain")
    # The version is written with the run's success, in one transaction, or never.
    run.on_success(lambda session: register_version(
        session, model_name="fraud", use_case="fraud", run_id=run.run_id, artifact_id=model,
        feature_service="fraud_v1", feature_names=[], metrics={"roc_auc": 0.9}, datasets={}))
    print("TRAINING", run.run_id, flush=True)
    time.sleep(float(sys.argv[3]))  # SIGKILLed here in the test
"""


def test_a_killed_training_run_ends_crashed_with_no_model_version(
    settings: Settings, store: Store
) -> None:
    script = settings.home / "train.py"
    script.write_text(textwrap.dedent(KILLED_TRAINING))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(settings.home), str(ROOT), "120"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("TRAINING"), line
        run_id = line.split()[1]
        first = _run(store, run_id).heartbeat_at
        deadline = time.monotonic() + 10
        while _run(store, run_id).heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _run(store, run_id).heartbeat_at != first  # the process beats
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _run(store, run_id).status == "running"  # nobody closed it...
    page = search_runs(store, "status = 'crashed' and kind = 'train'")  # ...listing reaps it
    assert [r.id for r in page.runs] == [run_id]
    (crashed,) = page.runs
    assert crashed.error is not None and f"process {proc.pid}" in crashed.error
    assert crashed.metrics == {"roc_auc": 0.9}
    with store.reader() as session:
        versions = session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.run_id == run_id)
        )
    assert versions == 0
    assert search_runs(store, "status = 'running'").runs == []


def test_on_success_writes_commit_with_the_run_or_not_at_all(
    settings: Settings, store: Store, artifacts: ArtifactStore
) -> None:
    """The same script, not killed: its version is registered as the run succeeds."""
    script = settings.home / "train.py"
    script.write_text(textwrap.dedent(KILLED_TRAINING))
    done = subprocess.run(
        [sys.executable, str(script), str(settings.home), str(ROOT), "0"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    run_id = done.stdout.split()[1]
    assert _run(store, run_id).status == "succeeded"
    with store.reader() as session:
        assert session.scalars(select(ModelVersion.run_id)).all() == [run_id]

    def broken(session: Any) -> None:
        session.add(Run(kind="side-effect", use_case="fraud"))
        session.flush()
        raise RuntimeError("registry refused")

    opts: dict[str, Any] = {"kind": "train", "use_case": "fraud", "project_dir": ROOT}
    with (
        pytest.raises(RuntimeError, match="registry refused"),
        tracked_run(store, artifacts, **opts) as r,
    ):
        r.on_success(broken)
    row = _run(store, r.run_id)
    assert row.status == "failed" and row.error == "on success: RuntimeError: registry refused"
    with store.reader() as session:
        assert session.scalar(select(func.count()).where(Run.kind == "side-effect")) == 0

    called: list[str] = []
    with pytest.raises(ValueError, match="body"), tracked_run(store, artifacts, **opts) as r:
        r.on_success(lambda session: called.append("no"))
        raise ValueError("body")
    assert called == [] and _run(store, r.run_id).status == "failed"

"""Process management behind `loopline up | down | status`.

First the process helpers on tiny Python subprocesses (start, stop, escalation, process groups,
stale and recycled pid files, health waits). Then a real Prefect server on a free loopback port
with its home in a temporary folder: `up` on a throwaway flow project (server, pool, worker,
deploy, pipeline deployment run to Completed, control panel), a second `up` that reuses all of
it, a failing run, the real `flows/prefect.yaml` deployed, and `down` leaving no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loopline import ops
from loopline.ops import process
from loopline.ops.components import child_env, settings_env
from loopline.ops.prefect_api import PrefectAPI
from loopline.settings import PROJECT_ROOT, Settings

PY = sys.executable


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_line(record: process.ProcessRecord, prefix: str, timeout: float = 10.0) -> str:
    """The first line of the process's output starting with `prefix` (the log's header line,
    which quotes the command, does not count)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in process.tail(record.log, 200).splitlines():
            if line.startswith(prefix):
                return line
        assert time.monotonic() < deadline, f"no line {prefix!r} in {record.log}"
        time.sleep(0.05)


def start_python(run_dir: Path, name: str, code: str) -> process.ProcessRecord:
    return process.start(run_dir, name, [PY, "-c", code], env=dict(os.environ), cwd=run_dir)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- process helpers -----------------------------------------------------------------------


def test_start_writes_pid_file_and_log_and_stop_removes_them(tmp_path: Path) -> None:
    record = start_python(
        tmp_path, "hello", "import time; print('hello', flush=True); time.sleep(60)"
    )
    wait_for_line(record, "hello")

    assert process.read_record(tmp_path, "hello") == record
    assert process.is_alive(record)
    assert os.getpgid(record.pid) == record.pid  # own process group
    assert process.stop(tmp_path, "hello") == "SIGTERM"
    assert not alive(record.pid)
    assert not process.pid_file(tmp_path, "hello").exists()
    assert process.stop(tmp_path, "hello") is None  # nothing left to stop


@pytest.mark.parametrize(
    ("ignored", "ended_by"),
    [
        ((), "SIGTERM"),
        ((signal.SIGTERM,), "SIGINT"),
        ((signal.SIGTERM, signal.SIGINT), "SIGKILL"),
    ],
)
def test_stop_escalates_until_the_process_is_gone(
    tmp_path: Path, ignored: tuple[signal.Signals, ...], ended_by: str
) -> None:
    ignore = "".join(f"signal.signal({int(s)}, signal.SIG_IGN); " for s in ignored)
    record = start_python(
        tmp_path,
        "stubborn",
        f"import signal, time; {ignore}print('ready', flush=True); time.sleep(60)",
    )
    wait_for_line(record, "ready")

    began = time.monotonic()
    assert process.stop(tmp_path, "stubborn", grace=0.5) == ended_by
    assert not alive(record.pid)
    assert time.monotonic() - began < 0.5 * len(ignored) + 3


@pytest.mark.parametrize("leader_exits", [False, True])
def test_stop_ends_the_whole_process_group(tmp_path: Path, leader_exits: bool) -> None:
    code = (
        "import subprocess, sys, time, os\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print('grandchild-pid', child.pid, flush=True)\n"
        + ("os._exit(0)\n" if leader_exits else "time.sleep(60)\n")
    )
    record = start_python(tmp_path, "family", code)
    child = int(wait_for_line(record, "grandchild-pid ").split()[1])
    if leader_exits:
        deadline = time.monotonic() + 5
        while process.is_alive(record):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert alive(child)

    assert process.stop(tmp_path, "family", grace=1.0) == "SIGTERM"
    assert not alive(child)
    assert not alive(record.pid)


def test_stale_pid_file_is_replaced_and_a_healthy_process_reused(tmp_path: Path) -> None:
    dead = start_python(tmp_path, "web", "pass")
    deadline = time.monotonic() + 5
    while process.is_alive(dead):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    port = free_port()
    argv = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}/"

    def ensure() -> tuple[process.ProcessRecord, bool]:
        return process.ensure_started(
            tmp_path, "web", argv, env=dict(os.environ), cwd=tmp_path,
            healthy=lambda: process.http_ok(url), timeout=20, url=url,
        )  # fmt: skip

    first, started = ensure()
    assert started and first.pid != dead.pid
    again, started_again = ensure()
    assert not started_again and again == first
    assert process.stop(tmp_path, "web") == "SIGTERM"


def test_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    # A pid file naming this very test process, but with another create time: a recycled pid.
    record = process.ProcessRecord(
        name="old", pid=os.getpid(), create_time=1.0, argv=["gone"],
        started_at="2020-01-01T00:00:00+00:00", log=str(tmp_path / "old.log"),
    )  # fmt: skip
    process._write_record(tmp_path, record)

    assert not process.is_alive(record)
    assert process.stop(tmp_path, "old") is None
    assert not process.pid_file(tmp_path, "old").exists()


@pytest.mark.parametrize(
    ("code", "timeout", "expected"),
    [
        ("import sys; print('cannot bind: config broken', flush=True); sys.exit(3)", 10,
         ["exited with code 3", "cannot bind: config broken"]),
        ("import time; print('still booting', flush=True); time.sleep(60)", 1.0,
         ["not ready after 1 s", "still booting"]),
    ],
)  # fmt: skip
def test_failed_start_names_the_log_and_leaves_nothing_running(
    tmp_path: Path, code: str, timeout: float, expected: list[str]
) -> None:
    with pytest.raises(ops.OpsError) as failure:
        process.ensure_started(
            tmp_path, "broken", [PY, "-c", code], env=dict(os.environ), cwd=tmp_path,
            healthy=lambda: False, timeout=timeout,
        )  # fmt: skip

    message = str(failure.value)
    for text in [*expected, str(process.log_file(tmp_path, "broken"))]:
        assert text in message
    record = process.read_record(tmp_path, "broken")
    assert record is not None and not process.is_alive(record)


def test_a_taken_port_is_reported_with_the_setting_that_moves_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(home=tmp_path, app_port=taken.getsockname()[1])
        with pytest.raises(ops.OpsError, match="LOOPLINE_APP_PORT"):
            ops.ensure_component(settings, ops.APP)
    assert process.read_record(settings.run_dir, ops.APP) is None


def test_children_rebuild_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        home=tmp_path / "h", api_port=9001, work_pool="p1", database_url="sqlite://"
    )
    env = child_env(settings)
    for name in [k for k in os.environ if k.startswith("LOOPLINE_")]:
        monkeypatch.delenv(name)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)

    assert Settings().model_dump() == settings.model_dump()
    assert env["PREFECT_API_URL"] == settings.prefect_api_url
    assert env["PREFECT_HOME"] == str(settings.home / "prefect")


def test_down_does_not_wait_for_a_hanging_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelock import FileLock

    from loopline.ops import stack as stack_module

    settings = Settings(home=tmp_path)
    record = start_python(settings.run_dir, ops.APP, "import time; time.sleep(60)")
    monkeypatch.setattr(stack_module, "DOWN_LOCK_TIMEOUT", 0.2)
    said: list[str] = []

    with FileLock(settings.run_dir / "ops.lock"):  # as an `up` waiting for its pipeline
        assert ops.down(settings, progress=said.append) == [ops.APP]

    assert "another `loopline up` is running" in said[0]
    assert not alive(record.pid)


# --- a real Prefect server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    throwaway_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, ops.UpReport]]:
    """`up` once on the throwaway project; `down` afterwards whatever happened."""
    settings = Settings(
        home=tmp_path_factory.mktemp("home"),
        project_dir=throwaway_project,
        prefect_port=free_port(),
        api_port=free_port(),
        app_port=free_port(),
        work_pool="ops-test",
    )
    try:
        report = ops.up(
            settings, demo=False, run_pipeline=True, with_api=False, with_app=True,
            days=3, customers=4, pipeline_timeout=120,
        )  # fmt: skip
        print(f"\nfirst up timings (s): {report.timings}")
        yield settings, report
    finally:
        ops.down(settings)


@pytest.mark.e2e
def test_up_runs_the_pipeline_deployment_to_completed(
    stack: tuple[Settings, ops.UpReport], throwaway_project: Path
) -> None:
    settings, report = stack

    assert report.pipeline is not None and report.pipeline.state_type == "COMPLETED"
    assert report.started == [ops.SERVER, ops.WORKER, ops.APP]
    assert report.deployed
    assert set(report.urls) == {ops.SERVER, ops.APP}
    seen = json.loads((throwaway_project / "pipeline-ran.json").read_text())
    assert seen["cwd"] == str(throwaway_project)  # the pull step moved into the checkout
    assert seen["home"] == str(settings.home)
    assert seen["prefect_home"] == str(settings.home / "prefect")
    assert seen["flow_run_id"] == report.pipeline.id
    assert seen["sum"] == 3 + 4  # up's parameters reached the flow
    assert (settings.home / "prefect" / "prefect.db").is_file()


@pytest.mark.e2e
def test_second_up_reuses_everything_and_is_fast(stack: tuple[Settings, ops.UpReport]) -> None:
    settings, _ = stack

    began = time.monotonic()
    again = ops.up(settings, demo=False, run_pipeline=False, with_api=False, with_app=True)
    elapsed = time.monotonic() - began

    assert again.started == []
    assert again.reused == [ops.SERVER, ops.WORKER, ops.APP]
    assert not again.deployed and again.pipeline is None
    assert elapsed < 3.0
    assert not ops.champion_exists(settings)  # so `run_pipeline=None` would run it


@pytest.mark.e2e
def test_status_reports_each_component(stack: tuple[Settings, ops.UpReport]) -> None:
    settings, _ = stack

    states = {row.name: row.state for row in ops.status(settings)}

    assert states == {
        ops.SERVER: "running",
        ops.WORKER: "running",
        ops.API: "stopped",
        ops.APP: "running",
    }
    assert "Check out the dashboard at" in ops.tail_log(settings, ops.SERVER, 200)


@pytest.mark.e2e
def test_a_failed_run_raises_with_its_state_and_traceback(
    stack: tuple[Settings, ops.UpReport],
) -> None:
    settings, _ = stack

    began = time.monotonic()
    with pytest.raises(ops.FlowRunFailed) as failure:
        ops.run_deployment(settings, "boom", "loopline", parameters={"reason": "from-test"})
    print(f"\nfailing deployment run: {time.monotonic() - began:.1f} s")

    assert failure.value.result.state_type == "FAILED"
    message = str(failure.value)
    for text in ["ended Failed", "ValueError: boom: from-test", "prefect-worker.log"]:
        assert text in message


@pytest.mark.e2e
def test_the_real_flows_deploy_with_their_pull_step_and_schedule(
    stack: tuple[Settings, ops.UpReport],
) -> None:
    # Another pool, which no worker polls: the scheduled monitor never runs here.
    settings = stack[0].model_copy(update={"project_dir": PROJECT_ROOT, "work_pool": "ops-real"})
    ops.ensure_work_pool(settings)

    began = time.monotonic()
    assert ops.deploy(settings)
    print(f"\nreal flows/prefect.yaml deploy: {time.monotonic() - began:.1f} s")
    with PrefectAPI(settings.prefect_api_url) as api:
        deployed = {d["entrypoint"]: d for d in api.deployments_in_pool("ops-real")}

    assert set(deployed) == {
        f"flows/{name}"
        for name in [
            "pipeline.py:pipeline_flow", "ingest.py:ingest_flow", "features.py:features_flow",
            "train.py:train_flow", "deploy.py:promote_flow", "retrain.py:retrain_flow",
            "monitor.py:monitor_flow", "tune.py:tune_flow", "deploy.py:rollback_flow",
            "score.py:score_flow",
        ]
    }  # fmt: skip
    for deployment in deployed.values():
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
        ]
    monitor = deployed["flows/monitor.py:monitor_flow"]
    assert [(s["schedule"]["cron"], s["active"]) for s in monitor["schedules"]] == [
        ("7 * * * *", True)
    ]
    pipeline_params = deployed["flows/pipeline.py:pipeline_flow"]["parameter_openapi_schema"]
    assert {"use_case", "days", "customers", "seed"} <= set(pipeline_params["properties"])
    assert not ops.deploy(settings)  # unchanged: skipped


@pytest.mark.e2e
def test_down_stops_the_worker_before_the_server_and_leaves_nothing(
    stack: tuple[Settings, ops.UpReport],
) -> None:
    settings, _ = stack
    records = [process.read_record(settings.run_dir, name) for name in ops.COMPONENTS]
    groups = {r.pid for r in records if r is not None}

    stopped = ops.down(settings)

    assert stopped == [ops.APP, ops.WORKER, ops.SERVER]
    left = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    assert left == []
    assert {row.state for row in ops.status(settings)} == {"stopped"}
    assert not list(settings.run_dir.glob("*.pid"))

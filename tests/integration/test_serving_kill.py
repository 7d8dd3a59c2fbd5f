"""SIGKILL of the prediction server under load loses no acknowledged prediction.

A real uvicorn process serves a registered model (Feast stubbed as in test_serving.py); four
clients send predictions with their own request ids; the server is killed with SIGKILL in the
middle; a new server process starts on the same data home (its prediction log replays the
write-ahead spool) and stops cleanly. Every request that was answered 200 is then in the Delta
table exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
from test_serving import VALID, make_home

from loopline.serving.prediction_log import read_prediction_log

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).parent


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOOPLINE_HOME": str(home), "LOOPLINE_FEATURE_REPO": str(home / "none")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "kill_app:create", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=HERE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during startup"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["champion"] == 1:
                return process
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not serve a champion within 60 s")


def test_sigkill_under_load_loses_no_acknowledged_prediction(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    home.promote(1)
    home.store.dispose()
    port = _port()
    server = _start(home.settings.home, port)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            i = 0
            while not stop.is_set():
                request_id = f"kill-{n}-{i}"
                i += 1
                try:
                    r = http.post("/predict", json={**VALID, "request_id": request_id})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked.append(request_id)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 300:
            assert time.monotonic() < deadline, f"only {len(acked)} answers in 30 s"
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=10)
        if server.poll() is None:
            server.kill()
    answered = list(acked)

    again = _start(home.settings.home, port)  # replays the spool on open
    again.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM is a clean exit.
    assert again.wait(timeout=30) in (0, -signal.SIGTERM)
    table = read_prediction_log(home.settings.prediction_log_dir, include_spool=False)
    logged = table.filter(pl.col("request_id").str.starts_with("kill-"))
    counts = logged.group_by("request_id").len()
    assert counts["len"].max() == 1, "a prediction was logged twice"
    missing = set(answered) - set(logged["request_id"].to_list())
    assert not missing, f"{len(missing)} of {len(answered)} acknowledged predictions lost"
    assert len(answered) >= 300

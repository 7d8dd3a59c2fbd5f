"""The processes `loopline up` runs: how to start each, its environment, URL and health check.

Every child gets the same environment: the caller's, plus every `LOOPLINE_*` setting (so a
`Settings()` built inside a child equals the parent's), plus Prefect's home under the data home
(its SQLite database lives with the rest of the installation) and the server's API URL.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loopline.ops.process import ProcessRecord, http_ok
from loopline.settings import Settings

SERVER = "prefect-server"
WORKER = "prefect-worker"
API = "api"
APP = "app"
# Start order; `down` stops in reverse, so the worker always stops before the server.
COMPONENTS = (SERVER, WORKER, API, APP)

# A worker polls its pool this often (Prefect's default is 10 s): a run starts within ~2 s.
WORKER_QUERY_SECONDS = 2
# Flow runs one worker executes at once (each is a process; the stages are CPU-bound).
WORKER_CONCURRENCY = 2


def prefect_home(settings: Settings) -> Path:
    """PREFECT_HOME of the platform: under the data home, so its database lives there too."""
    return settings.home / "prefect"


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the `LOOPLINE_*` variable that reproduces it (unset ones left out)."""
    prefix = str(settings.model_config.get("env_prefix", "LOOPLINE_"))
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        env[f"{prefix}{name.upper()}"] = text
    return env | settings.feast_env()


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process the platform starts."""
    env = dict(os.environ)
    env.update(settings_env(settings))
    env.update(
        {
            "PREFECT_HOME": str(prefect_home(settings)),
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def _local(host: str) -> str:
    """Where to connect to reach a server bound to `host` (a wildcard means this machine)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url(host: str, port: int) -> str:
    host = _local(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def worker_name(settings: Settings) -> str:
    """The name this machine's worker registers under (unique per host on a shared pool)."""
    return f"{settings.work_pool}@{socket.gethostname()}"


@dataclass(frozen=True)
class Component:
    """One process of the platform.

    Attributes:
        name: pid/log file name and the name users see.
        title: human name for messages.
        argv: the command line.
        url: where users reach it (None for the worker).
        health_url: GET answering 2xx when it is ready (None: see `ready`).
        port: TCP port it binds (None for the worker).
        port_setting: the environment variable that moves the port.
        start_timeout: seconds to wait for it to become healthy.
        stop_grace: seconds between escalating signals when stopping.
        extra_env: environment added for this component only.
    """

    name: str
    title: str
    argv: list[str]
    url: str | None
    health_url: str | None
    port: int | None
    port_setting: str
    start_timeout: float
    stop_grace: float
    extra_env: dict[str, str]

    def healthy(self, settings: Settings, record: ProcessRecord | None = None) -> bool:
        """True if the component answers as ready."""
        if self.health_url is not None:
            return http_ok(self.health_url)
        return _worker_online(settings, record)


def _worker_online(settings: Settings, record: ProcessRecord | None) -> bool:
    from loopline.ops.prefect_api import PrefectAPI, PrefectAPIError

    since = datetime.fromisoformat(record.started_at) if record is not None else None
    try:
        with PrefectAPI(settings.prefect_api_url, timeout=3.0) as api:
            workers = api.online_workers(settings.work_pool, since=since)
    except PrefectAPIError:
        return False
    return any(w.get("name") == worker_name(settings) for w in workers)


def component(settings: Settings, name: str) -> Component:
    """The definition of component `name` under these settings.

    Raises:
        KeyError: unknown component (the message lists the known ones).
    """
    builders: dict[str, Callable[[Settings], Component]] = {
        SERVER: _server,
        WORKER: _worker,
        API: _api,
        APP: _app,
    }
    if name not in builders:
        raise KeyError(f"unknown component '{name}'; components: {', '.join(COMPONENTS)}")
    return builders[name](settings)


def _server(settings: Settings) -> Component:
    url = _url(settings.host, settings.prefect_port)
    return Component(
        name=SERVER,
        title="Prefect server",
        argv=[sys.executable, "-m", "prefect", "server", "start",
              "--host", settings.host, "--port", str(settings.prefect_port)],
        url=url,
        health_url=f"{url}/api/health",
        port=settings.prefect_port,
        port_setting="LOOPLINE_PREFECT_PORT",
        start_timeout=120.0,
        stop_grace=10.0,
        extra_env={},
    )  # fmt: skip


def _worker(settings: Settings) -> Component:
    return Component(
        name=WORKER,
        title="Prefect worker",
        argv=[sys.executable, "-m", "prefect", "worker", "start",
              "--pool", settings.work_pool, "--type", "process",
              "--name", worker_name(settings), "--limit", str(WORKER_CONCURRENCY),
              "--install-policy", "never"],
        url=None,
        health_url=None,
        port=None,
        port_setting="",
        start_timeout=60.0,
        # It ignores SIGTERM while it waits for its runs; its second signal is a SIGKILL.
        stop_grace=3.0,
        extra_env={"PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS)},
    )  # fmt: skip


def _api(settings: Settings) -> Component:
    url = _url(settings.host, settings.api_port)
    return Component(
        name=API,
        title="prediction API",
        argv=[sys.executable, "-m", "uvicorn", "loopline.serving.app:create_app", "--factory",
              "--host", settings.host, "--port", str(settings.api_port)],
        url=url,
        health_url=f"{url}/health",
        port=settings.api_port,
        port_setting="LOOPLINE_API_PORT",
        start_timeout=90.0,
        stop_grace=5.0,
        extra_env={},
    )  # fmt: skip


def _app(settings: Settings) -> Component:
    url = _url(settings.host, settings.app_port)
    return Component(
        name=APP,
        title="control panel",
        argv=[sys.executable, "-m", "streamlit", "run",
              str(settings.project_dir / "app" / "main.py"),
              "--server.headless", "true", "--server.port", str(settings.app_port),
              "--server.address", settings.host, "--browser.gatherUsageStats", "false"],
        url=url,
        health_url=f"{url}/_stcore/health",
        port=settings.app_port,
        port_setting="LOOPLINE_APP_PORT",
        start_timeout=90.0,
        stop_grace=5.0,
        extra_env={},
    )  # fmt: skip

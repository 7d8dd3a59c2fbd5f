"""`loopline up | down | status | logs`: the platform's processes on one machine.

`up` starts the Prefect server, makes sure the work pool exists, starts a worker, deploys
`flows/prefect.yaml`, writes the demo data, runs the `pipeline` deployment and waits for it,
then starts the prediction API and the control panel. Every step is idempotent: a second `up`
reuses what runs, skips an unchanged deploy and (by default) the pipeline once a champion
exists, so it returns in a few seconds. A lock file serializes concurrent `up` calls; `down`
waits for it only briefly, so it can always stop a hanging `up`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock, Timeout

from loopline.ops import process
from loopline.ops.components import (
    API,
    APP,
    COMPONENTS,
    SERVER,
    WORKER,
    Component,
    child_env,
    component,
)
from loopline.ops.prefect_api import FlowRunResult, PrefectAPI
from loopline.ops.process import OpsError
from loopline.settings import Settings

PIPELINE_DEPLOYMENT = ("pipeline", "loopline")
DEPLOY_TIMEOUT = 300.0
CLI_TIMEOUT = 120.0
LOCK_TIMEOUT = 600.0
DOWN_LOCK_TIMEOUT = 10.0

Progress = Callable[[str], None]


class FlowRunFailed(OpsError):
    """A flow run ended in a state other than Completed; carries the result."""

    def __init__(self, message: str, result: FlowRunResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ComponentStatus:
    """Where one platform process stands.

    Attributes:
        name: component name (see `COMPONENTS`).
        state: running (and healthy), unhealthy (running, not answering), or stopped.
        pid: its process id while running.
        url: where users reach it.
        log: its log file.
        detail: why it is unhealthy or stopped, when there is something to say.
    """

    name: str
    state: Literal["running", "unhealthy", "stopped"]
    pid: int | None
    url: str | None
    log: Path
    detail: str = ""


@dataclass
class UpReport:
    """What `up` did.

    Attributes:
        urls: component name -> URL (Prefect UI, API, control panel).
        started: components started by this call.
        reused: components that were already running and healthy.
        deployed: True if `prefect deploy` ran (False: deployments were current).
        demo_data_written: True if the demo's raw files were written.
        pipeline: the pipeline run, if one ran.
        timings: step -> seconds.
    """

    urls: dict[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    deployed: bool = False
    demo_data_written: bool = False
    pipeline: FlowRunResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _lock(settings: Settings) -> FileLock:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(settings.run_dir / "ops.lock", timeout=LOCK_TIMEOUT)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _locked(settings: Settings) -> FileLock:
    lock = _lock(settings)
    try:
        lock.acquire()
    except Timeout as exc:
        raise OpsError(
            f"another `loopline up/down` holds {lock.lock_file} for over {LOCK_TIMEOUT:.0f} s"
        ) from exc
    return lock


# --- single components -----------------------------------------------------------------


def ensure_component(settings: Settings, name: str) -> tuple[process.ProcessRecord, bool]:
    """Start component `name` unless it runs and is healthy; wait until it is.

    Returns:
        (record, started): started is False when a running process was reused.

    Raises:
        OpsError: it could not start (the message quotes its log), or its port is taken.
    """
    spec = component(settings, name)

    def before_start() -> None:
        if spec.port is not None:
            process.require_free_port(
                settings.host, spec.port, owner=spec.title, setting=spec.port_setting
            )

    def healthy() -> bool:
        return spec.healthy(settings, process.read_record(settings.run_dir, name))

    return process.ensure_started(
        settings.run_dir,
        name,
        spec.argv,
        env=child_env(settings, spec.extra_env),
        cwd=settings.project_dir,
        healthy=healthy,
        timeout=spec.start_timeout,
        url=spec.url,
        before_start=before_start,
        what=spec.health_url or f"worker online in pool '{settings.work_pool}'",
    )


def stop_component(settings: Settings, name: str) -> str | None:
    """Stop component `name`; returns the signal that ended it, None if it was not running."""
    spec = component(settings, name)
    return process.stop(settings.run_dir, name, grace=spec.stop_grace)


def _prefect_cli(
    settings: Settings, args: list[str], *, log_name: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run the Prefect CLI with the platform's env; its output is appended to
    `<run_dir>/<log_name>.log`."""
    argv = [sys.executable, "-m", "prefect", "--no-prompt", *args]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=settings.project_dir,
            env=child_env(settings),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OpsError(f"`prefect {' '.join(args)}` did not finish in {timeout:.0f} s") from exc
    log = process.log_file(settings.run_dir, log_name)
    with log.open("a") as out:
        out.write(f"\n=== prefect {' '.join(args)} (exit {done.returncode})\n")
        out.write(done.stdout + done.stderr)
    return done


def ensure_work_pool(settings: Settings) -> bool:
    """Create the process work pool `settings.work_pool` unless it exists; True if created.

    Raises:
        OpsError: the pool could not be created (the message quotes the CLI's output).
    """
    with PrefectAPI(settings.prefect_api_url) as api:
        if api.work_pool(settings.work_pool) is not None:
            return False
        done = _prefect_cli(
            settings,
            ["work-pool", "create", settings.work_pool, "--type", "process"],
            log_name="prefect-cli",
            timeout=CLI_TIMEOUT,
        )
        if api.work_pool(settings.work_pool) is None:
            raise OpsError(
                f"could not create work pool '{settings.work_pool}' (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-2000:]}"
            )
    return done.returncode == 0


# --- deployments -----------------------------------------------------------------------


def prefect_file(settings: Settings) -> Path:
    """The deployments file of the checkout."""
    return settings.project_dir / "flows" / "prefect.yaml"


def _deploy_source(settings: Settings) -> tuple[Path, dict[str, Any]]:
    """The prefect.yaml to deploy: the checkout's, or a copy whose deployments use
    `settings.work_pool` when that differs from the pool the file names."""
    path = prefect_file(settings)
    if not path.is_file():
        raise OpsError(f"no deployments file at {path} (settings.project_dir is the checkout)")
    document = yaml.safe_load(path.read_text())
    deployments = document.get("deployments") or []
    pools = {(d.get("work_pool") or {}).get("name") for d in deployments}
    if pools == {settings.work_pool}:
        return path, document
    for deployment in deployments:
        pool = deployment.get("work_pool") or {}
        deployment["work_pool"] = {**pool, "name": settings.work_pool}
    rendered = settings.run_dir / "prefect.yaml"
    rendered.write_text(yaml.safe_dump(document, sort_keys=False))
    return rendered, document


def _deploy_fingerprint(settings: Settings, source: Path) -> str:
    digest = hashlib.sha256()
    digest.update(
        f"{settings.prefect_api_url}|{settings.work_pool}|{settings.project_dir}".encode()
    )
    flows_dir = prefect_file(settings).parent
    for path in [source, *sorted(flows_dir.glob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def deploy(settings: Settings, *, force: bool = False) -> bool:
    """Apply every deployment of `flows/prefect.yaml`, unless nothing changed since the last
    deploy to this server and all of them exist there. Returns True if it deployed.

    Runs `prefect --no-prompt deploy --prefect-file flows/prefect.yaml --all` from the
    checkout, without a terminal; its output goes to `<run_dir>/deploy.log`.

    Raises:
        OpsError: the deploy failed (the message quotes its output) or left deployments out.
    """
    source, document = _deploy_source(settings)
    entrypoints = {d["entrypoint"] for d in document.get("deployments") or []}
    fingerprint = _deploy_fingerprint(settings, source)
    stamp = settings.run_dir / "deploy.sha256"
    with PrefectAPI(settings.prefect_api_url) as api:

        def present() -> set[str]:
            return {d.get("entrypoint") for d in api.deployments_in_pool(settings.work_pool)}

        current = not force and stamp.is_file() and stamp.read_text() == fingerprint
        if current and entrypoints <= present():
            return False
        stamp.unlink(missing_ok=True)
        done = _prefect_cli(
            settings,
            ["deploy", "--prefect-file", str(source), "--all"],
            log_name="deploy",
            timeout=DEPLOY_TIMEOUT,
        )
        missing = entrypoints - present()
    if done.returncode != 0 or missing:
        why = f"missing: {sorted(missing)}; " if missing else ""
        log = process.log_file(settings.run_dir, "deploy")
        raise OpsError(
            f"prefect deploy failed (exit {done.returncode}; {why}log {log}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    stamp.write_text(fingerprint)
    return True


def run_deployment(
    settings: Settings,
    flow_name: str,
    deployment_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    timeout: float = 3600.0,
    progress: Progress | None = None,
) -> FlowRunResult:
    """Run a deployment now and wait for it to end.

    Raises:
        FlowRunFailed: it ended Failed, Crashed or Cancelled; the message has its state
            message, its error logs, and where to look.
        OpsError: the deployment does not exist, the worker died while waiting, or it did not
            end within `timeout` seconds (it keeps running).
    """
    ref = f"{flow_name}/{deployment_name}"
    with PrefectAPI(settings.prefect_api_url) as api:
        deployment = api.deployment(flow_name, deployment_name)
        if deployment is None:
            raise OpsError(f"deployment {ref} does not exist on {api.ui_url}: deploy first")
        run = api.create_flow_run(deployment["id"], parameters)
        _say(progress, f"{ref}: flow run {run['name']} ({api.flow_run_url(run['id'])})")

        def worker_alive() -> None:
            record = process.read_record(settings.run_dir, WORKER)
            if record is not None and not process.is_alive(record):
                raise OpsError(f"the worker died while {ref} was running; see {record.log}")

        result = api.wait_for_flow_run(
            run["id"],
            timeout=timeout,
            on_state=lambda state: _say(progress, f"{ref}: {state}"),
            check=worker_alive,
        )
        if result.ok:
            return result
        if result.state_type not in {"FAILED", "CRASHED", "CANCELLED"}:
            raise OpsError(
                f"{ref} run {result.name} is still {result.state_name} after {timeout:.0f} s; "
                f"it keeps running: {result.url}"
            )
        # The first error log holds the flow's own traceback; the engine repeats it after.
        errors = api.flow_run_logs(run["id"], min_level=40, limit=5)[:1] or api.flow_run_logs(
            run["id"], limit=20
        )
    worker_log = process.log_file(settings.run_dir, WORKER)
    logs = "\n".join(errors)[-4000:]
    raise FlowRunFailed(
        f"{ref} run {result.name} ended {result.state_name}: {result.message}\n"
        f"--- its error logs ---\n{logs}\n"
        f"(run: {result.url}; worker log: {worker_log})",
        result,
    )


# --- the whole platform ------------------------------------------------------------------


def champion_exists(settings: Settings) -> bool:
    """True if the configured use case's model has a champion in the metadata store."""
    from loopline.registry.models import CHAMPION, get_alias
    from loopline.spec import load_spec
    from loopline.store import Store

    spec = load_spec(settings.use_case)
    store = Store.open(settings)
    try:
        with store.reader() as session:
            return get_alias(session, spec.model_name, CHAMPION) is not None
    finally:
        store.engine.dispose()


def _timed(report: UpReport, step: str, began: float) -> None:
    report.timings[step] = round(time.monotonic() - began, 2)


def _bring_up(
    settings: Settings,
    name: str,
    report: UpReport,
    progress: Progress | None,
    *,
    launched: frozenset[str] = frozenset(),
) -> None:
    """Ensure one component runs; `launched` names those this `up` already started."""
    spec: Component = component(settings, name)
    began = time.monotonic()
    where = f" on {spec.url}" if spec.url else ""
    _say(progress, f"{spec.title}: {'booting' if name in launched else 'starting'}{where}")
    _, started = ensure_component(settings, name)
    started = started or name in launched
    (report.started if started else report.reused).append(name)
    _timed(report, name, began)
    _say(progress, f"{spec.title}: {'ready' if started else 'already running'}")
    if spec.url is not None:
        report.urls[name] = spec.url


def up(
    settings: Settings,
    *,
    days: int = 90,
    customers: int = 2000,
    seed: int = 7,
    demo: bool = True,
    run_pipeline: bool | None = None,
    redeploy: bool = False,
    with_api: bool = True,
    with_app: bool = True,
    pipeline_timeout: float = 3600.0,
    progress: Progress | None = None,
) -> UpReport:
    """Bring the platform up; safe to call again (it reuses what runs).

    Args:
        settings: the installation (data home, ports, work pool, checkout).
        days, customers, seed: size and seed of the demo data written when there is none.
        demo: write the fraud demo's raw files if absent (off for real data).
        run_pipeline: True runs the pipeline deployment, False never; None (default) runs it
            only when the use case has no champion yet.
        redeploy: deploy even if flows/ did not change since the last deploy.
        with_api, with_app: start the prediction API / the control panel.
        pipeline_timeout: seconds to wait for the pipeline run.
        progress: called with one line per step (e.g. a rich status's `update`).

    Raises:
        OpsError: a component failed to start (the message quotes its log).
        FlowRunFailed: the pipeline run failed (the message has its state and error logs);
            the server and worker stay up so the run can be inspected.
    """
    report = UpReport()
    began = time.monotonic()
    settings.home.mkdir(parents=True, exist_ok=True)
    with _locked(settings):
        # The demo data is written while the server boots: both take seconds.
        demo_result: dict[str, Any] = {}
        demo_thread = None
        if demo:
            demo_thread = threading.Thread(
                target=_write_demo, args=(settings, days, customers, seed, demo_result)
            )
            demo_thread.start()
        try:
            _bring_up(settings, SERVER, report, progress)
        finally:
            if demo_thread is not None:
                demo_thread.join()
        if "error" in demo_result:
            raise demo_result["error"]
        report.demo_data_written = bool(demo_result.get("written"))

        step = time.monotonic()
        if ensure_work_pool(settings):
            _say(progress, f"work pool '{settings.work_pool}' created")
        _timed(report, "work_pool", step)

        # The worker starts now and registers while the deploy runs.
        launched = [WORKER] if _launch(settings, WORKER) else []

        step = time.monotonic()
        _say(progress, "deployments: checking flows/prefect.yaml")
        report.deployed = deploy(settings, force=redeploy)
        _timed(report, "deploy", step)
        _say(progress, "deployments: " + ("applied" if report.deployed else "unchanged"))

        _bring_up(settings, WORKER, report, progress, launched=frozenset(launched))

        should_run = run_pipeline
        if should_run is None:
            should_run = not champion_exists(settings)
        # The API and the panel boot while the pipeline runs; a promotion reaches the API
        # without a restart.
        extra = [name for name, wanted in ((API, with_api), (APP, with_app)) if wanted]
        if should_run:
            step = time.monotonic()
            _say(progress, "pipeline: running")
            starter = _start_in_background(settings, extra, launched)
            try:
                report.pipeline = run_deployment(
                    settings,
                    *PIPELINE_DEPLOYMENT,
                    parameters={
                        "use_case": settings.use_case,
                        "days": days,
                        "customers": customers,
                        "seed": seed,
                        "demo": demo,
                    },
                    timeout=pipeline_timeout,
                    progress=progress,
                )
            finally:
                starter.join()
            _timed(report, "pipeline", step)
        for name in extra:
            _bring_up(settings, name, report, progress, launched=frozenset(launched))
    report.timings["total"] = round(time.monotonic() - began, 2)
    return report


def _write_demo(
    settings: Settings, days: int, customers: int, seed: int, out: dict[str, Any]
) -> None:
    try:
        from loopline.stages import ensure_demo_data

        out["written"] = ensure_demo_data(settings, days=days, customers=customers, seed=seed)
    except Exception as exc:  # re-raised by `up` in the calling thread
        out["error"] = exc


def _launch(settings: Settings, name: str) -> bool:
    """Start component `name` without waiting for it, unless it runs; True if started.

    `_bring_up` waits for it later (a process this young gets its whole start timeout). A
    taken port or a failed start is left for `_bring_up` to report.
    """
    record = process.read_record(settings.run_dir, name)
    if record is not None and process.is_alive(record):
        return False
    spec = component(settings, name)
    if spec.port is not None and process.port_in_use(settings.host, spec.port):
        return False
    process.pid_file(settings.run_dir, name).unlink(missing_ok=True)
    try:
        process.start(
            settings.run_dir,
            name,
            spec.argv,
            env=child_env(settings, spec.extra_env),
            cwd=settings.project_dir,
            url=spec.url,
        )
    except OpsError:
        return False
    return True


def _start_in_background(
    settings: Settings, names: list[str], launched: list[str]
) -> threading.Thread:
    """Launch components in a thread, appending those it started to `launched`."""

    def run() -> None:
        launched.extend(name for name in names if _launch(settings, name))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def down(settings: Settings, *, progress: Progress | None = None) -> list[str]:
    """Stop every platform process, the worker before the server.

    Returns:
        The components that were running and are now stopped.
    """
    stopped: list[str] = []
    lock = _lock(settings)
    try:
        lock.acquire(timeout=DOWN_LOCK_TIMEOUT)
    except Timeout:
        # `down` is the way out of an `up` that hangs (e.g. waiting for a pipeline): it
        # proceeds, and that `up` fails, saying its worker died.
        _say(progress, "another `loopline up` is running; stopping everything anyway")
    try:
        for name in reversed(COMPONENTS):
            spec = component(settings, name)
            ended = stop_component(settings, name)
            if ended is not None:
                stopped.append(name)
                _say(progress, f"{spec.title}: stopped ({ended})")
    finally:
        if lock.is_locked:
            lock.release()
    return stopped


def status(settings: Settings) -> list[ComponentStatus]:
    """Where each platform process stands (no side effects beyond health requests)."""
    rows: list[ComponentStatus] = []
    server_up = False
    for name in COMPONENTS:
        spec = component(settings, name)
        record = process.read_record(settings.run_dir, name)
        log = process.log_file(settings.run_dir, name)
        if record is None or not process.is_alive(record):
            detail = "stale pid file" if record is not None else ""
            rows.append(ComponentStatus(name, "stopped", None, spec.url, log, detail))
            continue
        if name == WORKER and not server_up:
            healthy, detail = False, "Prefect server not reachable"
        else:
            healthy = spec.healthy(settings, record)
            detail = "" if healthy else f"not answering {spec.health_url or 'in its pool'}"
        server_up = server_up or (name == SERVER and healthy)
        state: Literal["running", "unhealthy"] = "running" if healthy else "unhealthy"
        rows.append(ComponentStatus(name, state, record.pid, spec.url, log, detail))
    return rows


def log_path(settings: Settings, name: str) -> Path:
    """The log file of component `name` (also: 'deploy', 'prefect-cli').

    Raises:
        OpsError: unknown name (the message lists the known ones).
    """
    known = (*COMPONENTS, "deploy", "prefect-cli")
    if name not in known:
        raise OpsError(f"unknown log '{name}'; logs: {', '.join(known)}")
    return process.log_file(settings.run_dir, name)


def tail_log(settings: Settings, name: str, lines: int = 50) -> str:
    """The last `lines` lines of component `name`'s log ('' if it has none yet)."""
    return process.tail(log_path(settings, name), lines)

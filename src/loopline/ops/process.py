"""Detached processes with pid files: start, wait until healthy, stop with escalation.

A managed process runs in its own session, so its process group id is its pid and everything
it spawns (uvicorn workers, flow-run subprocesses) can be signalled at once. Its stdout and
stderr go to `<run_dir>/<name>.log`; `<run_dir>/<name>.pid` is a small JSON record (pid,
the process's create time, argv, URL). The create time guards against a recycled pid: a record
whose pid now belongs to another process is stale, never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

LOG_ROTATE_BYTES = 5_000_000
_POLL_SECONDS = 0.2
# Popen handles of the processes this interpreter started: kept so they can be reaped (no
# zombies while a test or a long-lived caller runs) and so their exit code can be reported.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class OpsError(RuntimeError):
    """A platform process could not be started, reached or stopped; the message says where
    to look (usually a log file)."""


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about a managed process."""

    name: str
    pid: int
    create_time: float
    argv: list[str]
    started_at: str
    log: str
    url: str | None = None


def pid_file(run_dir: Path, name: str) -> Path:
    """Path of the pid file of process `name`."""
    return run_dir / f"{name}.pid"


def log_file(run_dir: Path, name: str) -> Path:
    """Path of the log file of process `name` (stdout and stderr)."""
    return run_dir / f"{name}.log"


def read_record(run_dir: Path, name: str) -> ProcessRecord | None:
    """The pid-file record of `name`, or None if there is none (or it is unreadable)."""
    path = pid_file(run_dir, name)
    try:
        return ProcessRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # A torn or foreign file: treat it like a stale record so a start replaces it.
        path.unlink(missing_ok=True)
        return None


def _write_record(run_dir: Path, record: ProcessRecord) -> None:
    path = pid_file(run_dir, record.name)
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    tmp.replace(path)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        child.poll()
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_live(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def is_alive(record: ProcessRecord) -> bool:
    """True if the record's process is running (and is the same process, not a reused pid)."""
    _reap(record.pid)
    try:
        proc = psutil.Process(record.pid)
        same = abs(proc.create_time() - record.create_time) < 0.5
    except psutil.NoSuchProcess:
        return False
    return same and _is_live(proc)


def exit_code(pid: int) -> int | None:
    """Exit code of a process this interpreter started, once it ended (negative: signal)."""
    child = _CHILDREN.get(pid)
    return child.poll() if child is not None else None


def _rotate(log: Path) -> None:
    if log.exists() and log.stat().st_size > LOG_ROTATE_BYTES:
        log.replace(log.with_suffix(".log.1"))


def start(
    run_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    url: str | None = None,
) -> ProcessRecord:
    """Start `argv` detached (new session, stdin closed, output appended to its log file) and
    write its pid file. Does not check for an existing process: see `ensure_started`.

    Raises:
        OpsError: the program could not be executed.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log_file(run_dir, name)
    _rotate(log)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with log.open("ab") as out:
        out.write(f"\n=== {started_at} {name}: {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise OpsError(f"cannot start {name} ({shlex.join(argv)}): {exc}") from exc
    _CHILDREN[child.pid] = child
    try:
        create_time = psutil.Process(child.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0  # gone already: the health wait reports it with the log
    record = ProcessRecord(
        name=name,
        pid=child.pid,
        create_time=create_time,
        argv=list(argv),
        started_at=started_at,
        log=str(log),
        url=url,
    )
    _write_record(run_dir, record)
    return record


def tail(path: Path | str, lines: int = 30) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _log_excerpt(record: ProcessRecord, lines: int = 25) -> str:
    excerpt = tail(record.log, lines)
    body = f"\n--- last lines of {record.log} ---\n{excerpt}" if excerpt else ""
    return f"{body}\n(full log: {record.log})"


def wait_healthy(
    record: ProcessRecord,
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str = "health check",
) -> float:
    """Poll `check` until it passes; returns the seconds waited.

    On failure the process is stopped (nothing half-started stays behind) and the error quotes
    the end of its log.

    Raises:
        OpsError: the process exited, or `check` did not pass within `timeout` seconds.
    """
    began = time.monotonic()
    while True:
        if not is_alive(record):
            code = exit_code(record.pid)
            how = f" with code {code}" if code is not None else ""
            raise OpsError(f"{record.name} exited{how} while starting{_log_excerpt(record)}")
        if check():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            terminate(record)
            raise OpsError(
                f"{record.name} was not ready after {timeout:.0f} s ({what}); stopped it"
                f"{_log_excerpt(record)}"
            )
        time.sleep(_POLL_SECONDS)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _is_live(proc):
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _leader(record: ProcessRecord) -> psutil.Process | None:
    """The recorded process if it still exists as that process (zombies included)."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) < 0.5:
            return proc
    except psutil.NoSuchProcess:
        pass
    return None


def _gone(record: ProcessRecord, deadline: float) -> bool:
    """Wait until the process and its group are gone; False if still there at `deadline`."""
    while True:
        _reap(record.pid)
        leader = _leader(record)
        if (leader is None or not _is_live(leader)) and not _group_members(record.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def terminate(record: ProcessRecord, *, grace: float = 5.0) -> str | None:
    """Stop a managed process and everything in its process group.

    Escalates SIGTERM -> SIGINT -> SIGKILL, each sent to the process group and to the pid,
    waiting `grace` seconds after the first two (a Prefect worker shuts down on its second
    signal). A pid that now belongs to another process is never signalled; orphans left in
    the group (the kernel does not reuse a pid while its group exists) are.

    Returns:
        The name of the signal that ended it, or None if nothing was running.

    Raises:
        OpsError: something survived SIGKILL, or signalling was not permitted.
    """
    if psutil.pid_exists(record.pid) and _leader(record) is None:
        return None  # the pid was reused, so our process and its whole group are gone
    if _gone(record, time.monotonic()):
        return None
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(record.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise OpsError(f"not allowed to signal {record.name} (pid {record.pid})") from exc
        if _leader(record) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, sig)
        if _gone(record, time.monotonic() + wait):
            return sig.name
    raise OpsError(f"{record.name} (pid {record.pid}) is still running after SIGKILL")


def stop(run_dir: Path, name: str, *, grace: float = 5.0) -> str | None:
    """Stop process `name` if its pid file names a live process; remove the pid file.

    Returns:
        The signal that ended it, or None if it was not running (a stale pid file is removed).
    """
    record = read_record(run_dir, name)
    if record is None:
        return None
    ended = terminate(record, grace=grace)
    pid_file(run_dir, name).unlink(missing_ok=True)
    _CHILDREN.pop(record.pid, None)
    return ended


def ensure_started(
    run_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    healthy: Callable[[], bool],
    timeout: float,
    url: str | None = None,
    before_start: Callable[[], None] | None = None,
    what: str = "health check",
) -> tuple[ProcessRecord, bool]:
    """Reuse a live, healthy `name`, or start it and wait until `healthy()` passes.

    A live process younger than `timeout` gets the rest of it to become healthy; an older one
    that does not answer within a few seconds is restarted; a stale pid file is replaced.
    `before_start` runs only when a new process is about to start (e.g. a port check).

    Returns:
        (record, started): started is False when a running process was reused.
    """
    record = read_record(run_dir, name)
    if record is not None and is_alive(record):
        age = (datetime.now(UTC) - datetime.fromisoformat(record.started_at)).total_seconds()
        if age < timeout:
            # Still booting (started moments ago, e.g. in the background): it gets the rest
            # of its start timeout, and a failure is reported with its log, not retried.
            wait_healthy(record, healthy, timeout=max(1.0, timeout - age), what=what)
            return record, False
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and is_alive(record):
            if healthy():
                return record, False
            time.sleep(_POLL_SECONDS)
        terminate(record)  # up for long but not answering: hung, start afresh
    if record is not None:
        pid_file(run_dir, name).unlink(missing_ok=True)
    if before_start is not None:
        before_start()
    record = start(run_dir, name, argv, env=env, cwd=cwd, url=url)
    wait_healthy(record, healthy, timeout=timeout, what=what)
    return record, True


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """True if GET `url` answers 2xx."""
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def port_in_use(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_port(host: str, port: int, *, owner: str, setting: str) -> None:
    """Raise a clear error if another program already listens on host:port.

    Raises:
        OpsError: the port is taken; names the setting that moves it.
    """
    if port_in_use(host, port):
        raise OpsError(
            f"cannot start {owner}: port {port} on {host} is already in use by another "
            f"program; stop it or choose another port with {setting}"
        )

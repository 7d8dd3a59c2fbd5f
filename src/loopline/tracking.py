"""Run tracking: every stage execution is a run with params, metrics, environment and outcome.

`tracked_run` wraps a stage: it records the run as running (with the process id, host, git
state, dependency-lock hash, package versions and hardware), hands back a handle to log
params, metrics, artifacts, tags and notes, and closes the run as succeeded or failed (with
the error) whatever happens in the body.

A process that dies without running its `finally` blocks (SIGKILL, out-of-memory killer, a
power cut) cannot close its run. While a run is open a daemon thread refreshes its
`heartbeat_at` every few seconds; `reap_runs` marks as `crashed` every running run whose
process is gone from this host or whose heartbeat went stale. Listings and searches reap
first, so no run stays `running` forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from loopline.lake.artifacts import ArtifactStore
from loopline.store import Store
from loopline.store.tables import (
    Artifact,
    Run,
    RunArtifact,
    RunMetric,
    RunParam,
    RunTag,
    new_id,
    utcnow,
)

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "succeeded", "failed", "crashed")
HEARTBEAT_S = 10.0
"""Seconds between two heartbeats of an open run."""
STALE_AFTER_S = 120.0
"""A running run whose last heartbeat is older than this is reaped as crashed."""

_TRACKED_PACKAGES = (
    "loopline", "prefect", "feast", "lightgbm", "optuna", "polars", "duckdb", "deltalake",
    "whylogs", "numpy", "pandas", "pyarrow", "scikit-learn", "sqlalchemy", "fastapi",
)  # fmt: skip
_PARAM_TEXT_MAX = 1000
_PARAM_KEY_MAX = 250


class TrackingError(ValueError):
    """A tracking request names something the store does not hold (e.g. an unknown run)."""


# --- environment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitState:
    """The checked-out commit and whether tracked files differ from it."""

    commit: str
    dirty: bool


def git_state(project_dir: Path) -> GitState | None:
    """The project's checked-out commit and dirty flag, or None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(project_dir), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        changes = subprocess.run(
            ["git", "-C", str(project_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return GitState(commit=head, dirty=bool(changes)) if head else None


def git_commit(project_dir: Path) -> str | None:
    """The checked-out commit with a '-dirty' suffix if the tree has changes (display form)."""
    state = git_state(project_dir)
    if state is None:
        return None
    return f"{state.commit}-dirty" if state.dirty else state.commit


def lock_hash(project_dir: Path) -> str | None:
    """sha256 of the committed dependency lock, identifying the exact package set."""
    lock = project_dir / "requirements.lock"
    if not lock.is_file():
        return None
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("physical id"):
            physical = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
        elif not line.strip():
            if core:
                cores.add((physical, core))
            physical = core = ""
    return len(cores) or None


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def hardware_info() -> dict[str, Any]:
    """CPU model, cores (logical, physical, usable by this process) and total RAM."""
    memory = _memory_bytes()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": _physical_cores(),
        "cpu_usable_cores": usable,
        "memory_total_gb": round(memory / 2**30, 2) if memory else None,
    }


def environment_info() -> dict[str, Any]:
    """Python, OS, hardware and the versions of the packages that shape results."""
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "hardware": hardware_info(),
        "packages": versions,
    }


def _peak_memory_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- params ------------------------------------------------------------------------------------


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested maps flattened to dotted keys: {'training': {'seed': 7}} -> {'training.seed': 7}.

    Empty maps and non-map values (lists included) are leaves.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
        else:
            out[name] = value
    return out


def param_values(value: Any) -> tuple[str | None, float | None]:
    """How a param value is stored for search: (text, number).

    Numbers (and strings that read as finite numbers) get both; booleans are 'true'/'false';
    None is (None, None); lists, maps and other objects are JSON text. Text is cut at 1,000
    characters (the indexed width).
    """
    number: float | None = None
    if value is None:
        return None, None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text, number = str(value), float(value)
    elif isinstance(value, str):
        text = value
        try:
            number = float(value)
        except ValueError:
            number = None
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    if number is not None and not math.isfinite(number):
        number = None
    return text[:_PARAM_TEXT_MAX], number


def _param_rows(run_id: str, params: Mapping[str, Any]) -> list[RunParam]:
    rows = []
    for key, value in flatten_params(params).items():
        if len(key) > _PARAM_KEY_MAX:
            raise TrackingError(
                f"param key '{key[:60]}...' is {len(key)} characters long "
                f"(at most {_PARAM_KEY_MAX} once nested keys are joined with dots)"
            )
        text, number = param_values(value)
        rows.append(RunParam(run_id=run_id, key=key, value_text=text, value_num=number))
    return rows


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- the run handle ----------------------------------------------------------------------------


def register_artifact(session: Any, artifact_id: str, size: int, media_type: str) -> None:
    """Insert the artifact's metadata row unless it is already known."""
    if session.get(Artifact, artifact_id) is None:
        session.add(Artifact(id=artifact_id, size_bytes=size, media_type=media_type))
        session.flush()


def _write_tags(session: Any, run: Run, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 200:
            raise TrackingError(f"tag key {key!r} must be 1 to 200 characters")
        session.merge(RunTag(run_id=run.id, key=key, value=str(value)[:1000]))
    run.tags = {**run.tags, **{k: str(v)[:1000] for k, v in tags.items()}}


@dataclass
class RunHandle:
    """What a stage uses to record into its run."""

    run_id: str
    store: Store
    artifacts: ArtifactStore
    _on_success: list[Callable[[Session], None]] = field(default_factory=list, repr=False)

    def on_success(self, write: Callable[[Session], None]) -> None:
        """Run `write(session)` in the transaction that closes the run as succeeded.

        What a run produces for others to use (a model version, an alias move) belongs here:
        it is committed together with the `succeeded` status or not at all, so a process that
        dies before the end leaves a crashed run and nothing that points at it. If `write`
        raises, the run is recorded as failed and the error re-raises.
        """
        self._on_success.append(write)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Record final metric values (step 0 by default)."""
        with self.store.session() as session:
            for key, value in metrics.items():
                session.add(RunMetric(run_id=self.run_id, key=key, step=step, value=float(value)))

    def log_history(self, key: str, values: list[float]) -> None:
        """Record a per-step history (e.g. a learning curve); steps count from 1."""
        with self.store.session() as session:
            session.add_all(
                RunMetric(run_id=self.run_id, key=key, step=i, value=float(v), is_final=False)
                for i, v in enumerate(values, start=1)
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge more params into the run (e.g. the defaults a library actually used).

        Nested maps merge key by key; a key given again takes the new value.
        """
        with self.store.session() as session:
            run = session.get_one(Run, self.run_id)
            merged = _merge(run.params, params)
            run.params = merged
            rows = _param_rows(self.run_id, merged)
            session.execute(delete(RunParam).where(RunParam.run_id == self.run_id))
            session.add_all(rows)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Add or overwrite tags of the run (searchable as tags.<key>)."""
        with self.store.session() as session:
            _write_tags(session, session.get_one(Run, self.run_id), tags)

    def set_notes(self, notes: str) -> None:
        """Replace the run's free-text notes."""
        with self.store.session() as session:
            session.get_one(Run, self.run_id).notes = notes

    def log_artifact_bytes(self, name: str, data: bytes, *, media_type: str) -> str:
        """Store bytes as an artifact of this run under a logical name; returns the id."""
        artifact_id = self.artifacts.put_bytes(data)
        with self.store.session() as session:
            register_artifact(session, artifact_id, len(data), media_type)
            session.merge(RunArtifact(run_id=self.run_id, name=name, artifact_id=artifact_id))
        return artifact_id

    def set_summary(self, **values: Any) -> None:
        """Merge values into the run's summary (shown in listings)."""
        with self.store.session() as session:
            run = session.get_one(Run, self.run_id)
            run.summary = {**run.summary, **values}


def set_run_notes(store: Store, run_id: str, notes: str) -> None:
    """Replace the notes of any run (open or closed)."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise TrackingError(f"unknown run '{run_id}'")
        run.notes = notes


def set_run_tags(store: Store, run_id: str, tags: Mapping[str, Any]) -> None:
    """Add or overwrite tags of any run (open or closed)."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise TrackingError(f"unknown run '{run_id}'")
        _write_tags(session, run, tags)


# --- heartbeat and reaping ---------------------------------------------------------------------


@dataclass
class _Heartbeat:
    """A daemon thread stamping `heartbeat_at` on a running run until stopped."""

    store: Store
    run_id: str
    interval_s: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"loopline-heartbeat-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.store.session() as session:
                    session.execute(
                        update(Run)
                        .where(Run.id == self.run_id, Run.status == "running")
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:  # a busy or unreachable store must not end the run
                log.warning("heartbeat of run %s not recorded", self.run_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process there; rely on heartbeats
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


@dataclass(frozen=True)
class ReapedRun:
    """A run the reaper closed as crashed, and why."""

    run_id: str
    kind: str
    reason: str


def reap_runs(
    store: Store, *, stale_after_s: float = STALE_AFTER_S, now: datetime | None = None
) -> list[ReapedRun]:
    """Mark as crashed every running run whose process is gone or whose heartbeat is stale.

    A run is gone when it was started on this host and its process id no longer runs; it is
    stale when its last heartbeat (or its start, for runs recorded before heartbeats existed)
    is older than `stale_after_s`, wherever it ran. Each update is conditional on the
    heartbeat the reaper saw, so a run that beats meanwhile is left alone.
    """
    if stale_after_s <= 0:
        raise TrackingError(f"stale_after_s must be positive, got {stale_after_s}")
    now = now or utcnow()
    here = socket.gethostname()
    with store.reader() as session:
        running = session.execute(
            select(Run.id, Run.kind, Run.pid, Run.host, Run.heartbeat_at, Run.started_at).where(
                Run.status == "running"
            )
        ).all()
    doomed: list[tuple[Any, str, datetime]] = []
    for row in running:
        last = row.heartbeat_at or row.started_at
        if row.host == here and row.pid is not None and not pid_alive(row.pid):
            reason = f"process {row.pid} on {row.host} ended without closing the run"
        elif now - last > timedelta(seconds=stale_after_s):
            where = f"process {row.pid} on {row.host}" if row.pid is not None else "its process"
            reason = (
                f"no heartbeat from {where} since {last.isoformat(timespec='seconds')} "
                f"(stale after {stale_after_s:g}s)"
            )
        else:
            continue
        doomed.append((row, reason, last))
    reaped = []
    if not doomed:
        return reaped
    with store.session() as session:
        for row, reason, last in doomed:
            beat = (
                Run.heartbeat_at.is_(None)
                if row.heartbeat_at is None
                else Run.heartbeat_at == row.heartbeat_at
            )
            result = session.execute(
                update(Run)
                .where(Run.id == row.id, Run.status == "running", beat)
                .values(
                    status="crashed",
                    error=f"crashed: {reason}",
                    ended_at=last,
                    duration_s=max(0.0, (last - row.started_at).total_seconds()),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount:
                reaped.append(ReapedRun(run_id=row.id, kind=row.kind, reason=reason))
    for item in reaped:
        log.info("run %s (%s) reaped as crashed: %s", item.run_id, item.kind, item.reason)
    return reaped


# --- the run context ---------------------------------------------------------------------------


@contextmanager
def tracked_run(
    store: Store,
    artifacts: ArtifactStore,
    *,
    kind: str,
    use_case: str,
    project_dir: Path,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    flow_run_id: str | None = None,
    name: str = "",
    parent_run_id: str | None = None,
    notes: str = "",
    heartbeat_s: float = HEARTBEAT_S,
) -> Iterator[RunHandle]:
    """Record a stage execution as a run; failed if the body raises (the error re-raises).

    Args:
        store: The metadata store.
        artifacts: The artifact store the handle writes to.
        kind: What ran: train, tune-trial, evaluate, ingest, ...
        use_case: The use case the run belongs to.
        project_dir: The checkout whose git state and lock are recorded.
        params: Inputs of the run (nested maps allowed; searchable as params.<dotted key>).
        tags: Searchable labels (tags.<key>).
        flow_run_id: The Prefect flow run that executed this run, if any.
        name: Display name (default: the kind).
        parent_run_id: The enclosing run, for nested runs (a tuning study and its trials).
        notes: Free text.
        heartbeat_s: Seconds between heartbeats while the run is open.

    Raises:
        TrackingError: If the parent run is unknown or a param or tag key is unusable.
    """
    if heartbeat_s <= 0:
        raise TrackingError(f"heartbeat_s must be positive, got {heartbeat_s}")
    git = git_state(project_dir)
    now = utcnow()
    run = Run(
        id=new_id(),
        kind=kind,
        use_case=use_case,
        name=name or kind,
        params=dict(params or {}),
        tags={},
        notes=notes,
        environment=environment_info(),
        git_commit=git.commit if git else None,
        git_dirty=git.dirty if git else None,
        lock_hash=lock_hash(project_dir),
        prefect_flow_run_id=flow_run_id,
        parent_run_id=parent_run_id,
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=now,
        heartbeat_at=now,
    )
    with store.session() as session:
        if parent_run_id is not None and session.get(Run, parent_run_id) is None:
            raise TrackingError(f"unknown parent run '{parent_run_id}'")
        session.add(run)
        session.flush()
        session.add_all(_param_rows(run.id, run.params))
        _write_tags(session, run, tags or {})
    started = time.perf_counter()
    heartbeat = _Heartbeat(store, run.id, heartbeat_s)
    heartbeat.start()
    handle = RunHandle(run_id=run.id, store=store, artifacts=artifacts)
    status, error = "succeeded", None
    try:
        yield handle
    except BaseException as exc:
        status = "failed"
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        heartbeat.stop()
        try:
            _close(store, run.id, status, error, started, handle._on_success)
        except Exception as exc:
            if status != "succeeded":
                raise
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            _close(store, run.id, "failed", f"on success: {error}", started, [])
            raise


def _close(
    store: Store,
    run_id: str,
    status: str,
    error: str | None,
    started: float,
    writes: list[Callable[[Session], None]],
) -> None:
    with store.session() as session:
        row = session.get_one(Run, run_id)
        row.status = status
        row.error = error
        row.ended_at = utcnow()
        row.heartbeat_at = row.ended_at
        row.duration_s = time.perf_counter() - started
        row.peak_memory_mb = _peak_memory_mb()
        if status == "succeeded":
            for write in writes:
                write(session)


def final_metrics(store: Store, run_id: str) -> dict[str, float]:
    """The final metrics of a run (for a key logged at several final steps, the highest)."""
    with store.reader() as session:
        rows = session.execute(
            select(RunMetric.key, RunMetric.value)
            .where(RunMetric.run_id == run_id, RunMetric.is_final.is_(True))
            .order_by(RunMetric.step)
        ).all()
    return {key: value for key, value in rows}

"""Run tracking: every stage execution is a run with params, metrics, environment and outcome.

`tracked_run` wraps a stage: it records the run as running, hands back a handle to log metrics
and artifacts, and closes the run as succeeded or failed (with the error) whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.store import Store
from loopline.store.tables import Artifact, Run, RunArtifact, RunMetric, RunTag, new_id, utcnow

_TRACKED_PACKAGES = (
    "loopline", "prefect", "feast", "lightgbm", "polars", "duckdb", "deltalake", "whylogs",
    "numpy", "pandas", "pyarrow", "scikit-learn",
)  # fmt: skip


def git_commit(project_dir: Path) -> str | None:
    """The checked-out commit of the project (with '-dirty' if the tree has changes), if any."""
    try:
        head = subprocess.run(
            ["git", "-C", str(project_dir), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(project_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def lock_hash(project_dir: Path) -> str | None:
    """sha256 of the committed dependency lock, identifying the exact package set."""
    lock = project_dir / "requirements.lock"
    if not lock.is_file():
        return None
    return hashlib.sha256(lock.read_bytes()).hexdigest()


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
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def _peak_memory_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class RunHandle:
    """What a stage uses to record into its run."""

    run_id: str
    store: Store
    artifacts: ArtifactStore

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


def register_artifact(session: Any, artifact_id: str, size: int, media_type: str) -> None:
    """Insert the artifact's metadata row unless it is already known."""
    if session.get(Artifact, artifact_id) is None:
        session.add(Artifact(id=artifact_id, size_bytes=size, media_type=media_type))
        session.flush()


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
) -> Iterator[RunHandle]:
    """Record a stage execution as a run; failed if the body raises (the error re-raises)."""
    run = Run(
        id=new_id(),
        kind=kind,
        use_case=use_case,
        name=name or kind,
        params=dict(params or {}),
        tags=dict(tags or {}),
        environment=environment_info(),
        git_commit=git_commit(project_dir),
        lock_hash=lock_hash(project_dir),
        prefect_flow_run_id=flow_run_id,
    )
    with store.session() as session:
        session.add(run)
        session.add_all(RunTag(run_id=run.id, key=k, value=str(v)) for k, v in (tags or {}).items())
    started = time.perf_counter()
    handle = RunHandle(run_id=run.id, store=store, artifacts=artifacts)
    status, error = "succeeded", None
    try:
        yield handle
    except BaseException as exc:
        status = "failed"
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        with store.session() as session:
            row = session.get_one(Run, run.id)
            row.status = status
            row.error = error
            row.ended_at = utcnow()
            row.duration_s = time.perf_counter() - started
            row.peak_memory_mb = _peak_memory_mb()


def final_metrics(store: Store, run_id: str) -> dict[str, float]:
    """The final (step 0) metrics of a run."""
    with store.reader() as session:
        rows = session.execute(
            select(RunMetric.key, RunMetric.value).where(
                RunMetric.run_id == run_id, RunMetric.is_final.is_(True)
            )
        ).all()
    return {key: value for key, value in rows}

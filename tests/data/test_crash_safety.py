"""Crash safety: an ingest killed (SIGKILL) anywhere during its write leaves the old version or
the new one, never a partial one, and the next ingest repairs the lake and completes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from data_helpers import BASE_EVENTS, NOW, SPEC, START, Env, event, write_csv
from sqlalchemy import select

from loopline.data.ingest import quarantine_uri
from loopline.data.versions import read_version
from loopline.lake import tables
from loopline.store.tables import DataBatch


def _child(home: str, point: str, path: str) -> None:
    """Ingest one batch and die (SIGKILL) at `point` of the write. Runs in a forked process."""
    import loopline.data.ingest as ingest
    from loopline.lake.artifacts import ArtifactStore
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.store import Store

    real_append, calls = ingest.tables.append, []

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def append(uri: str, frame: pl.DataFrame, **kwargs: object) -> int:
        calls.append(uri)
        if point == "before_lake_write":
            die()
        if point == "during_lake_write":
            Path(home, "writing").touch()
        version = real_append(uri, frame, **kwargs)  # type: ignore[arg-type]
        if point == "after_curated_write" and len(calls) == 1:
            die()
        if point == "after_quarantine_write" and len(calls) == 2:
            die()
        return version

    ingest.tables.append = append  # type: ignore[assignment]
    if point == "before_store_commit":
        ingest._register = lambda *args, **kwargs: die()  # type: ignore[assignment]
    settings = Settings(home=Path(home))
    ingest.ingest_files(
        Store.open(settings), lake_dir=settings.lake_dir, table=load_spec("fraud").events,
        use_case="fraud", paths=[Path(path)], run_id=None,
        artifacts=ArtifactStore(settings.artifacts_dir), now=NOW,
    )  # fmt: skip


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.ForkServerContext:
    """Fresh processes forked from a server that imported the ingest once (fast, no threads)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["loopline.data.ingest", "loopline.monitoring.profiles"])
    return context


POINTS = [
    "before_lake_write",
    "during_lake_write",
    "after_curated_write",
    "after_quarantine_write",
    "before_store_commit",
]


def _batch(env: Env, rows: int) -> tuple[Path, set[str], set[str]]:
    """A batch of new events, ten seconds apart, with two soft failures (quarantined)."""
    batch = []
    for i in range(rows):
        ts = START + timedelta(hours=BASE_EVENTS, seconds=10 * i)
        batch.append(event(BASE_EVENTS + i, event_timestamp=ts.isoformat(), hour=ts.hour))
    batch[3]["amount"] = "-1"
    batch[7]["merchant_category"] = "casino"
    path = write_csv(env.raw / "batch.csv", batch)
    bad = {str(batch[3]["transaction_id"]), str(batch[7]["transaction_id"])}
    ids = {str(r["transaction_id"]) for r in batch} - bad
    return path, ids, bad


def _kill(
    processes: multiprocessing.context.ForkServerContext, env: Env, point: str, path: Path
) -> None:
    child = processes.Process(target=_child, args=(str(env.settings.home), point, str(path)))
    child.start()
    if point == "during_lake_write":
        marker = env.settings.home / "writing"
        deadline = time.monotonic() + 120
        while not marker.exists() and child.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(random.Random(point).uniform(0.0, 0.05))  # inside the Delta write
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=120)
    assert child.exitcode in (-signal.SIGKILL, 0), child.exitcode


@pytest.mark.parametrize("point", POINTS)
def test_killed_ingest_leaves_old_or_new_version_and_rerun_completes(
    processes: multiprocessing.context.ForkServerContext, env: Env, point: str
) -> None:
    before = env.state()
    old_version, old_rows = read_version(env.store, SPEC.events.table)
    path, new_ids, bad = _batch(env, 50_000 if point == "during_lake_write" else 60)

    _kill(processes, env, point, path)
    after = env.state()
    committed = after.versions != before.versions
    if not committed:
        # Readers see exactly the old version; the store recorded no new batch.
        assert after.committed == before.committed
        seen_version, rows = read_version(env.store, SPEC.events.table)
        assert seen_version.id == old_version.id and rows.equals(old_rows)
    else:  # the kill came after the commit: the new version is complete
        assert point == "during_lake_write"

    result = env.ingest(SPEC.events, [path])
    assert result.status == ("noop" if committed else "committed")
    if not committed:
        assert result.rows == len(new_ids) and result.rows_quarantined == len(bad)
        assert result.repaired, "the rerun reports what it repaired"
    latest, rows = read_version(env.store, SPEC.events.table)
    ids = rows.get_column("transaction_id")
    assert ids.n_unique() == ids.len() == BASE_EVENTS + len(new_ids)
    assert set(ids.to_list()) >= new_ids and not set(ids.to_list()) & bad
    old_ids = set(old_rows.get_column("transaction_id").to_list())
    assert (
        rows.filter(pl.col("transaction_id").is_in(old_ids))
        .sort("transaction_id")
        .equals(old_rows.sort("transaction_id"))
    )
    quarantined = pl.read_delta(quarantine_uri(env.settings.lake_dir, SPEC.events))
    assert sorted(quarantined.get_column("transaction_id").to_list()) == sorted(bad)
    # Nothing the crash left is visible: the newest Delta version is the recorded one.
    uri = tables.table_uri(env.settings.lake_dir, SPEC.events.table)
    assert tables.current_version(uri) == latest.table_version
    with env.store.reader() as session:
        statuses = sorted(
            session.scalars(select(DataBatch.status).where(DataBatch.dataset == SPEC.events.table))
        )
    interrupted = [] if committed else ["rolled_back"]
    assert statuses == sorted(["committed", "committed", *interrupted])

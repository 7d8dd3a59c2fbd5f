"""Metadata store: migrations, WAL, concurrent upgrade, UTC round trip, PostgreSQL parity."""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from loopline.settings import Settings
from loopline.store import Store
from loopline.store.migrate import at_head, current_revisions, head_revisions
from loopline.store.tables import Base, Run

PG_URL = os.environ.get("LOOPLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _open(home: str) -> frozenset[str]:
    store = Store.open(Settings(home=Path(home)))
    return current_revisions(store.engine)


def test_open_creates_every_table_at_head(settings: Settings) -> None:
    store = Store.open(settings)
    names = set(inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= names
    assert at_head(store.engine)


def test_sqlite_uses_wal_and_busy_timeout(settings: Settings) -> None:
    store = Store.open(settings)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    raw = sqlite3.connect(settings.home / "loopline.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_first_open_migrates_once(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    with ProcessPoolExecutor(max_workers=4) as pool:
        revisions = list(pool.map(_open, [home] * 4))
    assert revisions == [head_revisions()] * 4


@pytest.mark.parametrize(
    "given",
    [
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_timestamps_come_back_aware_utc(settings: Settings, given: datetime) -> None:
    store = Store.open(settings)
    with store.session() as session:
        run = Run(kind="train", use_case="fraud", started_at=given)
        session.add(run)
    with store.reader() as session:
        back = session.get_one(Run, run.id).started_at
    assert back.tzinfo is not None
    assert back == given


def test_naive_timestamp_is_refused(settings: Settings) -> None:
    store = Store.open(settings)
    with pytest.raises(Exception, match="naive datetime"), store.session() as session:
        session.add(Run(kind="train", use_case="fraud", started_at=datetime(2026, 1, 1)))
    with store.reader() as session:
        assert session.query(Run).count() == 0


def test_failed_transaction_writes_nothing(settings: Settings) -> None:
    store = Store.open(settings)
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(Run(kind="train", use_case="fraud"))
        session.flush()
        raise RuntimeError("boom")
    with store.reader() as session:
        assert session.query(Run).count() == 0


@pytest.mark.scale
def test_postgresql_store_migrates_and_round_trips(tmp_path: Path, pg_schema: str) -> None:
    url = f"{PG_URL}?options=-csearch_path%3D{pg_schema}"
    store = Store.open(Settings(home=tmp_path, database_url=url))
    assert at_head(store.engine)
    with store.session() as session:
        session.add(Run(kind="train", use_case="fraud", params={"a": 1}))
    with store.reader() as session:
        assert session.query(Run).one().params == {"a": 1}
    again = Store.open(Settings(home=tmp_path, database_url=url))
    assert at_head(again.engine)
    with again.engine.connect() as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar() == pg_schema

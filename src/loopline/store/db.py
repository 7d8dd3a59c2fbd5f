"""Engine and sessions for the metadata store: SQLite (WAL) by default, PostgreSQL by URL.

Many processes (Prefect workers, the API, the Streamlit app) read and write the store at once.
On SQLite that works in WAL mode with a busy timeout; on PostgreSQL it is the default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from loopline.settings import Settings


def _sqlite_pragmas(busy_timeout_ms: int):
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return apply


def make_engine(url: str, *, busy_timeout_ms: int = 30_000) -> Engine:
    """Create an engine for a metadata-store URL.

    For SQLite the parent folder is created and every connection gets WAL mode, a busy timeout
    and foreign keys; transactions start with BEGIN IMMEDIATE so writers queue instead of
    failing on lock upgrades (readers use a deferred BEGIN and never block each other).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_ms / 1000, "isolation_level": None},
        )
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            write = conn.get_execution_options().get("loopline_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Handle on the metadata store: an engine plus a session factory.

    Build one per process at an entry point with `Store.open(settings)`; it upgrades the
    schema (under a lock) before first use.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = sessionmaker(
            engine.execution_options(loopline_write=True), expire_on_commit=False
        )
        self._reader = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Store:
        """Open the store named by settings, upgrading its schema unless told not to."""
        engine = make_engine(settings.metadata_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        if migrate:
            from loopline.store.migrate import upgrade

            upgrade(engine)
        return cls(engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reads only (rolled back at the end)."""
        with self._reader() as session:
            yield session

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

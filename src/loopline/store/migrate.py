"""Schema upgrades with Alembic, run automatically and under a lock.

Several processes may start at once (`loopline up` starts a worker, the API and the app), so
the upgrade takes a lock first: an advisory lock on PostgreSQL, a lock file beside the SQLite
database. Whoever gets it second finds the schema at head and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x6C6F6F70  # "loop"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at loopline's migrations, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when it has no schema yet)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _upgrade_locked(engine: Engine) -> None:
    with engine.begin() as connection:
        if current_revision(engine) == head_revision():
            return
        command.upgrade(alembic_config(connection), "head")


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from many processes at once."""
    if current_revision(engine) == head_revision():
        return
    if engine.dialect.name == "sqlite":
        database = engine.url.database or ""
        lock_path = f"{database}.migrate.lock" if database not in ("", ":memory:") else None
        if lock_path is None:
            _upgrade_locked(engine)
            return
        with FileLock(lock_path, timeout=120):
            _upgrade_locked(engine)
        return
    with engine.connect() as lock_connection:
        lock_connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        try:
            _upgrade_locked(engine)
        finally:
            lock_connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            lock_connection.commit()

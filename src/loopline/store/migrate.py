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


def head_revisions() -> frozenset[str]:
    """The newest migration revisions shipped with this code.

    Usually one; independent features may add migrations on separate branches from the same
    parent (each with its own tables), and an upgrade applies every branch.
    """
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the database is at (empty when it has no schema yet)."""
    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())


def at_head(engine: Engine) -> bool:
    """Whether the schema is at every head revision."""
    return current_revisions(engine) == head_revisions()


def _upgrade_locked(engine: Engine) -> None:
    if at_head(engine):
        return
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "heads")


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revisions; safe to call from many processes at once."""
    if at_head(engine):
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

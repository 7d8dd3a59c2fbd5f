"""Migration 0005: the promotion-requests table matches its model, and upgrades a 0004 store."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from loopline.settings import Settings
from loopline.store import Store
from loopline.store.db import make_engine
from loopline.store.migrate import alembic_config, at_head, upgrade
from loopline.store.tables import Base

TABLE = "promotion_requests"


def _diffs(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    return [d for d in diffs if TABLE in repr(d)]


def test_the_table_matches_its_model_and_upgrades_from_0004(
    backend_settings: Settings,
) -> None:
    engine = make_engine(backend_settings.metadata_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0004")
    assert TABLE not in sa.inspect(engine).get_table_names()
    upgrade(engine)
    assert at_head(engine) and TABLE in sa.inspect(engine).get_table_names()
    assert _diffs(engine) == []
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
    assert TABLE not in sa.inspect(engine).get_table_names()
    engine.dispose()
    store = Store.open(backend_settings)
    assert _diffs(store.engine) == []
    store.dispose()

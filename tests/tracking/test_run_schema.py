"""Migration 0003: old runs become searchable, the models match the migrated schema, and the
same searches give the same answers on PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from test_runs_query import INVALID, ORDERS, VALID, _fill
from tracking_fixtures import T0, Populated, populate

from loopline.runs_query import QueryError, compare_runs, count_runs, search_runs
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.db import make_engine
from loopline.store.migrate import alembic_config, upgrade
from loopline.store.tables import Base, RunParam

PG_URL = os.environ.get("LOOPLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MINE = {"runs", "run_params", "run_metrics", "run_tags"}


def test_upgrade_backfills_params_and_splits_the_dirty_flag(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        runs = sa.table(
            "runs", *(sa.column(c) for c in ("id", "kind", "use_case", "name", "status",
                                              "params", "tags", "summary", "environment",
                                              "git_commit", "started_at")),
        )  # fmt: skip
        started = "2026-01-01 00:00:00.000000"  # how SQLAlchemy stores times in SQLite
        for run_id, commit, params in [
            ("a" * 32, "f" * 40 + "-dirty", '{"training": {"num_leaves": 63}, "objective": "x"}'),
            ("b" * 32, "e" * 40, '{"num_leaves": "31"}'),
            ("c" * 32, None, "{}"),
        ]:
            conn.execute(
                runs.insert().values(
                    id=run_id, kind="train", use_case="fraud", name="", status="succeeded",
                    params=params, tags="{}", summary="{}", environment="{}",
                    git_commit=commit, started_at=started,
                )
            )  # fmt: skip
    upgrade(engine)
    store = Store(engine)
    with engine.connect() as conn:
        dirty = dict(conn.execute(sa.text("SELECT git_commit, git_dirty FROM runs")).all())
        notes = set(conn.execute(sa.text("SELECT notes FROM runs")).scalars())
    assert dirty == {"f" * 40: 1, "e" * 40: 0, None: None}
    assert notes == {""}
    with store.reader() as session:
        rows = {(p.run_id[0], p.key, p.value_text, p.value_num) for p in session.query(RunParam)}
    assert rows == {
        ("a", "training.num_leaves", "63", 63.0),
        ("a", "objective", "x", None),
        ("b", "num_leaves", "31", 31.0),
    }
    found = search_runs(store, "params.training.num_leaves = 63 and git_dirty = true", reap=False)
    assert [r.id for r in found.runs] == ["a" * 32]


def test_models_match_the_migrated_schema(settings: Settings) -> None:
    store = Store.open(settings)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)

    def table_of(diff: Any) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff  # modify_* diffs come in lists
        for part in item[1:]:
            if isinstance(part, sa.Table):
                return part.name
            if isinstance(part, sa.Index | sa.Constraint) and part.table is not None:
                return part.table.name
            if isinstance(part, str) and part in Base.metadata.tables:
                return part
        return None

    assert [d for d in diffs if table_of(d) in MINE] == []


@pytest.mark.scale
def test_the_same_searches_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    url = f"{PG_URL}?options=-csearch_path%3D{pg_schema}"
    store = Store.open(Settings(home=tmp_path, database_url=url))
    try:
        populated = Populated(store, populate(store))
        for query, expected in VALID:
            text = _fill(query, populated)
            page = search_runs(store, text, limit=100, reap=False, now=T0)
            assert set(populated.names([r.id for r in page.runs])) == expected, query
            assert count_runs(store, text, now=T0) == len(expected), query
        for order_by, first in ORDERS:
            page = search_runs(store, "", order_by=order_by, limit=100, reap=False)
            names = populated.names([r.id for r in page.runs])
            assert names[: len(first)] == first, order_by
            paged, token = [], None
            while True:
                part = search_runs(store, "", order_by=order_by, limit=3, page_token=token,
                                   reap=False)  # fmt: skip
                paged += populated.names([r.id for r in part.runs])
                token = part.next_page_token
                if token is None:
                    break
            assert paged == names, order_by
        for query, message, _position in INVALID:
            with pytest.raises(QueryError, match=None) as raised:
                search_runs(store, query, reap=False)
            assert message in str(raised.value)
        comparison = compare_runs(store, [populated.ids["r1"], populated.ids["r3"]])
        assert comparison.params.filter("differs").height == 3
    finally:
        store.dispose()

"""Migration 0004: keys and counters back-filled, collisions stop it, models match the schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.db import make_engine
from loopline.store.migrate import alembic_config, at_head, upgrade
from loopline.store.tables import Base, Model

MINE = {"models", "model_versions"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _table(table: str, /, **columns: Any) -> sa.TableClause:
    return sa.table(table, *(sa.column(c, t) for c, t in columns.items()))


RUNS = _table(
    "runs", id=sa.String, kind=sa.String, use_case=sa.String, name=sa.String, status=sa.String,
    params=sa.JSON, tags=sa.JSON, summary=sa.JSON, environment=sa.JSON,
    started_at=sa.DateTime(timezone=True),
)  # fmt: skip
ARTIFACTS = _table(
    "artifacts", id=sa.String, size_bytes=sa.BigInteger, media_type=sa.String,
    created_at=sa.DateTime(timezone=True),
)  # fmt: skip
MODELS = _table(
    "models", name=sa.String, use_case=sa.String, description=sa.Text,
    created_at=sa.DateTime(timezone=True),
)  # fmt: skip
VERSIONS = _table(
    "model_versions", id=sa.String, model_name=sa.String, version=sa.Integer, run_id=sa.String,
    artifact_id=sa.String, feature_service=sa.String, feature_names=sa.JSON, metrics=sa.JSON,
    status=sa.String, created_at=sa.DateTime(timezone=True),
)  # fmt: skip


def _old_store(settings: Settings, models: dict[str, int]) -> sa.Engine:
    """A store at revision 0001 holding `models` (name -> number of versions)."""
    engine = make_engine(settings.metadata_url)
    artifact = "sha256:" + "0" * 64
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(
            RUNS.insert().values(
                id="r" * 32, kind="train", use_case="fraud", name="", status="succeeded",
                params={}, tags={}, summary={}, environment={}, started_at=T0,
            )
        )  # fmt: skip
        conn.execute(
            ARTIFACTS.insert().values(id=artifact, size_bytes=1, media_type="x", created_at=T0)
        )
        for name, count in models.items():
            conn.execute(
                MODELS.insert().values(name=name, use_case="fraud", description="", created_at=T0)
            )
            for number in range(1, count + 1):
                conn.execute(
                    VERSIONS.insert().values(
                        id=f"{name}-{number}"[:32], model_name=name, version=number,
                        run_id="r" * 32, artifact_id=artifact, feature_service="svc",
                        feature_names={"inputs": ["a"]}, metrics={}, status="ready",
                        created_at=T0,
                    )
                )  # fmt: skip
    return engine


def test_upgrade_backfills_keys_and_counters(backend_settings: Settings) -> None:
    engine = _old_store(backend_settings, {"fraud-detector": 3, "Churn": 0})
    upgrade(engine)
    assert at_head(engine)
    store = Store(engine)
    with store.reader() as session:
        rows = {m.name: (m.name_key, m.last_version) for m in session.query(Model)}
        assert rows == {"fraud-detector": ("fraud-detector", 3), "Churn": ("churn", 0)}
        assert registry.get_version(session, "FRAUD-DETECTOR", 2).package_id is None
    with store.session() as session:
        version = registry.register_version(
            session, model_name="fraud-detector", use_case="fraud", run_id="r" * 32,
            artifact_id="sha256:" + "0" * 64, feature_service="svc", feature_names=["a"],
            metrics={}, datasets={},
        )  # fmt: skip
        assert version.version == 4
    with pytest.raises(sa.exc.IntegrityError), store.session() as session:
        session.add(Model(name="CHURN", use_case="fraud"))
    engine.dispose()


def test_upgrade_stops_on_two_spellings_of_one_name(settings: Settings) -> None:
    engine = _old_store(settings, {"churn": 1, "Churn": 1})
    with pytest.raises(RuntimeError, match=r"models '[cC]hurn' and '[cC]hurn' have the same nor"):
        upgrade(engine)
    assert not at_head(engine)
    engine.dispose()


def test_models_match_the_migrated_schema(backend_settings: Settings) -> None:
    store = Store.open(backend_settings)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)

    def table_of(diff: Any) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        for part in item[1:]:
            if isinstance(part, sa.Table):
                return part.name
            if isinstance(part, sa.Index | sa.Constraint) and part.table is not None:
                return part.table.name
            if isinstance(part, str) and part in Base.metadata.tables:
                return part
        return None

    assert [d for d in diffs if table_of(d) in MINE] == []
    store.dispose()

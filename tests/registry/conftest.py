"""Fixtures of the registry tests: a store on SQLite or PostgreSQL, and its artifact store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_helpers import pg_settings

from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.store import Store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.scale)])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of a fresh store: a SQLite file, or a fresh PostgreSQL schema."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        return Settings(home=home)
    return pg_settings(home, request.getfixturevalue("pg_schema"))


@pytest.fixture
def backend_store(backend_settings: Settings) -> Iterator[Store]:
    """A migrated store on either backend (disposed afterwards)."""
    store = Store.open(backend_settings)
    yield store
    store.dispose()


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    """An artifact store (shared by both backends: only the metadata store differs)."""
    return ArtifactStore(tmp_path / "home" / "artifacts")

"""Data-stage fixtures: a data home with one good batch of events and labels already ingested.

The base home is built once per session and copied per test, so each test starts from a table
with history (a rejected batch must leave that history exactly as it was).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from data_helpers import Env, build_base

from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.store import Store


@pytest.fixture(scope="session")
def base_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data home with 40 events and 20 labels ingested (built once)."""
    home = tmp_path_factory.mktemp("base") / "home"
    build_base(home)
    return home


@pytest.fixture
def env(base_home: Path, tmp_path: Path) -> Iterator[Env]:
    """A private copy of the base home."""
    home = tmp_path / "home"
    shutil.copytree(base_home, home)
    settings = Settings(home=home)
    store = Store.open(settings)
    yield Env(settings, store, ArtifactStore(settings.artifacts_dir), tmp_path / "in")
    store.dispose()


@pytest.fixture
def empty_env(tmp_path: Path) -> Iterator[Env]:
    """A data home with nothing ingested."""
    settings = Settings(home=tmp_path / "home")
    store = Store.open(settings)
    yield Env(settings, store, ArtifactStore(settings.artifacts_dir), tmp_path / "in")
    store.dispose()

"""Fixtures of the tracking tests: a store holding the fixture runs of `tracking_fixtures`."""

from __future__ import annotations

from pathlib import Path

import pytest
from tracking_fixtures import Populated, populate

from loopline.settings import Settings
from loopline.store import Store


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    """A SQLite store with the fixture runs, shared by a module's tests (read only)."""
    home: Path = tmp_path_factory.mktemp("runs")
    store = Store.open(Settings(home=home))
    return Populated(store, populate(store))

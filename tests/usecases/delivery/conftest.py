"""Fixtures of the delivery use case: where its spec and feature repo are, its generated data,
and an environment that points loopline at it."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopline.spec import UseCaseSpec, load_spec

TESTS_DIR = Path(__file__).resolve().parents[2]

# The spec names its builders `usecases.delivery.builders:...`: the platform imports them by
# module name, so tests/ must be importable whatever pytest's import mode.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from usecases.delivery import FEATURE_REPO, SPEC_PATH  # noqa: E402
from usecases.delivery.generator import DeliveryConfig, DeliveryData, generate  # noqa: E402


@pytest.fixture(scope="session")
def delivery_spec() -> UseCaseSpec:
    """The delivery spec, loaded by path."""
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="session")
def small_delivery() -> DeliveryData:
    """Three weeks of a small world: enough for the builder tests."""
    config = DeliveryConfig(
        end=datetime.now(UTC).date(), days=21, orders_per_day=150, couriers=12, restaurants=8
    )
    return generate(config)


@pytest.fixture
def delivery_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point loopline's settings at the delivery spec and its Feast repo (LOOPLINE_HOME is set
    by the `run` fixture per call)."""
    monkeypatch.setenv("LOOPLINE_USE_CASE", str(SPEC_PATH))
    monkeypatch.setenv("LOOPLINE_FEATURE_REPO", str(FEATURE_REPO))

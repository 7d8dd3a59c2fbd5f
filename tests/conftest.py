"""Shared fixtures: an isolated data home, settings and a migrated store per test."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopline.settings import Settings
from loopline.store import Store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data home is a fresh temporary folder."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """A migrated SQLite store under the test's data home."""
    store = Store.open(settings)
    yield store
    store.dispose()


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema on the loopback server, dropped afterwards.

    Without a server the test skips locally but fails in CI (CI=true), where it must run.
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not running")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Call the CLI's entry point in-process: (exit code, stdout, stderr)."""
    from loopline.cli import main

    def call(home: Path, *args: str) -> tuple[int, str, str]:
        monkeypatch.setenv("LOOPLINE_HOME", str(home))
        monkeypatch.setattr(sys, "argv", ["loopline", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return call

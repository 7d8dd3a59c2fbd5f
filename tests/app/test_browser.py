"""The control panel in a real browser: `streamlit run` on loopback, driven by headless chromium.

Uses the system's Debian `chromium` (never a downloaded browser). Without it the test skips
on a developer machine and fails in CI (CI=true), where `apt-get install -y chromium` must
have run. Screenshots land in tests/artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Facts, Home

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
START_TIMEOUT_S = 30
WAIT_MS = 15_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str:
    """The system chromium binary; fail in CI without one, skip elsewhere."""
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: it is required in CI")
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(home: Path) -> Iterator[str]:
    """`streamlit run app/main.py` for the store under `home`; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(home),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    env.pop("LOOPLINE_DATABASE_URL", None)
    log = home.parent / f"streamlit-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py")),
                *("--server.headless", "true", "--server.port", str(port)),
                *("--server.address", "127.0.0.1", "--server.fileWatcherType", "none"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"streamlit not healthy after {START_TIMEOUT_S}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system chromium through Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def open_app(browser: Any, url: str) -> Iterator[tuple[Any, list[str]]]:
    """A browser tab on `url`, and the list collecting its page errors."""
    page = browser.new_page(viewport={"width": 1440, "height": 1600})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    try:
        yield page, errors
    except Exception:
        # What the page showed when the test gave up: the first thing to look at.
        shoot(page, "failure")
        raise
    finally:
        page.close()


def settle(page: Any) -> None:
    """Wait until the script run is over and every chart has drawn."""
    page.get_by_test_id("stStatusWidget").wait_for(state="detached", timeout=WAIT_MS)
    charts = page.get_by_test_id("stVegaLiteChart")
    for i in range(charts.count()):
        charts.nth(i).locator("canvas, svg").first.wait_for(timeout=WAIT_MS)
    assert page.get_by_test_id("stException").count() == 0


def shoot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under tests/artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"app-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def go(page: Any, title: str) -> None:
    """Navigate with the sidebar, as a person would."""
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()


def test_every_page_renders_the_store_in_a_real_browser(
    browser: Any, populated_home: Home, facts: Facts
) -> None:
    champion = f"v{facts.champion_version}"
    # Per page: what must show, and the page's last element (so the whole run has rendered).
    checks: dict[str, list[Callable[[Any], Any]]] = {
        "Models": [
            lambda p: p.get_by_test_id("stMetricValue").filter(has_text=champion),
            lambda p: p.get_by_text(f"Lineage of {champion}"),
            lambda p: p.get_by_text("Newest alias move"),
        ],
        "Overview": [
            lambda p: p.get_by_test_id("stMetricValue").filter(has_text=champion),
            lambda p: p.get_by_text("Promoted 2026-11-02 11:00 UTC by bob"),
            lambda p: p.get_by_text("open alert(s)"),
        ],
        "Runs": [
            lambda p: p.get_by_test_id("stMultiSelect").filter(has_text="Kind"),
            lambda p: p.get_by_text("Prefect flow run"),
            lambda p: p.get_by_role("tab", name="Summary & environment"),
        ],
        "Monitoring": [
            lambda p: p.get_by_text(f"model {facts.model} {champion}"),
            lambda p: p.get_by_text("Every window"),
        ],
    }
    with (
        streamlit_server(populated_home.path) as url,
        # A deep link is the first request: the router must serve it on a fresh server.
        open_app(browser, f"{url}/models") as (page, errors),
    ):
        for title, expected in checks.items():
            if title != "Models":
                go(page, title)
            page.get_by_role("heading", name=title, level=1).wait_for()
            for locate in expected:
                locate(page).first.wait_for()
            settle(page)
            shoot(page, title.lower())
        # Pick a training run: its final metrics and learning curve show.
        go(page, "Runs")
        page.get_by_test_id("stSelectbox").filter(has_text="Run").click()
        page.get_by_role("option").filter(has_text="train-02").click()
        page.get_by_role("heading", name="train run train-02").wait_for()
        page.get_by_test_id("stVegaLiteChart").first.wait_for()
        settle(page)
        shoot(page, "runs-train")
        assert errors == []


def test_an_empty_store_shows_the_friendly_message_in_a_real_browser(
    browser: Any, empty_home: Home
) -> None:
    with streamlit_server(empty_home.path) as url, open_app(browser, url) as (page, errors):
        for title in ("Overview", "Data", "Runs", "Models", "Monitoring"):
            if title != "Overview":
                go(page, title)
            page.get_by_role("heading", name=title, level=1).wait_for()
            page.get_by_text("Nothing yet").wait_for()
            settle(page)
            if title == "Overview":
                shoot(page, "empty")
        assert errors == []

"""The Predictions page and the Models page's live comparison in a real browser (headless
chromium), on conftest's populated store with a prediction log of a champion and its shadow.

Reuses test_browser.py's server, browser and screenshot helpers; the screenshots land in
tests/artifacts/ (app-predictions.png, app-predictions-picked.png, app-models-live.png).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from live_log import live_records, write_labels, write_live_log
from test_browser import ARTIFACTS, browser, open_app, settle, shoot, streamlit_server

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Home

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py

TALL = {"width": 1440, "height": 2600}
ROW_PX = 35  # a data editor row (and its header)


@pytest.fixture
def live_home(populated_home: Home) -> Home:
    records, labels = live_records(400, role="shadow", seed=3)
    write_live_log(populated_home.settings, records)
    write_labels(populated_home.settings, labels.head(320))
    return populated_home


def test_a_prediction_is_looked_up_by_link_and_picked_from_the_latest(
    browser: Any, live_home: Home
) -> None:
    with (
        streamlit_server(live_home.path) as url,
        open_app(browser, f"{url}/predictions?request_id=req-0042") as (page, errors),
    ):
        page.set_viewport_size(TALL)
        page.get_by_role("heading", name="Predictions", level=1).wait_for()
        page.get_by_role("tab", name="champion · v2").wait_for()
        page.get_by_role("tab", name="shadow · v1").wait_for()
        page.get_by_text("Trained by run train-02").wait_for()
        page.get_by_text("Table versions behind this model version").first.wait_for()
        page.get_by_role("heading", name="Latest predictions").wait_for()
        settle(page)
        shoot(page, "predictions")

        # Pick the newest prediction in the table (its selection column, first data row).
        grid = page.get_by_test_id("stDataFrame").last
        box = grid.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 16, box["y"] + ROW_PX + ROW_PX / 2)
        page.get_by_text("Request req-0399").wait_for()
        settle(page)
        assert "request_id=req-0399" in page.url
        shoot(page, "predictions-picked")

        page.get_by_role("tab", name="shadow · v1").click()
        page.get_by_text("Trained by run train-01").wait_for()
        assert errors == []


def test_the_models_page_draws_the_live_comparison(browser: Any, live_home: Home) -> None:
    with (
        streamlit_server(live_home.path) as url,
        open_app(browser, f"{url}/models") as (page, errors),
    ):
        page.set_viewport_size({"width": 1440, "height": 3600})
        page.get_by_role("heading", name="Models", level=1).wait_for()
        heading = page.get_by_role("heading", name="Live comparison")
        heading.wait_for()
        page.get_by_text("Paired requests").wait_for()
        page.get_by_text("95% bootstrap over 1000 resamples").wait_for()
        settle(page)
        shoot(page, "models-live-page")
        top = heading.bounding_box()
        assert top is not None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(ARTIFACTS / "app-models-live.png"),
            full_page=True,
            clip={"x": 0, "y": top["y"] - 24, "width": 1440, "height": 1000},
        )
        assert errors == []

"""The Data page in a real browser (headless chromium) on a store built by the real stages.

Reuses test_browser.py's server, browser and screenshot helpers; the screenshots land in
tests/artifacts/ (app-data.png, app-data-batch.png) for a person to look at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from test_browser import browser, go, open_app, settle, shoot, streamlit_server

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import RealLake

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py

TALL = {"width": 1440, "height": 3000}
FEAST_MS = 90_000


def test_the_data_page_draws_batches_and_feature_freshness_in_a_real_browser(
    browser: Any, real_lake: RealLake
) -> None:
    with (
        streamlit_server(real_lake.settings.home) as url,
        open_app(browser, url) as (page, errors),
    ):
        page.set_viewport_size(TALL)
        go(page, "Data")
        page.get_by_role("heading", name="Data", level=1).wait_for()
        # The rejected duplicate is the newest batch: its error shows first.
        page.get_by_test_id("stAlertContentError").filter(
            has_text=real_lake.rejected_message.split(":")[0]
        ).wait_for()
        page.get_by_role("heading", name="Feature freshness").wait_for()
        # The first read of the feature store imports Feast in the server: seconds, more so
        # on a busy machine.
        page.get_by_text("Red: rows built but not yet materialized").wait_for(timeout=FEAST_MS)
        assert page.get_by_test_id("stVegaLiteChart").count() == 2  # volumes, lag
        page.get_by_test_id("stDownloadButton").wait_for()
        settle(page)
        shoot(page, "data")

        # The quarantining batch: its soft rule, no error.
        page.get_by_test_id("stSelectbox").filter(has_text="Batch").click()
        page.get_by_role("option").filter(has_text="· committed ·").first.click()
        # (tables draw on a canvas: their text is not in the page to find)
        page.get_by_test_id("stMarkdown").filter(has_text=": committed").wait_for()
        page.get_by_text("Broken rules").wait_for()
        settle(page)
        assert page.get_by_test_id("stAlertContentError").count() == 0
        shoot(page, "data-batch")
        assert errors == []

"""The Models page's actions in a real browser (headless chromium): approve a pending promotion
request under the two-person rule, as a person would, and keep a screenshot.

Reuses test_browser.py's server, browser and screenshot helpers; the screenshot lands beside
theirs in tests/artifacts/ (app-models-actions.png) for a person to look at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from test_browser import browser, open_app, settle, shoot, streamlit_server

from loopline.registry.policy import request_promotion
from loopline.spec import load_spec
from loopline.store import Store

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Registry

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py

TALL = {"width": 1440, "height": 3600}
"""A viewport that holds the whole page (Streamlit scrolls inside it)."""


def test_an_approver_approves_a_pending_request_in_a_real_browser(
    browser: Any, two_person_home: Registry
) -> None:
    settings = two_person_home.home.settings
    store = Store.open(settings)
    try:
        request_promotion(
            store, load_spec(settings.use_case).promotion, model_name=two_person_home.model,
            version=two_person_home.passing, reason="v2 beats v1 on both windows",
            actor="alice",
        )  # fmt: skip
    finally:
        store.dispose()
    with (
        streamlit_server(two_person_home.home.path) as url,
        open_app(browser, f"{url}/models") as (page, errors),
    ):
        page.get_by_role("heading", name="Models", level=1).wait_for()
        page.get_by_role("heading", name="Promotion requests").wait_for()
        page.get_by_text("Newest alias move").wait_for()
        settle(page)
        sidebar = page.get_by_test_id("stSidebar")
        for label, value in (("Actor", "bob"), ("Role", "model-risk")):
            field = sidebar.get_by_role("textbox", name=label)
            field.fill(value)
            field.press("Enter")
            settle(page)
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("Approved request").wait_for()
        page.get_by_test_id("stMetricValue").filter(
            has_text=f"v{two_person_home.passing}"
        ).wait_for()
        page.get_by_text("No pending request.").wait_for()
        page.set_viewport_size(TALL)
        settle(page)
        shoot(page, "models-actions")
        assert errors == []

"""The Compare page and a training run's Evaluation tab in a real browser (headless chromium).

Reuses test_browser.py's server, browser and screenshot helpers; screenshots land beside
theirs in tests/artifacts/ (app-compare.png, app-runs-evaluation.png) for a person to look at.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from test_browser import WAIT_MS, browser, open_app, settle, shoot, streamlit_server

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import TrainingRuns

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py

TALL = {"width": 1440, "height": 3800}
"""A viewport that holds the whole page: Streamlit scrolls inside it, so a full-page
screenshot only shows what the viewport does."""


def settle_charts(page: Any, charts: Any) -> None:
    """`settle` for charts in a tab that is not the first (the hidden tabs' charts never
    draw): wait for the script run to end and for these charts to draw."""
    page.get_by_test_id("stStatusWidget").wait_for(state="detached", timeout=WAIT_MS)
    for i in range(charts.count()):
        charts.nth(i).locator("canvas, svg").first.wait_for(timeout=WAIT_MS)
    assert page.get_by_test_id("stException").count() == 0


def test_the_compare_page_overlays_learning_curves_in_a_real_browser(
    browser: Any, training_home: TrainingRuns
) -> None:
    runs = [training_home.leaves(7), training_home.leaves(63)]
    link = "/compare?" + urlencode([("runs", r) for r in runs])
    with (
        streamlit_server(training_home.home.path) as url,
        # A shared link is the first request: the picked runs come from the URL.
        open_app(browser, url + link) as (page, errors),
    ):
        page.get_by_role("heading", name="Compare runs", level=1).wait_for()
        page.get_by_role("heading", name="Learning curves").wait_for()
        page.get_by_test_id("stVegaLiteChart").nth(3).wait_for()
        assert page.get_by_test_id("stVegaLiteChart").count() == 4  # one chart per curve key
        page.set_viewport_size({"width": 1440, "height": 2200})
        settle(page)
        # Tables draw on a canvas; the caption says what the diff table holds.
        page.get_by_text(
            re.compile(r"^2 of \d+ params differ \(the equal ones are hidden\)$")
        ).wait_for()
        shoot(page, "compare")
        assert errors == []


def test_the_evaluation_tab_draws_a_training_runs_charts_in_a_real_browser(
    browser: Any, training_home: TrainingRuns
) -> None:
    link = "/runs?" + urlencode({"query": "params.lightgbm.num_leaves = 31"})
    with (
        streamlit_server(training_home.home.path) as url,
        open_app(browser, url + link) as (page, errors),
    ):
        page.get_by_role("heading", name="train run train-31").wait_for()
        page.get_by_role("tab", name="Evaluation").click()
        page.get_by_role("heading", name="Fairness").wait_for()
        page.get_by_text("Worst selection rate ratio").wait_for()
        page.set_viewport_size(TALL)
        evaluation = page.get_by_role("tabpanel", name="Evaluation")
        # importance, SHAP, calibration, ROC, PR, slices, 3 fairness measures
        charts = evaluation.get_by_test_id("stVegaLiteChart")
        charts.nth(8).wait_for()
        assert charts.count() == 9
        settle_charts(page, charts)
        shoot(page, "runs-evaluation")
        assert errors == []

"""The Predictions page and the Models page's live comparison, on a real prediction log.

The store is conftest's populated one (fraud-detector v2 champion trained by run train02 on
transactions v1, labels v0 and customer_stats v3; v1 by train01); the log holds 200 requests
scored by v2 as champion and v1 in shadow (`live_log`), with labels for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from live_log import live_records, write_labels, write_live_log
from streamlit.testing.v1 import AppTest

from loopline.ui import predictions as pq

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Home

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
PREDICTIONS = "views/predictions.py"
MODELS = "views/models.py"
TIMEOUT_S = 60


@pytest.fixture
def live_home(populated_home: Home) -> Home:
    records, labels = live_records(200, role="shadow", seed=3)
    write_live_log(populated_home.settings, records)
    write_labels(populated_home.settings, labels)
    return populated_home


def open_page(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frames(at: AppTest, having: str) -> list[pl.DataFrame]:
    return [pl.from_pandas(d.value) for d in at.dataframe if having in d.value.columns]


def prose(at: AppTest) -> str:
    kinds = ("markdown", "caption", "info", "warning", "error")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


@pytest.mark.usefixtures("live_home")
def test_a_shared_link_shows_the_prediction_and_its_lineage() -> None:
    at = open_page(PREDICTIONS, request_id="req-0007")
    assert at.text_input(key="request_id").value == "req-0007"
    assert [t.label for t in at.tabs] == ["champion · v2", "shadow · v1"]
    assert {"Score", "Role", "Model", "Latency"} <= set(metrics(at))
    text = prose(at)
    assert "model **fraud-detector** version **2** (`mv2`)" in text
    assert "served as **champion** under alias `champion`" in text
    assert "feature service `fraud_v1`" in text and "event `tx-0007`" in text
    links = [(link.proto.page, link.proto.query_string) for link in at.get("page_link")]
    # One per tab: the champion's run, then the shadow's, each found by the Runs page's query.
    assert links == [
        ("runs", "query=id+%3D+%27train02%27"),
        ("runs", "query=id+%3D+%27train01%27"),
    ]
    datasets = frames(at, "table_version")[0]
    assert sorted(datasets["dataset"]) == ["customer_stats", "labels", "transactions"]
    served = frames(at, "value")[0]
    assert dict(served.iter_rows())["customer_txn_count_7d"] == str(7 % 9)
    rows = frames(at, "age_h")[0]
    assert rows["view"].to_list() == ["customer_activity", "merchant_stats"]
    assert rows["age_h"][0] == pytest.approx(17 / 60)
    latest = frames(at, "latency_ms")[0]
    assert latest.height == 50 and latest["request_id"][0] == "req-0199"


@pytest.mark.usefixtures("live_home")
def test_an_unknown_request_id_is_a_warning_and_the_latest_list_stays() -> None:
    at = open_page(PREDICTIONS, request_id="nope")
    assert any("No prediction with request id `nope` is logged." in w.value for w in at.warning)
    assert frames(at, "latency_ms")[0].height == 50


@pytest.mark.usefixtures("populated_home")
def test_an_empty_log_shows_the_friendly_message() -> None:
    at = open_page(PREDICTIONS)
    assert any("no prediction is logged in the last week" in i.value for i in at.info)


@pytest.mark.usefixtures("live_home")
def test_the_models_page_compares_the_champion_with_its_shadow() -> None:
    at = open_page(MODELS)
    shown = metrics(at)
    assert shown["Paired requests"] == "200"
    assert shown["Same decision"].endswith("%") and float(shown["KS distance"]) > 0
    specs = "\n".join(c.proto.spec for c in at.get("vega_lite_chart")).replace(" ", "")
    assert '"share"' in specs and '"shadow"' in specs
    figures = frames(at, "figure")[0]
    assert figures["figure"].to_list()[:3] == ["version", "requests", "mean score"]
    row = figures.filter(pl.col("figure") == "average_precision (95% interval)").row(0, named=True)
    assert " to " in row["champion"] and " to " in row["shadow"]
    assert "95% bootstrap over 1000 resamples" in prose(at)
    at.selectbox(key="models.live_role").set_value("canary").run()
    assert any("no canary prediction of fraud-detector" in i.value for i in at.info)


@pytest.mark.usefixtures("populated_home")
def test_the_models_page_says_why_there_is_no_live_comparison() -> None:
    at = open_page(MODELS)
    assert any("no prediction of fraud-detector is logged" in i.value for i in at.info)
    assert "Paired requests" not in metrics(at)


def test_latest_predictions_and_detail_on_an_empty_log(populated_home: Home) -> None:
    assert pq.latest_predictions(populated_home.settings).schema == pl.Schema(pq.LATEST_SCHEMA)
    assert pq.prediction_detail(populated_home.settings, request_id="x") is None
    assert pq.prediction_detail(populated_home.settings, request_id="  ") is None


@pytest.mark.usefixtures("live_home")
def test_the_run_link_opens_the_runs_page_on_that_run() -> None:
    at = open_page("views/runs.py", query="id = 'train02'")
    assert any("1 matching run(s)" in c.value for c in at.caption)

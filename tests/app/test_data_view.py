"""The Data page: ingest batches with their contract results, and feature freshness.

Two stores: the populated one of conftest (batches written as rows, no feature store), and a
real one (demo data ingested through the ingest stage, one batch quarantining a row and one
rejected, features built and materialized through Feast), whose freshness must read exactly
what `feature_status` reports.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from loopline.spec import load_spec
from loopline.stages.features import feature_status
from loopline.store.db import Store
from loopline.ui import data_queries as dq

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Home, RealLake

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
PAGE = "views/data.py"
TIMEOUT_S = 60  # the first read of the feature store imports Feast
SPEC = load_spec("fraud")


def open_data_page() -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S).run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, f"metric {label!r}: {[m.label for m in at.metric]}"
    return values[0]


def frame(at: AppTest, *, having: str) -> pl.DataFrame:
    """The one table on the page with a column named `having`."""
    found = [pl.from_pandas(d.value) for d in at.dataframe if having in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a '{having}' column"
    return found[0]


def chart_specs(at: AppTest) -> str:
    return "\n".join(chart.proto.spec for chart in at.get("vega_lite_chart")).replace(" ", "")


# --- the populated store: batches as rows ----------------------------------------------------


@pytest.mark.usefixtures("populated_home")
def test_the_batches_table_counts_every_outcome_and_draws_them_stacked() -> None:
    at = open_data_page()
    assert metric(at, "Batches") == "4"
    assert metric(at, "Rows accepted") == f"{5000 + 5200 + 9800:,}"
    assert metric(at, "Rows quarantined") == "40"
    assert metric(at, "Batches rejected") == "1"
    batches = frame(at, having="rows_quarantined")
    datasets = ["transactions", "labels", "transactions", "transactions"]  # ties: by id
    assert batches["dataset"].to_list() == datasets
    assert batches["status"].to_list()[0] == "rejected"  # newest first
    assert batches["rows_rejected"].to_list() == [1200, 0, 0, 0]
    specs = chart_specs(at)
    assert '"field":"outcome"' in specs and '"quarantined"' in specs, "no batch volume chart"


@pytest.mark.usefixtures("populated_home")
def test_the_newest_batch_is_rejected_and_shows_its_hard_rule_with_an_example() -> None:
    at = open_data_page()
    assert any("3 rows break hard rules" in e.value for e in at.error)
    rules = frame(at, having="severity")
    assert rules.row(0, named=True) == {
        "column": "amount",
        "rule": "not_null",
        "severity": "hard",
        "failures": 3,
        "examples": "null (tx-day3.csv:17)",
    }
    assert frame(at, having="sha256")["path"].to_list() == ["/raw/tx-day3.csv"]


@pytest.mark.usefixtures("populated_home")
def test_picking_a_batch_shows_its_quarantine_rule_and_filters_narrow_the_list() -> None:
    at = open_data_page()
    picker = next(s for s in at.selectbox if s.label == "Batch")
    at = picker.set_value("batch-tx1").run()
    assert not at.exception
    rules = frame(at, having="severity")
    assert rules["rule"].to_list() == ["between 0 and 23"]
    assert rules["examples"].to_list() == ["25 (tx-day2.csv:4)"]
    assert not at.error

    at = next(m for m in at.multiselect if m.label == "Dataset").set_value(["labels"]).run()
    assert metric(at, "Batches") == "1"
    assert frame(at, having="rows_quarantined")["dataset"].to_list() == ["labels"]
    at = next(m for m in at.multiselect if m.label == "Status").set_value(["rejected"]).run()
    assert any("No batch matches" in i.value for i in at.info)


@pytest.mark.usefixtures("populated_home")
def test_without_a_registered_feature_view_freshness_says_what_to_run() -> None:
    at = open_data_page()
    assert any("loopline features build" in c.value for c in at.caption)
    views = frame(at, having="table_watermark")
    assert sorted(views["view"]) == sorted(t.name for t in SPEC.features.tables)


# --- pure functions ---------------------------------------------------------------------------


def test_rules_read_hard_first_then_by_failures() -> None:
    rules = {
        "results": [
            {"column": "a", "rule": "r1", "severity": "soft", "failures": 2, "examples": []},
            {"column": "b", "rule": "r2", "severity": "soft", "failures": 9, "examples": []},
            {"column": "c", "rule": "r3", "severity": "hard", "failures": 1, "examples": []},
        ]
    }
    assert dq.rule_table(rules)["column"].to_list() == ["c", "b", "a"]
    assert dq.rule_table({}).columns == list(dq.RULE_SCHEMA)


def test_batch_volumes_keep_only_outcomes_with_rows(populated_home: Home) -> None:
    store = Store.open(populated_home.settings)
    try:
        volumes = dq.batch_volumes(dq.batches(store))
    finally:
        store.dispose()
    by_batch = {(r["id"], r["outcome"]): r["rows"] for r in volumes.iter_rows(named=True)}
    assert by_batch == {
        ("batch-tx0", "accepted"): 5000,
        ("batch-tx1", "accepted"): 5200,
        ("batch-tx1", "quarantined"): 40,
        ("batch-lb0", "accepted"): 9800,
        ("batch-tx2", "rejected"): 1200,
    }


def test_freshness_measures_lag_and_pending_hours_against_now() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    status = {
        "views": [
            {
                "view": "v",
                "registered": True,
                "online": True,
                "watermark": (now - timedelta(hours=30)).isoformat(),
                "table_version": 4,
                "table_rows": 100,
                "table_watermark": (now - timedelta(hours=6)).isoformat(),
            },
            {"view": "w", "registered": False, "watermark": None},
        ]
    }
    table = dq.freshness_table(status, now=now)
    assert table.columns == list(dq.FRESHNESS_SCHEMA)
    v, w = table.row(0, named=True), table.row(1, named=True)
    assert (v["lag_h"], v["pending_h"], v["table_version"]) == (30.0, 24.0, 4)
    assert (w["registered"], w["lag_h"], w["pending_h"]) == (False, None, None)


def test_a_bad_limit_is_refused(empty_home: Home) -> None:
    store = Store.open(empty_home.settings)
    try:
        with pytest.raises(ValueError, match="limit: must be positive"):
            dq.batches(store, limit=0)
        assert dq.batches(store).columns == list(dq.BATCH_SCHEMA)
        assert dq.batch_detail(store, batch_id="missing") is None
    finally:
        store.dispose()


# --- a real store: the ingest stage, then Feast (conftest's `real_lake`) ----------------------


def test_real_batches_show_the_quarantined_row_and_the_rejected_duplicate(
    real_lake: RealLake,
) -> None:
    at = open_data_page()
    store = Store.open(real_lake.settings)
    try:
        expected = dq.batches(store)
    finally:
        store.dispose()
    batches = frame(at, having="rows_quarantined")
    assert batches["status"].to_list() == expected["status"].to_list()
    assert batches["status"][0] == "rejected" and batches["status"][1] == "committed"
    assert batches["rows_quarantined"][1] == 1 and batches["rows_accepted"][1] == 39
    assert metric(at, "Batches rejected") == "1"
    assert any(real_lake.rejected_message.split(":")[0] in e.value for e in at.error)
    assert [b.label for b in at.get("download_button")] == ["Download the batch report (JSON)"]

    picker = next(s for s in at.selectbox if s.label == "Batch")
    at = picker.set_value(expected["id"][1]).run()
    rules = frame(at, having="severity")
    assert set(rules["severity"]) == {"soft"} and rules["failures"].max() == 1
    assert frame(at, having="sha256")["path"].str.ends_with("late.csv").all()


def test_real_freshness_is_what_the_feature_store_reports(real_lake: RealLake) -> None:
    at = open_data_page()
    status = feature_status(real_lake.settings, SPEC)
    shown = frame(at, having="online_watermark").sort("view")
    expected = dq.freshness_table(status).sort("view")
    assert shown["view"].to_list() == [t.name for t in sorted(SPEC.features.tables,
                                                               key=lambda t: t.name)]  # fmt: skip
    assert shown["registered"].all() and shown["online"].all()
    assert shown["table_version"].to_list() == expected["table_version"].to_list()
    assert shown["table_rows"].to_list() == expected["table_rows"].to_list()
    watermarks = [v["watermark"] for v in sorted(status["views"], key=lambda v: v["view"])]
    assert [
        w.isoformat() if w is not None else None for w in shown["online_watermark"].to_list()
    ] == watermarks
    assert metric(at, "Views served") == str(len(SPEC.features.tables))
    assert metric(at, "Not yet materialized") == "0"
    assert '"title":"hoursbehindnow"' in chart_specs(at), "no feature lag chart"

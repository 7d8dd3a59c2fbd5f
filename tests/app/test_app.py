"""The control panel under Streamlit's AppTest: every page, empty and populated store.

Assertions read rendered elements (metrics, tables, messages), so a page that renders the
wrong champion, drops a table or shows a traceback fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from loopline.store.db import Store
from loopline.ui import queries as q

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Facts, Home

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
PAGES = [
    "views/overview.py",
    "views/runs.py",
    "views/models.py",
    "views/monitoring.py",
    "views/data.py",
]
TIMEOUT_S = 30


def open_page(page: str) -> AppTest:
    """Run the app's entry point, switch to `page` and render it."""
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    """The value of the one metric with this label."""
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, f"metric {label!r}: {[m.label for m in at.metric]}"
    return values[0]


def chart_specs(at: AppTest) -> str:
    """The Vega-Lite specs of the page's charts, as one JSON text."""
    return "\n".join(chart.proto.spec for chart in at.get("vega_lite_chart"))


def text(at: AppTest) -> str:
    """Every piece of prose on the page (markdown, captions, headings, messages)."""
    kinds = ("markdown", "caption", "title", "subheader", "info", "warning", "error")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


@pytest.mark.usefixtures("empty_home")
@pytest.mark.parametrize("page", PAGES)
def test_empty_store_shows_the_friendly_message(page: str) -> None:
    at = open_page(page)
    assert any("Nothing yet" in i.value and "loopline up" in i.value for i in at.info)
    assert not at.dataframe


@pytest.mark.usefixtures("populated_home")
def test_overview_shows_the_champion_its_metrics_and_promotion(facts: Facts) -> None:
    at = open_page(PAGES[0])
    assert facts.model in [s.value for s in at.subheader]
    assert metric(at, "Champion") == f"v{facts.champion_version}"
    assert metric(at, "average_precision") == f"{facts.champion_metrics['average_precision']:.4f}"
    assert "by bob" in text(at)
    counts = at.dataframe[0].value.set_index("kind")
    assert counts.loc["train", "completed"] == 2
    assert counts.loc["train", "failed"] == 1
    drift = at.dataframe[1].value
    assert drift["worst_feature"].tolist() == ["amount"]
    assert drift["drifted"].tolist() == [1]
    assert at.selectbox[0].value == "average_precision"  # the spec's primary metric
    assert '"field":"average_precision"' in chart_specs(at).replace(" ", "")
    assert any("1 open alert" in w.value for w in at.warning)


@pytest.mark.usefixtures("populated_home")
def test_runs_lists_every_run_and_filters_by_kind(facts: Facts) -> None:
    at = open_page(PAGES[1])
    listed = at.dataframe[0].value
    assert len(listed) == sum(facts.run_kinds.values())
    assert set(listed["kind"]) == set(facts.run_kinds)
    kind = next(m for m in at.multiselect if m.label == "Kind")
    kind.set_value(["train"]).run()
    listed = at.dataframe[0].value
    assert listed["kind"].tolist() == ["train"] * facts.run_kinds["train"]
    assert metric(at, "Status") == "failed"  # the newest train run is selected first


@pytest.mark.usefixtures("populated_home")
def test_runs_shows_a_selected_runs_params_metrics_and_history(facts: Facts) -> None:
    at = open_page(PAGES[1])
    run = next(s for s in at.selectbox if s.label == "Run")
    run.set_value("train02").run()
    assert not at.exception
    assert metric(at, "Status") == "completed"
    assert metric(at, "Duration") == "47.5 s"
    finals = at.dataframe[1].value.set_index("key")["value"].to_dict()
    assert finals == pytest.approx(facts.champion_metrics)
    assert '"learning_rate": 0.05' in at.json[0].value.replace("\n", "").replace("  ", "")
    assert '"field":"step"' in chart_specs(at).replace(" ", ""), "no learning-curve chart"
    assert "pf-train02" in text(at)


@pytest.mark.usefixtures("populated_home")
def test_runs_shows_the_error_of_a_failed_run() -> None:
    at = open_page(PAGES[1])
    next(s for s in at.selectbox if s.label == "Run").set_value("train03").run()
    assert [e.value for e in at.error] == ["KeyError: 'amount'"]


@pytest.mark.usefixtures("populated_home")
def test_models_shows_versions_lineage_gates_and_alias_history(facts: Facts) -> None:
    at = open_page(PAGES[2])
    assert metric(at, "Champion") == f"v{facts.champion_version}"
    versions, datasets, gates, aliases, events = (d.value for d in at.dataframe)
    assert versions["version"].tolist() == [2, 1]
    assert versions["gates"].tolist() == ["3/3", "3/3"]
    assert set(datasets["dataset"]) == {"transactions", "labels", "customer_stats"}
    assert datasets.set_index("dataset").loc["transactions", "table_version"] == 1
    assert gates["verdict"].tolist() == ["passed"] * 3
    assert gates.set_index("gate").loc["beats_champion", "threshold"] == pytest.approx(0.4003)
    assert dict(zip(aliases["alias"], aliases["version"], strict=True)) == {
        "champion": 2,
        "challenger": 2,
    }
    assert events["actor"].tolist() == ["bob", "loopline", "alice"]
    assert "fraud_v1" in text(at)


@pytest.mark.usefixtures("populated_home")
def test_models_switches_to_another_versions_lineage() -> None:
    at = open_page(PAGES[2])
    next(s for s in at.selectbox if s.label == "Version").set_value(1).run()
    assert not at.exception
    datasets = at.dataframe[1].value
    assert datasets.set_index("dataset").loc["transactions", "table_version"] == 0
    assert "Lineage of v1" in [s.value for s in at.subheader]


@pytest.mark.usefixtures("populated_home")
def test_monitoring_shows_drift_per_feature_and_open_alerts(facts: Facts) -> None:
    at = open_page(PAGES[3])
    assert metric(at, "Drifted in latest window") == "1"
    assert metric(at, "Features checked") == "4"
    assert metric(at, "Windows") == "3"
    alerts, latest = at.dataframe[0].value, at.dataframe[1].value
    assert alerts["message"].tolist() == ["amount drifted: PSI 0.31 > 0.2"]
    assert latest.set_index("feature").loc["amount", "drifted"]
    assert not latest.set_index("feature").loc["hour", "drifted"]
    assert '"field":"statistic"' in chart_specs(at).replace(" ", ""), "no drift chart"


def test_app_reports_an_unusable_store_instead_of_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    monkeypatch.setenv("LOOPLINE_DATABASE_URL", "nosuchdialect://nowhere/db")
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert any("Cannot open the metadata store" in e.value for e in at.error)


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"auc": 0.9, "n": 3}, {"auc": 0.9, "n": 3.0}),
        ({"auc": 0.9, "slices": {"a": 1}, "ok": True, "note": "x"}, {"auc": 0.9}),
        ({}, {}),
    ],
)
def test_scalar_metrics_keeps_numbers_only(metrics: dict, expected: dict) -> None:
    assert q.scalar_metrics(metrics) == expected


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # a learning curve beside its final value: the curve only
        ([("loss", 0, 0.1, True), ("loss", 1, 0.5, False), ("loss", 2, 0.3, False)], [1, 2]),
        # finals logged at several steps are their own history
        ([("acc", 0, 0.1, True), ("acc", 5, 0.2, True)], [0, 5]),
        # one value is no history
        ([("acc", 0, 0.1, True)], []),
    ],
)
def test_metric_history_picks_series_with_several_steps(rows: list, expected: list) -> None:
    frame = pl.DataFrame(
        rows,
        schema={"key": pl.String, "step": pl.Int64, "value": pl.Float64, "is_final": pl.Boolean},
        orient="row",
    )
    assert q.metric_history(frame)["step"].to_list() == expected


def test_queries_return_their_fixed_columns_on_an_empty_store(empty_home: Home) -> None:
    store = Store.open(empty_home.settings)
    try:
        assert q.champions(store).columns == list(q.CHAMPION_SCHEMA)
        assert q.model_versions(store).columns == list(q.VERSION_SCHEMA)
        assert q.runs(store).columns == list(q.RUN_SCHEMA)
        assert q.latest_drift(q.drift_results(store)).columns == list(q.DRIFT_SUMMARY_SCHEMA)
        assert q.run_detail(store, run_id="missing") is None
        with pytest.raises(ValueError, match="limit must be positive"):
            q.runs(store, limit=0)
    finally:
        store.dispose()

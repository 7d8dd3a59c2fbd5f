"""Run search, comparison and a training run's Evaluation tab under Streamlit's AppTest.

The store holds real training runs (`training_home` in conftest.py: LightGBM through the train
stage's `fit_and_record`, with its importance, SHAP and evaluation-report artifacts). The
assertions compare what the pages render with what the store and the artifacts hold.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.store.db import Store
from loopline.tracking import tracked_run
from loopline.ui import queries as q

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Home, TrainingRuns

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
RUNS, COMPARE = "views/runs.py", "views/compare.py"
TIMEOUT_S = 30


def open_page(page: str, **query_params: Any) -> AppTest:
    """Run the app on `page` (with URL query params, if any) and check it rendered."""
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    at.query_params.update(query_params)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget(at: AppTest, kind: str, label: str) -> Any:
    """The one widget of this kind with this label."""
    found = [w for w in at.get(kind) if w.label == label]
    assert len(found) == 1, f"{kind} {label!r}: {[w.label for w in at.get(kind)]}"
    return found[0]


def search(at: AppTest, text: str) -> AppTest:
    """Type a query into the Runs page's query box and rerun."""
    widget(at, "text_input", "Query").input(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def listed(at: AppTest) -> list[str]:
    """Names of the runs in the Runs page's result table (the first table), in order."""
    return at.dataframe[0].value["name"].tolist()


def charts(at: AppTest) -> dict[str, list[dict]]:
    """The data rows of the page's charts, by chart description (charts without one left out).

    Streamlit ships a chart's data frames beside its Vega-Lite spec (as Arrow); small inline
    data (threshold marks, reference lines) stays in the spec.
    """
    drawn = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if "description" not in spec:
            continue
        rows = [
            row
            for dataset in chart.proto.datasets
            for row in pl.read_ipc_stream(io.BytesIO(dataset.data.data)).to_dicts()
        ]
        drawn[spec["description"]] = rows + _inline_rows(spec)
    return drawn


def _inline_rows(spec: dict) -> list[dict]:
    rows = list(spec.get("data", {}).get("values", []))
    return rows + [row for layer in spec.get("layer", []) for row in _inline_rows(layer)]


def metric(at: AppTest, label: str) -> Any:
    """The one metric element with this label."""
    found = [m for m in at.metric if m.label == label]
    assert len(found) == 1, f"metric {label!r}: {[m.label for m in at.metric]}"
    return found[0]


def pick_run(at: AppTest, run_id: str) -> AppTest:
    """Select a run in the Runs page's run box."""
    widget(at, "selectbox", "Run").set_value(run_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --- search -------------------------------------------------------------------------------------


def test_a_query_on_a_param_finds_only_the_runs_that_have_it(training_home: TrainingRuns) -> None:
    at = open_page(RUNS)
    assert len(listed(at)) == len(training_home.ids)
    search(at, "params.lightgbm.num_leaves = 63")
    assert listed(at) == ["train-63"]
    assert "1 matching run(s)" in at.caption[0].value


def test_a_query_on_a_metric_keeps_the_runs_above_the_bar(training_home: TrainingRuns) -> None:
    auc = {name: m["roc_auc"] for name, m in training_home.metrics.items()}
    bar = sorted(auc.values())[0] + 1e-9  # between the lowest AUC and the others
    at = search(open_page(RUNS), f"metrics.roc_auc > {bar!r} and kind = 'train'")
    assert sorted(listed(at)) == sorted(n for n, v in auc.items() if v > bar)
    assert len(listed(at)) == len(auc) - 1
    assert at.dataframe[0].value["metrics.roc_auc"].gt(bar).all()


def test_the_kind_filter_joins_the_query(training_home: TrainingRuns) -> None:
    at = search(open_page(RUNS), "tags.team = 'risk'")
    assert len(listed(at)) == len(training_home.ids)
    widget(at, "multiselect", "Kind").set_value(["ingest"]).run()
    assert listed(at) == ["ingest-1"]
    assert "(tags.team = 'risk') and kind in ('ingest')" in at.caption[0].value


def test_sorting_by_a_metric_orders_the_runs_and_puts_runs_without_it_last(
    training_home: TrainingRuns,
) -> None:
    at = open_page(RUNS)
    widget(at, "selectbox", "Sort by").set_value("metrics.roc_auc").run()
    widget(at, "selectbox", "Order").set_value("asc").run()
    by_auc = sorted(training_home.metrics, key=lambda n: training_home.metrics[n]["roc_auc"])
    assert listed(at)[:3] == by_auc
    assert set(listed(at)[3:]) == {"ingest-1", "train-regression", "train-multiclass"}


def test_pages_follow_the_page_token_forward_and_back(training_home: TrainingRuns) -> None:
    at = open_page(RUNS)
    widget(at, "number_input", "Page size").set_value(4).run()
    first = listed(at)
    assert len(first) == 4
    assert widget(at, "button", "Previous page").disabled
    widget(at, "button", "Next page").click().run()
    second = listed(at)
    assert len(second) == len(training_home.ids) - 4
    assert set(first) | set(second) == set(training_home.ids)
    assert "page 2 · runs 5-6" in at.caption[0].value
    assert widget(at, "button", "Next page").disabled
    widget(at, "button", "Previous page").click().run()
    assert listed(at) == first


@pytest.mark.parametrize(
    ("query", "message", "caret_at"),
    [
        ("kind = 'train' and status = 'done'", "position 29 near \"'done'\": unknown status", 28),
        ("metrics.roc_auc >", "position 18: expected a value", 17),
        ("name = 'x'; drop table runs", "unexpected character ';' (statements cannot be", 10),
        ("paramz.num_leaves = 63", "unknown field 'paramz.num_leaves'", 0),
    ],
)
def test_a_bad_query_shows_its_error_and_position_and_the_page_recovers(
    training_home: TrainingRuns, query: str, message: str, caret_at: int
) -> None:
    at = search(open_page(RUNS), query)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and message in errors[0], errors
    pointer = at.code[0].value.split("\n")
    assert pointer == [query, " " * caret_at + "^"]
    assert not at.dataframe  # no run list for a query that did not run
    search(at, "")  # fixing the query brings the list back; the store is untouched
    assert not at.error
    assert len(listed(at)) == len(training_home.ids)
    at.switch_page("views/models.py").run()
    assert not at.exception


@pytest.mark.usefixtures("training_home")
def test_a_bad_sort_field_is_an_error_too() -> None:
    at = open_page(RUNS, sort="metrics.")  # typed sort fields come in like this one, bound
    assert widget(at, "selectbox", "Sort by").value == "metrics."
    assert [e.value for e in at.error] == [
        "Sort by: invalid run query at position 9 near ' ': expected a name after '.'"
    ]


# --- compare ------------------------------------------------------------------------------------


def test_compare_shows_only_the_params_that_differ(training_home: TrainingRuns) -> None:
    at = open_page(COMPARE)
    assert any("Pick at least two runs" in i.value for i in at.info)
    runs = [training_home.leaves(7), training_home.leaves(63)]
    widget(at, "multiselect", "Runs").set_value(runs).run()
    assert not at.exception
    listed_runs, params, metrics = (d.value for d in at.dataframe)
    assert listed_runs["name"].tolist() == ["train-7", "train-63"]
    assert params["key"].tolist() == ["lightgbm.num_leaves", "overrides.num_leaves"]
    assert params.iloc[:, 1].tolist() == ["7", "7"]
    assert params.iloc[:, 2].tolist() == ["63", "63"]
    by_key = metrics.set_index("key")
    for column, name in ((1, "train-7"), (2, "train-63")):
        assert by_key.iloc[:, column - 1].to_dict() == pytest.approx(training_home.metrics[name])
    curves = charts(at)
    assert set(curves) == {
        f"{k} per run"
        for k in ("train_auc", "valid_auc", "train_binary_logloss", "valid_binary_logloss")
    }
    runs_drawn = {row["run"] for row in curves["valid_auc per run"]}
    assert runs_drawn == {f"train-7 ({runs[0][:8]})", f"train-63 ({runs[1][:8]})"}


def test_compare_shows_every_param_on_request(training_home: TrainingRuns) -> None:
    at = open_page(COMPARE, runs=[training_home.leaves(7), training_home.leaves(31)])
    assert len(at.dataframe[1].value) == 2  # the runs came from the URL
    widget(at, "toggle", "Show every param").set_value(True).run()
    params = at.dataframe[1].value.set_index("key")
    assert len(params) > 50  # LightGBM's resolved params, defaults included
    assert params.loc["lightgbm.learning_rate"].tolist() == ["0.05", "0.05"]
    assert params.loc["lightgbm.num_leaves"].tolist() == ["7", "31"]


def test_compare_keeps_a_bad_query_from_breaking_the_page(training_home: TrainingRuns) -> None:
    at = open_page(COMPARE)
    widget(at, "text_input", "Query").input("metrics.roc_auc > 'high'").run()
    assert not at.exception
    assert len(at.error) == 1 and "metrics are numbers" in at.error[0].value
    widget(at, "text_input", "Query").input("name = 'train-7' or name = 'train-31'").run()
    offered = widget(at, "multiselect", "Runs").options
    assert len(offered) == 2
    assert all(("train-7 ·" in o) != ("train-31 ·" in o) for o in offered), offered


@pytest.mark.usefixtures("empty_home")
def test_compare_on_an_empty_store_shows_the_friendly_message() -> None:
    at = open_page(COMPARE)
    assert any("Nothing yet" in i.value for i in at.info)


# --- the Evaluation tab -------------------------------------------------------------------------


def _artifact(home: Home, run_id: str, name: str) -> bytes:
    store = Store.open(home.settings)
    try:
        detail = q.run_detail(store, run_id=run_id)
    finally:
        store.dispose()
    assert detail is not None
    return ArtifactStore(home.settings.artifacts_dir).get_bytes(detail.artifacts[name])


def test_the_evaluation_tab_charts_a_binary_training_run(training_home: TrainingRuns) -> None:
    run_id = training_home.leaves(31)
    report = json.loads(_artifact(training_home.home, run_id, "evaluation_report"))
    importance = pl.read_parquet(_artifact(training_home.home, run_id, "feature_importance"))
    at = pick_run(open_page(RUNS), run_id)
    assert [t.label for t in at.tabs] == [
        "Metrics",
        "Evaluation",
        "Params",
        "Summary & environment",
    ]

    assert metric(at, "roc_auc").value == f"{training_home.metrics['train-31']['roc_auc']:.4f}"
    threshold = report["extras"]["threshold"]["threshold"]
    assert metric(at, "Decision threshold").value == f"{threshold:.3f}"

    drawn = charts(at)
    assert {
        "Feature importance (gain)",
        "SHAP: mean |contribution|",
        "Calibration",
        "ROC curve",
        "Precision-recall curve",
        "average_precision per slice",  # the spec's primary metric first
        "Selection rate per country",
        "True positive rate per country",
        "False positive rate per country",
    } <= set(drawn)
    gains = {r["feature"]: r["gain"] for r in drawn["Feature importance (gain)"]}
    assert gains == pytest.approx(dict(importance.select("feature", "gain").iter_rows()))
    marks = [r for r in drawn["ROC curve"] if "label" in r]
    assert marks == [
        {
            "x": report["extras"]["threshold"]["fpr"],
            "y": report["extras"]["threshold"]["recall"],
            "label": f"threshold {threshold:.3f}",
        }
    ]

    # Fairness: the highlighted group is the one with the lowest ratio to the best group.
    (country,) = report["fairness"]
    for measure, title in q.MEASURE_TITLES.items():
        groups = [g for g in country["groups"] if not g["small"]] or country["groups"]
        worst = min(groups, key=lambda g: g[f"{measure}_ratio"])
        rows = drawn[f"{title} per country"]
        assert [r["group"] for r in rows if r["role"] == "worst ratio"] == [worst["group"]]
        shown = metric(at, f"Worst {title.lower()} ratio")
        assert shown.value == f"{country['worst'][f'{measure}_ratio']:.3f}"
        assert worst["group"] in shown.delta
    slices = at.dataframe[2].value  # run list, final metrics, then the slice table
    assert len(slices) == len(report["slices"])


@pytest.mark.parametrize(
    ("name", "chart"), [("train-regression", "Residuals"), ("train-multiclass", "Confusion matrix")]
)
def test_the_evaluation_tab_charts_regression_and_multiclass_runs(
    training_home: TrainingRuns, name: str, chart: str
) -> None:
    at = pick_run(open_page(RUNS), training_home.ids[name])
    drawn = charts(at)
    assert chart in drawn
    assert "Feature importance (gain)" not in drawn
    assert any("No feature importance recorded" in c.value for c in at.caption)


def test_runs_without_evaluation_artifacts_have_no_evaluation_tab(
    training_home: TrainingRuns,
) -> None:
    at = pick_run(open_page(RUNS), training_home.ids["ingest-1"])
    assert [t.label for t in at.tabs] == ["Metrics", "Params", "Summary & environment"]


def test_an_unreadable_artifact_is_reported_not_raised(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = Store.open(settings)
    try:
        artifacts = ArtifactStore(settings.artifacts_dir)
        with tracked_run(
            store, artifacts, kind="train", use_case="fraud", project_dir=tmp_path
        ) as run:
            run.log_artifact_bytes("evaluation_report", b"{not json", media_type="application/json")
            run.log_artifact_bytes(
                "shap_summary", b'{"rows": 3, "features": []}', media_type="application/json"
            )
        evaluation = q.run_evaluation(
            store, run_id=run.run_id, artifacts_dir=str(settings.artifacts_dir)
        )
        assert q.run_evaluation(store, run_id="nosuchrun", artifacts_dir=str(tmp_path)) is None
    finally:
        store.dispose()
    assert evaluation is not None
    assert len(evaluation.problems) == 1
    assert evaluation.problems[0].startswith("evaluation_report (sha256:")
    assert evaluation.task is None and evaluation.shap.is_empty()


# --- the pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kinds", "statuses", "expected"),
    [
        ((), (), ""),
        (("train",), (), "kind in ('train')"),
        (("o'neil", "x"), ("failed",), "kind in ('o''neil', 'x') and status in ('failed')"),
        ((), ("failed", "completed"), "(status in ('failed') or status like 'completed')"),
        ((), ("a_b%",), "status like 'a\\_b\\%'"),
    ],
)
def test_filter_query_quotes_values_and_matches_old_statuses_literally(
    kinds: tuple, statuses: tuple, expected: str
) -> None:
    assert q.filter_query(kinds=kinds, statuses=statuses) == expected


@pytest.mark.parametrize(
    ("query", "filters", "expected"),
    [
        ("", "", ""),
        ("  a = 1 ", "", "a = 1"),
        ("", "kind in ('x')", "kind in ('x')"),
        ("a = 1 or b = 2", "kind in ('x')", "(a = 1 or b = 2) and kind in ('x')"),
    ],
)
def test_combine_queries_keeps_the_typed_query_whole(
    query: str, filters: str, expected: str
) -> None:
    assert q.combine_queries(query, filters) == expected


def test_the_legacy_status_filter_runs_against_a_real_store(populated_home: Home) -> None:
    store = Store.open(populated_home.settings)
    try:
        found = q.search(store, kinds=["train"], statuses=["completed"])
    finally:
        store.dispose()
    assert sorted(found.runs["name"].to_list()) == ["train-01", "train-02"]
    assert found.total == 2


@pytest.mark.parametrize(
    ("query", "position", "expected"),
    [("abc", 1, "abc\n ^"), ("abc", 3, "abc\n   ^"), ("abc", None, None)],
)
def test_query_pointer_puts_the_caret_under_the_position(
    query: str, position: int | None, expected: str | None
) -> None:
    assert q.query_pointer(query, position) == expected

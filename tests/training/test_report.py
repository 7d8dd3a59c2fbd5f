"""loopline.training.report: slices, fairness by hand, undefined metrics, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from loopline.spec import CostMatrix, EvaluationSpec, Segment
from loopline.training.metrics import choose_threshold, compute_metrics
from loopline.training.report import (
    NON_BINARY_FAIRNESS_NOTE,
    NULL_LABEL,
    bin_labels,
    evaluation_report,
    report_to_frames,
)

BINARY = "binary_classification"
BINARY_METRICS = ["roc_auc", "average_precision", "log_loss", "brier"]
AMOUNT_BINS = [0, 20, 100, 500, 2000]


def holdout(n: int = 3000, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    """A fraud-like holdout with nulls, out-of-range amounts and a tiny country."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    amount = rng.exponential(150, n)
    amount[:7] = -3.0
    amount[7:10] = 2500.0
    frame = pl.DataFrame(
        {
            "label": label,
            "channel": rng.choice(["web", "pos", "app"], n).tolist(),
            "amount": amount,
            "country": rng.choice(["FR", "DE", "LU"], n, p=[0.6, 0.39, 0.01]).tolist(),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 50 == 0)
        .then(None)
        .otherwise(pl.col("channel"))
        .alias("channel"),
        pl.when(pl.int_range(pl.len()) == 11)
        .then(None)
        .otherwise(pl.col("amount"))
        .alias("amount"),
    )
    pred = np.clip(rng.random(n) * 0.6 + label * 0.3, 0, 1)
    return frame, pred


FRAUD_EVALUATION = EvaluationSpec(
    segments=[
        Segment(name="channel", column="channel"),
        Segment(name="amount_band", column="amount", bins=AMOUNT_BINS),
    ],
    sensitive=["country"],
    costs=CostMatrix(false_positive=1.0, false_negative=25.0),
)


def report_for(frame, pred, evaluation=FRAUD_EVALUATION, **kwargs):
    return evaluation_report(
        frame,
        task=kwargs.pop("task", BINARY),
        y_true_col="label",
        pred=pred,
        evaluation=evaluation,
        metrics=kwargs.pop("metrics", BINARY_METRICS),
        **kwargs,
    )


def test_overall_metrics_and_json() -> None:
    frame, pred = holdout()
    report = report_for(frame, pred)
    y = frame["label"].to_numpy()
    assert report["overall"]["rows"] == frame.height
    assert report["overall"]["roc_auc"] == pytest.approx(roc_auc_score(y, pred))
    assert report["overall"]["brier"] == pytest.approx(brier_score_loss(y, pred))
    assert report["notes"] == []
    assert report["extras"]["threshold"] == {
        **choose_threshold(y, pred, FRAUD_EVALUATION.costs),
        "source": "costs",
    }
    json.dumps(report, allow_nan=False)


def test_slices_partition_the_rows_and_match_their_rows() -> None:
    frame, pred = holdout()
    report = report_for(frame, pred)
    y = frame["label"].to_numpy()
    for segment in ("channel", "amount_band"):
        slices = [s for s in report["slices"] if s["segment"] == segment]
        assert sum(s["rows"] for s in slices) == frame.height
    channel = {s["value"]: s for s in report["slices"] if s["segment"] == "channel"}
    assert list(channel) == ["app", "pos", "web", NULL_LABEL]
    web = (frame["channel"] == "web").fill_null(False).to_numpy()
    assert channel["web"]["rows"] == int(web.sum())
    assert channel["web"]["brier"] == pytest.approx(brier_score_loss(y[web], pred[web]))
    nulls = frame["channel"].is_null().to_numpy()
    assert channel[NULL_LABEL]["rows"] == int(nulls.sum()) == 60
    assert channel[NULL_LABEL]["roc_auc"] == pytest.approx(roc_auc_score(y[nulls], pred[nulls]))


def test_bins_are_labelled_including_out_of_range_values() -> None:
    amounts = [-5.0, 0.0, 19.99, 20.0, 99.0, 100.0, 499.0, 2000.0, 5000.0, None, float("nan")]
    frame = pl.DataFrame(
        {"label": [0, 1] * 5 + [1], "amount": amounts}, schema_overrides={"amount": pl.Float64}
    )
    pred = np.linspace(0.05, 0.95, len(amounts))
    evaluation = EvaluationSpec(
        segments=[Segment(name="amount_band", column="amount", bins=AMOUNT_BINS)],
        min_slice_rows=2,
    )
    report = report_for(frame, pred, evaluation, metrics=["brier"])
    got = {s["value"]: s["rows"] for s in report["slices"]}
    assert list(got) == [
        "(-inf, 0)",
        "[0, 20)",
        "[20, 100)",
        "[100, 500)",
        "[500, 2000)",
        "[2000, inf)",
        NULL_LABEL,
    ]
    assert got == {
        "(-inf, 0)": 1,
        "[0, 20)": 2,
        "[20, 100)": 2,
        "[100, 500)": 2,
        "[500, 2000)": 0,
        "[2000, inf)": 2,
        NULL_LABEL: 2,
    }
    by_value = {s["value"]: s for s in report["slices"]}
    assert by_value["[500, 2000)"]["brier"] is None  # empty declared bin: reported, no metrics
    assert by_value["(-inf, 0)"]["small"] is True and by_value["[0, 20)"]["small"] is False
    # rows 7 and 8 (2000 and 5000) land in the open top bin
    expected = brier_score_loss([1, 0], pred[7:9])
    assert by_value["[2000, inf)"]["brier"] == pytest.approx(expected)


def test_open_bins_without_rows_are_left_out_and_labels_format_edges() -> None:
    frame = pl.DataFrame({"label": [0, 1], "score": [1, 2]})
    evaluation = EvaluationSpec(segments=[Segment(name="s", column="score", bins=[0, 0.5, 10])])
    report = report_for(frame, np.array([0.2, 0.8]), evaluation, metrics=["brier"])
    assert [s["value"] for s in report["slices"]] == ["[0, 0.5)", "[0.5, 10)"]
    assert bin_labels([0.25, 1e20]) == ["(-inf, 0.25)", "[0.25, 1e+20)", "[1e+20, inf)"]


def test_undefined_slice_metrics_are_none() -> None:
    frame = pl.DataFrame({"label": [1, 1, 0, 1], "channel": ["a", "a", "b", "b"]})
    evaluation = EvaluationSpec(segments=[Segment(name="channel", column="channel")])
    report = report_for(frame, np.array([0.9, 0.4, 0.3, 0.8]), evaluation)
    a, b = report["slices"]
    assert a["value"] == "a" and a["roc_auc"] is None and a["average_precision"] is None
    assert a["brier"] == pytest.approx(brier_score_loss([1, 1], [0.9, 0.4]))
    assert b["roc_auc"] == 1.0
    assert a["small"] and b["small"]  # default min_slice_rows is 30
    json.dumps(report, allow_nan=False)


def test_overall_undefined_metric_is_none_with_a_note() -> None:
    frame = pl.DataFrame({"label": [1, 1, 1]})
    report = report_for(frame, np.array([0.9, 0.4, 0.3]), EvaluationSpec())
    assert report["overall"]["roc_auc"] is None
    assert report["overall"]["brier"] is not None
    assert any("roc_auc needs both classes" in note for note in report["notes"])
    assert report["extras"]["roc"] is None
    json.dumps(report, allow_nan=False)


def fairness_frame() -> tuple[pl.DataFrame, np.ndarray]:
    """Groups A and B (4 rows each), C (2 negatives, no positives)."""
    frame = pl.DataFrame(
        {
            "label": [1, 1, 0, 0, 1, 1, 0, 0, 0, 0],
            "group": ["A"] * 4 + ["B"] * 4 + ["C"] * 2,
        }
    )
    pred = np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.2, 0.3, 0.1, 0.6, 0.1])
    return frame, pred


def test_fairness_rates_ratios_and_differences_by_hand() -> None:
    frame, pred = fairness_frame()
    evaluation = EvaluationSpec(sensitive=["group"], min_slice_rows=1)
    report = report_for(frame, pred, evaluation, threshold=0.5, metrics=["brier"])
    (entry,) = report["fairness"]
    assert entry["attribute"] == "group" and entry["threshold"] == 0.5
    groups = {g["group"]: g for g in entry["groups"]}
    # Selected (pred >= 0.5): A 3 of 4 (2 pos, 1 neg), B 1 of 4 (1 pos), C 1 of 2 (1 neg).
    a, b, c = groups["A"], groups["B"], groups["C"]
    assert (a["selection_rate"], a["tpr"], a["fpr"]) == (0.75, 1.0, 0.5)
    assert (b["selection_rate"], b["tpr"], b["fpr"]) == (0.25, 0.5, 0.0)
    assert (c["selection_rate"], c["tpr"], c["fpr"]) == (0.5, None, 0.5)
    assert (c["positives"], c["negatives"]) == (0, 2)
    # Best: selection rate A (0.75), TPR A (1.0), FPR B (0.0, lowest).
    assert a["selection_rate_ratio"] == 1.0 and a["selection_rate_difference"] == 0.0
    assert b["selection_rate_ratio"] == pytest.approx(1 / 3)
    assert b["selection_rate_difference"] == pytest.approx(-0.5)
    assert c["selection_rate_ratio"] == pytest.approx(2 / 3)
    assert b["tpr_ratio"] == 0.5 and b["tpr_difference"] == -0.5
    assert c["tpr_ratio"] is None and c["tpr_difference"] is None
    assert b["fpr_ratio"] == 1.0 and b["fpr_difference"] == 0.0
    assert a["fpr_ratio"] == 0.0 and a["fpr_difference"] == 0.5
    assert entry["worst"] == pytest.approx(
        {
            "selection_rate_ratio": 1 / 3,
            "selection_rate_difference": 0.5,
            "tpr_ratio": 0.5,
            "tpr_difference": 0.5,
            "fpr_ratio": 0.0,
            "fpr_difference": 0.5,
        }
    )
    assert entry["best_and_worst_over"] == "all groups"
    assert a["brier"] == pytest.approx(brier_score_loss([1, 1, 0, 0], pred[:4]))
    json.dumps(report, allow_nan=False)


def test_small_groups_do_not_decide_best_or_worst() -> None:
    frame, pred = fairness_frame()
    pred[8:] = [0.6, 0.7]  # C selects everyone, but C is small
    evaluation = EvaluationSpec(sensitive=["group"], min_slice_rows=3)
    report = report_for(frame, pred, evaluation, threshold=0.5, metrics=["brier"])
    (entry,) = report["fairness"]
    groups = {g["group"]: g for g in entry["groups"]}
    assert groups["C"]["small"] and not groups["A"]["small"]
    assert groups["C"]["selection_rate_ratio"] == pytest.approx(1 / 0.75)
    assert groups["A"]["selection_rate_ratio"] == 1.0
    assert entry["worst"]["selection_rate_ratio"] == pytest.approx(1 / 3)
    assert entry["worst"]["fpr_ratio"] == 0.0  # A's 0.5 vs B's 0.0; C's 1.0 is not counted
    assert entry["best_and_worst_over"] == "groups not flagged small"


def test_fairness_uses_the_report_threshold() -> None:
    frame, pred = fairness_frame()
    costs = CostMatrix(false_positive=1, false_negative=10)
    evaluation = EvaluationSpec(sensitive=["group"], costs=costs, min_slice_rows=1)
    report = report_for(frame, pred, evaluation, metrics=["brier"])
    chosen = choose_threshold(frame["label"], pred, costs)["threshold"]
    assert (
        report["fairness"][0]["threshold"] == chosen == report["extras"]["threshold"]["threshold"]
    )
    by_spec = report_for(frame, pred, EvaluationSpec(sensitive=["group"], threshold=0.85))
    groups = {g["group"]: g for g in by_spec["fairness"][0]["groups"]}
    assert groups["A"]["selection_rate"] == 0.25 and groups["C"]["selection_rate"] == 0.0


def test_all_zero_selection_rates_are_parity() -> None:
    frame, pred = fairness_frame()
    evaluation = EvaluationSpec(sensitive=["group"], min_slice_rows=1)
    report = report_for(frame, pred, evaluation, threshold=0.99, metrics=["brier"])
    worst = report["fairness"][0]["worst"]
    assert worst["selection_rate_ratio"] == 1.0 and worst["selection_rate_difference"] == 0.0


def test_regression_and_multiclass_reports() -> None:
    rng = np.random.default_rng(2)
    n = 200
    frame = pl.DataFrame(
        {"label": rng.normal(100, 10, n), "region": rng.choice(["n", "s"], n).tolist()}
    )
    pred = frame["label"].to_numpy() + rng.normal(0, 2, n)
    evaluation = EvaluationSpec(
        segments=[Segment(name="region", column="region")], sensitive=["region"]
    )
    report = report_for(
        frame, pred, evaluation, task="regression", metrics=["rmse", "mae", "r2", "mape"]
    )
    assert set(report["extras"]) == {"residuals"}
    (entry,) = report["fairness"]
    assert entry["note"] == NON_BINARY_FAIRNESS_NOTE and entry["worst"] == {}
    south = (frame["region"] == "s").to_numpy()
    expected = compute_metrics("regression", frame["label"].to_numpy()[south], pred[south], ["r2"])
    assert {g["group"]: g for g in entry["groups"]}["s"]["r2"] == pytest.approx(expected["r2"])
    json.dumps(report, allow_nan=False)

    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 2 * np.eye(3)[labels]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    multi = evaluation_report(
        frame.with_columns(label=pl.Series(labels)),
        task="multiclass_classification",
        y_true_col="label",
        pred=proba,
        evaluation=evaluation,
        metrics=["accuracy", "macro_f1", "log_loss"],
        classes=["low", "mid", "high"],
    )
    assert multi["extras"]["confusion_matrix"]["classes"] == ["low", "mid", "high"]
    assert sum(s["rows"] for s in multi["slices"]) == n
    json.dumps(multi, allow_nan=False)


def test_report_to_frames() -> None:
    frame, pred = holdout()
    report = report_for(frame, pred)
    frames = report_to_frames(report)
    slices, fairness = frames["slices"], frames["fairness"]
    assert slices.height == len(report["slices"])
    assert slices.columns == ["segment", "column", "value", "rows", *BINARY_METRICS, "small"]
    assert slices.schema["rows"] == pl.Int64 and slices.schema["roc_auc"] == pl.Float64
    assert fairness.height == 3 and set(fairness["group"]) == {"FR", "DE", "LU"}
    assert {"selection_rate_ratio", "tpr_difference", "threshold"} <= set(fairness.columns)
    assert fairness["rows"].sum() == frame.height

    tiny = report_for(*fairness_frame(), EvaluationSpec(sensitive=["group"]), threshold=0.5)
    frames = report_to_frames(tiny)
    assert frames["slices"].height == 0 and "roc_auc" in frames["slices"].columns
    c_row = frames["fairness"].filter(pl.col("group") == "C")
    assert c_row["tpr"].to_list() == [None] and c_row["roc_auc"].to_list() == [None]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_true_col": "target"}, r"y_true_col 'target' is not a column of the frame"),
        ({"pred": np.zeros(5)}, r"pred has 5 rows but the frame has 10"),
        ({"metrics": ["rmse"]}, r"\['rmse'\] do not apply to binary_classification"),
        ({"task": "ranking"}, r"task 'ranking' is unknown"),
        ({"pred": np.full(10, np.nan)}, r"y_pred must be finite"),
        ({"pred": np.full(10, 1.5)}, r"y_pred must be probabilities in \[0, 1\]"),
        (
            {"evaluation": EvaluationSpec(segments=[Segment(name="seg", column="nope")])},
            r"evaluation segment 'seg': column 'nope' is not a column of the frame",
        ),
        (
            {"evaluation": EvaluationSpec(sensitive=["gender"])},
            r"evaluation sensitive attribute 'gender' is not a column",
        ),
        (
            {"evaluation": EvaluationSpec(segments=[Segment(name="g", column="group", bins=[1])])},
            r"segment 'g': bins need a numeric column, 'group' is String",
        ),
        ({"threshold": float("nan")}, r"threshold must be a finite number"),
    ],
)
def test_bad_inputs_raise_clear_errors(change: dict, message: str) -> None:
    frame, pred = fairness_frame()
    kwargs = {
        "task": BINARY,
        "y_true_col": "label",
        "pred": pred,
        "evaluation": EvaluationSpec(),
        "metrics": ["brier"],
        **change,
    }
    with pytest.raises(ValueError, match=message):
        evaluation_report(frame, **kwargs)


def test_bad_labels_raise() -> None:
    frame, pred = fairness_frame()
    with_null = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("label")).alias("label")
    )
    with pytest.raises(ValueError, match=r"y_true_col 'label' has 1 null label"):
        report_for(with_null, pred, EvaluationSpec())
    with pytest.raises(ValueError, match=r"y_true labels must be in \{0, 1\}"):
        report_for(frame.with_columns(pl.col("label") * 2), pred, EvaluationSpec())
    with pytest.raises(ValueError, match="the holdout frame has no rows"):
        report_for(frame.head(0), pred[:0], EvaluationSpec())
    with pytest.raises(ValueError, match="threshold applies to binary_classification only"):
        report_for(
            frame.with_columns(pl.col("label").cast(pl.Float64) + 1),
            pred,
            EvaluationSpec(),
            task="regression",
            metrics=["rmse"],
            threshold=0.5,
        )

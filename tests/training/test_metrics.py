"""loopline.training.metrics against scikit-learn on seeded random predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    precision_recall_curve,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from loopline.spec import TASK_METRICS, CostMatrix, EvaluationSpec
from loopline.training.metrics import (
    RESIDUAL_QUANTILES,
    UndefinedMetricError,
    calibration_curve,
    choose_threshold,
    compute_metrics,
    compute_metrics_or_none,
    confusion_at,
    confusion_matrix,
    pr_curve_points,
    residuals,
    roc_curve_points,
    task_curves,
)

BINARY = "binary_classification"
REGRESSION = "regression"
MULTICLASS = "multiclass_classification"


def binary_data(seed: int, n: int = 500, decimals: int | None = None):
    """Labels and scores that carry signal; `decimals` rounds scores to create ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.random(n) * 0.7 + y * 0.3, 0, 1)
    if decimals is not None:
        p = np.round(p, decimals)
    p[:2] = [0.0, 1.0]  # exercise log-loss clipping
    return y, p


def multiclass_data(seed: int, n: int = 400, k: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2), (2, 1)])
def test_binary_metrics_match_sklearn(seed: int, decimals: int | None) -> None:
    y, p = binary_data(seed, decimals=decimals)
    got = compute_metrics(BINARY, y, p, sorted(TASK_METRICS[BINARY]))
    assert got == pytest.approx(
        {
            "roc_auc": roc_auc_score(y, p),
            "average_precision": average_precision_score(y, p),
            "log_loss": log_loss(y, p),
            "brier": brier_score_loss(y, p),
            "positive_rate": float(np.mean(y)),
            "accuracy": accuracy_score(y, p >= 0.5),
        },
        rel=1e-12,
        abs=1e-12,
    )
    assert all(type(v) is float for v in got.values())


def test_binary_accuracy_uses_the_threshold_keyword() -> None:
    y, p = binary_data(3)
    got = compute_metrics(BINARY, y, p, ["accuracy"], threshold=0.3)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.3))
    assert got["accuracy"] != pytest.approx(accuracy_score(y, p >= 0.5))


def test_binary_labels_may_be_bool_or_float() -> None:
    y, p = binary_data(4)
    expected = compute_metrics(BINARY, y, p, ["roc_auc", "brier"])
    assert compute_metrics(BINARY, y.astype(bool), p, ["roc_auc", "brier"]) == expected
    assert compute_metrics(BINARY, y.astype(float), p, ["roc_auc", "brier"]) == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(50, 10, 300)
    p = y + rng.normal(0, 3, 300)
    got = compute_metrics(REGRESSION, y, p, ["rmse", "mae", "r2", "mape"])
    assert got == pytest.approx(
        {
            "rmse": math.sqrt(mean_squared_error(y, p)),
            "mae": mean_absolute_error(y, p),
            "r2": r2_score(y, p),
            "mape": mean_absolute_percentage_error(y, p),
        },
        rel=1e-12,
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_multiclass_metrics_match_sklearn(seed: int) -> None:
    y, proba = multiclass_data(seed)
    if seed in (1, 3):
        y = np.where(y == 3, 0, y)  # class 3 absent from the labels (but predicted)
    if seed in (2, 3):
        proba[:, 2 if seed == 2 else 3] = 0.0  # a class never predicted
        proba /= proba.sum(axis=1, keepdims=True)
    k = proba.shape[1]
    predicted = proba.argmax(axis=1)
    got = compute_metrics(MULTICLASS, y, proba, ["log_loss", "accuracy", "macro_f1"])
    assert got == pytest.approx(
        {
            "log_loss": log_loss(y, proba, labels=list(range(k))),
            "accuracy": accuracy_score(y, predicted),
            "macro_f1": f1_score(y, predicted, average="macro", zero_division=0),
        },
        rel=1e-12,
    )


def test_compute_metrics_keeps_the_order_of_names() -> None:
    y, p = binary_data(5)
    assert list(compute_metrics(BINARY, y, p, ["brier", "roc_auc"])) == ["brier", "roc_auc"]


@pytest.mark.parametrize(
    ("task", "y", "pred", "message"),
    [
        (BINARY, [0, 1, 1], [0.1, 0.9], r"y_true has 3 rows but y_pred has 2"),
        (BINARY, [0, 1], [0.1, np.nan], r"y_pred must be finite: 1 NaN/inf value\(s\), first at"),
        (BINARY, [0, np.inf], [0.1, 0.2], r"y_true must be finite"),
        (BINARY, [0, 2, 1], [0.1, 0.2, 0.3], r"y_true labels must be in \{0, 1\}: 1 row"),
        (BINARY, [0, 0.5], [0.1, 0.2], r"y_true labels must be in \{0, 1\}"),
        (BINARY, [0, 1], [0.1, 1.2], r"y_pred must be probabilities in \[0, 1\]"),
        (BINARY, [[0, 1]], [[0.1, 0.2]], r"y_true must be 1-D"),
        (BINARY, ["a", "b"], [0.1, 0.2], r"y_true must be numeric"),
        (REGRESSION, [1.0, 2.0], [1.0, np.inf], r"y_pred must be finite"),
        (REGRESSION, [1.0, 2.0], [[1.0], [2.0]], r"y_pred must be 1-D"),
        (MULTICLASS, [0, 1], [0.5, 0.5], r"\(n, k\) probability matrix"),
        (MULTICLASS, [0, 3], [[0.5, 0.5, 0], [0, 0, 1]], r"integers 0\.\.2: 1 row"),
        (MULTICLASS, [0, 1], [[0.5, 0.4], [0.2, 0.8]], r"rows must sum to 1: 1 row.*row 0"),
        (MULTICLASS, [0, 1, 1], [[0.5, 0.5], [0.2, 0.8]], r"y_true has 3 rows but y_pred has 2"),
    ],
)
def test_bad_inputs_raise_clear_errors(task, y, pred, message) -> None:
    names = sorted(TASK_METRICS[task])[:1]
    with pytest.raises(ValueError, match=message) as raised:
        compute_metrics(task, np.asarray(y), np.asarray(pred), names)
    assert not isinstance(raised.value, UndefinedMetricError)


def test_unknown_metric_and_task_are_named() -> None:
    y, p = binary_data(0, n=10)
    with pytest.raises(ValueError, match=r"\['rmse'\] do not apply to binary_classification"):
        compute_metrics(BINARY, y, p, ["roc_auc", "rmse"])
    with pytest.raises(ValueError, match=r"task 'ranking' is unknown"):
        compute_metrics("ranking", y, p, ["roc_auc"])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["roc_auc", "average_precision"])
@pytest.mark.parametrize("label", [0, 1])
def test_single_class_ranking_metrics_are_undefined(name: str, label: int) -> None:
    y = np.full(5, label)
    with pytest.raises(UndefinedMetricError, match=rf"{name} needs both classes in y_true"):
        compute_metrics(BINARY, y, np.linspace(0, 1, 5), [name])


def test_undefined_regression_metrics() -> None:
    with pytest.raises(UndefinedMetricError, match="r2 is undefined when y_true is constant"):
        compute_metrics(REGRESSION, [3.0, 3.0], [1.0, 2.0], ["r2"])
    with pytest.raises(UndefinedMetricError, match=r"mape is undefined when y_true has zeros"):
        compute_metrics(REGRESSION, [0.0, 3.0], [1.0, 2.0], ["mape"])
    with pytest.raises(UndefinedMetricError, match="rmse is undefined on zero rows"):
        compute_metrics(REGRESSION, [], [], ["rmse"])


def test_metrics_or_none_records_reasons() -> None:
    values, reasons = compute_metrics_or_none(
        BINARY, [1, 1, 1], [0.2, 0.6, 0.9], ["roc_auc", "brier"]
    )
    assert values["roc_auc"] is None
    assert values["brier"] == pytest.approx(brier_score_loss([1, 1, 1], [0.2, 0.6, 0.9]))
    assert list(reasons) == ["roc_auc"]
    assert "roc_auc needs both classes" in reasons["roc_auc"]
    with pytest.raises(ValueError, match="y_pred must be finite"):
        compute_metrics_or_none(BINARY, [0, 1], [np.nan, 0.5], ["brier"])


@pytest.mark.parametrize(("bins", "decimals"), [(10, None), (10, 1), (5, 2), (7, None)])
def test_calibration_matches_sklearn(bins: int, decimals: int | None) -> None:
    y, p = binary_data(6, n=400, decimals=decimals)  # decimals=1 puts scores on the bin edges
    got = calibration_curve(y, p, bins)
    observed, predicted = sk_calibration_curve(y, p, n_bins=bins, strategy="uniform")
    filled = [i for i, c in enumerate(got["count"]) if c > 0]
    assert sum(got["count"]) == len(y)
    assert got["edges"] == pytest.approx(np.linspace(0, 1, bins + 1).tolist())
    assert [got["observed_rate"][i] for i in filled] == pytest.approx(observed.tolist())
    assert [got["mean_predicted"][i] for i in filled] == pytest.approx(predicted.tolist())
    json.dumps(got, allow_nan=False)


def test_calibration_empty_bins_and_errors_by_hand() -> None:
    got = calibration_curve([0, 1, 1, 0], [0.1, 0.2, 0.8, 0.9], 4)
    assert got["count"] == [2, 0, 0, 2]
    assert got["mean_predicted"] == pytest.approx([0.15, None, None, 0.85])
    assert got["observed_rate"] == [0.5, None, None, 0.5]
    # |0.5 - 0.15| and |0.5 - 0.85| with weight 1/2 each
    assert got["ece"] == pytest.approx(0.35)
    assert got["mce"] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="calibration bins must be an integer >= 1"):
        calibration_curve([0, 1], [0.1, 0.2], 0)


def test_confusion_at_matches_sklearn() -> None:
    y, p = binary_data(7, decimals=2)
    got = confusion_at(y, p, 0.4)
    tn, fp, fn, tp = sk_confusion_matrix(y, p >= 0.4).ravel()
    assert (got["tn"], got["fp"], got["fn"], got["tp"]) == (tn, fp, fn, tp)
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["recall"] == pytest.approx(tp / (tp + fn))
    assert got["fpr"] == pytest.approx(fp / (fp + tn))
    assert got["selection_rate"] == pytest.approx((tp + fp) / len(y))
    nothing = confusion_at([0, 1], [0.2, 0.3], 0.9)
    assert nothing["precision"] is None and nothing["recall"] == 0.0


def brute_force_threshold(y: list[int], p: list[float], costs: CostMatrix) -> tuple[float, float]:
    """(lowest cost, highest threshold reaching it) by trying every candidate."""
    candidates = [*sorted(set(p)), math.inf]
    scored = []
    for t in candidates:
        tp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= t and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= t and yi == 0)
        fn = sum(y) - tp
        tn = len(y) - sum(y) - fp
        cost = (
            tp * costs.true_positive
            + fp * costs.false_positive
            + fn * costs.false_negative
            + tn * costs.true_negative
        )
        scored.append((cost, t))
    best = min(c for c, _ in scored)
    return best, max(t for c, t in scored if c == best)


cost_values = st.floats(0, 50, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0])),
        min_size=1,
        max_size=25,
    ),
    fp_cost=cost_values,
    fn_cost=cost_values,
    tp_cost=st.floats(-10, 10, allow_nan=False),
    tn_cost=st.floats(-10, 10, allow_nan=False),
)
def test_choose_threshold_is_the_brute_force_minimum(
    rows, fp_cost, fn_cost, tp_cost, tn_cost
) -> None:
    y = [r[0] for r in rows]
    p = [r[1] for r in rows]
    costs = CostMatrix(
        true_positive=tp_cost,
        false_positive=fp_cost,
        false_negative=fn_cost,
        true_negative=tn_cost,
    )
    got = choose_threshold(y, p, costs)
    best_cost, best_threshold = brute_force_threshold(y, p, costs)
    assert got["cost"] == best_cost
    if math.isinf(best_threshold):
        assert got["threshold"] > max(p)
        assert got["tp"] + got["fp"] == 0
    else:
        assert got["threshold"] == best_threshold
    assert got == {**confusion_at(y, p, got["threshold"]), **got}


def test_choose_threshold_by_hand() -> None:
    y = [0, 0, 1, 1, 0, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    # Missing a positive costs 10, a false alarm 1: flag from 0.3 up (1 false alarm, cost 1).
    got = choose_threshold(y, p, CostMatrix(false_positive=1, false_negative=10))
    assert (got["threshold"], got["cost"], got["tp"], got["fp"]) == (0.3, 1.0, 3, 1)
    assert got["mean_cost"] == pytest.approx(1 / 6)
    assert got["precision"] == pytest.approx(0.75) and got["recall"] == 1.0
    # False alarms cost 10: flag only 0.9 (two misses, cost 2) beats flagging nothing (cost 3).
    got = choose_threshold(y, p, CostMatrix(false_positive=10, false_negative=1))
    assert (got["threshold"], got["cost"]) == (0.9, 2.0)
    # Nothing costs anything: every threshold ties, the highest (flag nothing) wins.
    got = choose_threshold(y, p, CostMatrix(false_positive=0, false_negative=0))
    assert got["threshold"] > 0.9 and got["tp"] + got["fp"] == 0 and got["cost"] == 0.0


def test_choose_threshold_is_vectorised() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200_000), rng.random(200_000)
    got = choose_threshold(y, p, CostMatrix(false_positive=1, false_negative=5))
    assert got["tp"] + got["fp"] + got["fn"] + got["tn"] == 200_000


@pytest.mark.parametrize("decimals", [2, 1])
def test_roc_and_pr_points_match_sklearn_when_not_downsampled(decimals: int) -> None:
    y, p = binary_data(8, decimals=decimals)  # at most 101 distinct scores
    roc = roc_curve_points(y, p)
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    assert roc["fpr"] == pytest.approx(fpr.tolist())
    assert roc["tpr"] == pytest.approx(tpr.tolist())
    assert roc["thresholds"][0] is None
    assert roc["thresholds"][1:] == pytest.approx(thresholds[1:].tolist())
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(y, p))

    pr = pr_curve_points(y, p)
    precision, recall, pr_thresholds = precision_recall_curve(y, p)
    assert pr["precision"] == pytest.approx(precision[::-1].tolist())
    assert pr["recall"] == pytest.approx(recall[::-1].tolist())
    assert pr["thresholds"][0] is None
    assert pr["thresholds"][1:] == pytest.approx(pr_thresholds[::-1].tolist())


def test_curves_are_downsampled_keeping_the_ends() -> None:
    y, p = binary_data(9, n=3000)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    roc = roc_curve_points(y, p)
    assert len(roc["fpr"]) == 200
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0)
    assert (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    full = set(zip(fpr.round(12), tpr.round(12), strict=True))
    points = zip(roc["fpr"], roc["tpr"], strict=True)
    assert all((round(a, 12), round(b, 12)) in full for a, b in points)
    assert np.all(np.diff(roc["fpr"]) >= 0)
    pr = pr_curve_points(y, p, max_points=50)
    assert len(pr["recall"]) == 50 and pr["recall"][-1] == 1.0


def test_residuals_sample_and_quantiles() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=5000)
    p = y + rng.normal(0, 0.5, 5000)
    got = residuals(y, p, max_points=300, seed=3)
    assert got["rows"] == 5000 and got["sampled"] is True
    assert len(got["prediction"]) == len(got["residual"]) == 300
    # every sampled point is a real (prediction, residual) pair
    pairs = dict(zip(p.tolist(), (y - p).tolist(), strict=True))
    assert all(pairs[a] == b for a, b in zip(got["prediction"], got["residual"], strict=True))
    levels = np.quantile(y - p, list(RESIDUAL_QUANTILES.values()))
    assert got["quantiles"] == pytest.approx(dict(zip(RESIDUAL_QUANTILES, levels, strict=True)))
    assert got["mean"] == pytest.approx(np.mean(y - p))
    assert residuals(y, p, max_points=300, seed=3) == got
    assert residuals(y, p, max_points=300, seed=4)["prediction"] != got["prediction"]
    small = residuals([1.0, 2.0], [1.5, 1.0])
    assert small["sampled"] is False and small["residual"] == [-0.5, 1.0]


@pytest.mark.parametrize("seed", [0, 2])
def test_confusion_matrix_matches_sklearn(seed: int) -> None:
    y, proba = multiclass_data(seed, k=3)
    if seed == 2:
        proba[:, 1] = 0.0  # class 1 never predicted: precision undefined
        proba /= proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    got = confusion_matrix(y, proba, ["a", "b", "c"])
    assert got["classes"] == ["a", "b", "c"]
    assert got["matrix"] == sk_confusion_matrix(y, predicted, labels=[0, 1, 2]).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=[0, 1, 2], zero_division=np.nan
    )
    for i, row in enumerate(got["per_class"]):
        assert row["support"] == support[i]
        for name, expected in (("precision", precision), ("recall", recall), ("f1", f1)):
            if np.isnan(expected[i]):
                assert row[name] is None
            else:
                assert row[name] == pytest.approx(expected[i])
    if seed == 2:
        assert got["per_class"][1]["precision"] is None
    json.dumps(got, allow_nan=False)


def test_confusion_matrix_checks_class_names() -> None:
    y, proba = multiclass_data(0, k=3)
    assert confusion_matrix(y, proba)["classes"] == ["0", "1", "2"]
    with pytest.raises(ValueError, match="classes has 2 name"):
        confusion_matrix(y, proba, ["a", "b"])


def test_task_curves_binary_threshold_sources() -> None:
    y, p = binary_data(10)
    by_spec = task_curves(BINARY, y, p, EvaluationSpec(threshold=0.3, calibration_bins=5))
    assert set(by_spec) == {"calibration", "threshold", "roc", "pr"}
    assert by_spec["threshold"] == {**confusion_at(y, p, 0.3), "source": "spec"}
    assert len(by_spec["calibration"]["count"]) == 5

    costs = CostMatrix(false_positive=1, false_negative=20)
    by_costs = task_curves(BINARY, y, p, EvaluationSpec(costs=costs))
    assert by_costs["threshold"] == {**choose_threshold(y, p, costs), "source": "costs"}

    given_ = task_curves(BINARY, y, p, EvaluationSpec(costs=costs), threshold=0.5)
    assert given_["threshold"]["source"] == "given"
    assert given_["threshold"]["threshold"] == 0.5
    assert given_["threshold"]["cost"] >= by_costs["threshold"]["cost"]
    for curves in (by_spec, by_costs, given_):
        json.dumps(curves, allow_nan=False)


def test_task_curves_other_tasks_and_single_class() -> None:
    one_class = task_curves(BINARY, [1, 1, 1], [0.2, 0.5, 0.9], EvaluationSpec())
    assert one_class["roc"] is None and one_class["pr"] is None
    assert one_class["threshold"]["recall"] == pytest.approx(2 / 3)

    regression = task_curves(REGRESSION, [1.0, 2.0, 4.0], [1.5, 2.0, 3.0], EvaluationSpec())
    assert set(regression) == {"residuals"}
    y, proba = multiclass_data(1, k=3)
    multiclass = task_curves(MULTICLASS, y, proba, EvaluationSpec(), ["a", "b", "c"])
    assert multiclass["confusion_matrix"]["classes"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="threshold applies to binary_classification only"):
        task_curves(REGRESSION, [1.0], [1.0], EvaluationSpec(), threshold=0.5)

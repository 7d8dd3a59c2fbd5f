"""What a trained model tells the run record: resolved params, curves, importance, SHAP; and
training per task."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.spec import TrainingSpec
from loopline.training.model import (
    DETERMINISM,
    load_booster,
    resolved_params,
    train_booster,
    training_params,
)

CONFIG = TrainingSpec(
    params={"learning_rate": 0.1, "num_leaves": 15}, num_boost_round=60, early_stopping_rounds=10
)
NAMES = ["a", "b", "c", "d"]


def _data(task: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES)))
    signal = x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + 0.3 * rng.normal(size=n)
    if task == "regression":
        return x, 10 + 3 * signal
    if task == "binary_classification":
        return x, (signal > 0.5).astype(np.int64)
    return x, np.digitize(signal, [-0.5, 0.5]).astype(np.int64)  # 3 classes


@pytest.mark.parametrize(
    ("task", "num_class"),
    [("binary_classification", None), ("regression", None), ("multiclass_classification", 3)],
)
def test_every_task_trains_deterministically_with_one_curve_point_per_iteration(
    task: str, num_class: int | None
) -> None:
    x, y = _data(task, 0, 1500)
    xv, yv = _data(task, 1, 400)
    kwargs = {"feature_names": NAMES, "config": CONFIG, "task": task, "num_class": num_class}
    first = train_booster(x, y, xv, yv, **kwargs)  # type: ignore[arg-type]
    second = train_booster(x, y, xv, yv, **kwargs)  # type: ignore[arg-type]
    assert first.to_bytes() == second.to_bytes()
    # One point per boosting round run: early stopping ran `early_stopping_rounds` past the
    # best round, or the budget ran out.
    (iterations,) = {len(v) for v in first.curves.values()}
    assert first.best_iteration <= iterations <= CONFIG.num_boost_round
    if iterations < CONFIG.num_boost_round:
        assert iterations == first.best_iteration + CONFIG.early_stopping_rounds
    assert {k.split("_", 1)[0] for k in first.curves} == {"train", "valid"}
    predictions = first.predict(xv)
    expected_shape = (len(xv), 3) if num_class else (len(xv),)
    assert predictions.shape == expected_shape
    reloaded = load_booster(first.to_bytes())
    assert np.allclose(reloaded.predict(xv), predictions)


def test_resolved_params_include_lightgbm_defaults_and_what_was_asked() -> None:
    x, y = _data("binary_classification", 0, 800)
    model = train_booster(x, y, x, y, feature_names=NAMES, config=CONFIG)
    params = model.resolved_params()
    assert params["learning_rate"] == 0.1 and params["num_leaves"] == 15
    assert params["objective"] == "binary"
    assert params["max_bin"] == 255  # a default nobody set
    assert params["seed"] == CONFIG.seed and params["deterministic"] == 1
    assert resolved_params("no parameters here") == {}


def test_importance_ranks_the_informative_features_first() -> None:
    x, y = _data("regression", 0, 1500)
    model = train_booster(x, y, x, y, feature_names=NAMES, config=CONFIG, task="regression")
    table = model.importance()
    assert table.get_column("feature").to_list()[:2] == ["a", "b"]
    assert table.get_column("gain_share").sum() == pytest.approx(1.0)
    assert table.get_column("split").dtype.is_integer()
    # d carries no signal: it has the smallest gain.
    assert table.get_column("feature").to_list()[-1] == "d"


@pytest.mark.parametrize("task", ["binary_classification", "regression"])
def test_shap_summary_adds_up_to_the_raw_score(task: str) -> None:
    x, y = _data(task, 0, 1200)
    model = train_booster(x, y, x, y, feature_names=NAMES, config=CONFIG, task=task)  # type: ignore[arg-type]
    summary = model.shap_summary(x, max_rows=10_000)
    raw = model.booster.predict(x, num_iteration=model.best_iteration, raw_score=True)
    total = sum(f["mean"] for f in summary["features"]) + summary["expected_value"]
    assert total == pytest.approx(float(raw.mean()), rel=1e-6, abs=1e-9)
    assert summary["rows"] == len(x)
    assert summary["features"][0]["feature"] == "a"
    sampled = model.shap_summary(x, max_rows=100, seed=3)
    assert sampled["rows"] == 100 and sampled == model.shap_summary(x, max_rows=100, seed=3)


def test_shap_summary_of_a_multiclass_model_has_one_base_value_per_class() -> None:
    x, y = _data("multiclass_classification", 0, 1200)
    model = train_booster(
        x, y, x, y, feature_names=NAMES, config=CONFIG,
        task="multiclass_classification", num_class=3,
    )  # fmt: skip
    summary = model.shap_summary(x)
    assert len(summary["expected_value"]) == 3
    assert {f["feature"] for f in summary["features"]} == set(NAMES)


def test_training_params_layer_task_spec_overrides_then_determinism() -> None:
    params = training_params(CONFIG, "regression", overrides={"num_leaves": 40})
    assert params["objective"] == "regression" and params["num_leaves"] == 40
    assert all(params[k] == v for k, v in DETERMINISM.items())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_threads": 4}, "params.num_threads: fixed by loopline"),
        ({"seed": 1}, "params.seed: fixed"),
        ({"num_leaves": [1, 2]}, "params.num_leaves: must be a number"),
    ],
)
def test_overrides_that_would_break_determinism_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        training_params(CONFIG, "binary_classification", overrides=overrides)


def test_a_multiclass_task_needs_its_classes() -> None:
    with pytest.raises(ValueError, match="num_class >= 3"):
        training_params(CONFIG, "multiclass_classification", num_class=None)

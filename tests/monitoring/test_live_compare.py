"""Champion vs challenger on a real prediction log: shadow pairs, canary groups, labels, gaps."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from live_log import NOW, live_records, write_labels, write_live_log
from scipy import stats

from loopline.monitoring import live_compare as lc
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.store import Store
from loopline.store.tables import Artifact, Model, ModelVersion, Run
from loopline.training.metrics import compute_metrics

SPEC = load_spec("fraud")
DELIVERY = load_spec(Path(__file__).parents[1] / "usecases" / "delivery" / "delivery.yaml")


def paired(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    by_role = {"champion": {}, "shadow": {}}
    for r in records:
        by_role[r["role"]][r["request_id"]] = r["score"]
    ids = sorted(by_role["shadow"])
    return (
        np.array([by_role["champion"][i] for i in ids]),
        np.array([by_role["shadow"][i] for i in ids]),
    )


def test_shadow_rows_are_paired_by_request_and_compared(settings: Settings) -> None:
    records, _ = live_records(200, role="shadow")
    write_live_log(settings, records)
    result = lc.compare_live(settings, SPEC, bootstrap=0)
    champion, shadow = paired(records)
    assert result.challenger_role == "shadow" and result.reason is None
    assert result.agreement is not None and result.agreement.pairs == 200
    same = ((champion >= 0.5) == (shadow >= 0.5)).mean()
    assert result.agreement.decisions == pytest.approx(same)
    assert result.agreement.mean_abs_difference == pytest.approx(np.abs(shadow - champion).mean())
    assert result.agreement.within_share is None  # binary
    assert result.champion is not None and result.challenger is not None
    assert (result.champion.model_version, result.challenger.model_version) == (2, 1)
    assert result.champion.mean_score == pytest.approx(champion.mean())
    assert result.challenger.mean_score == pytest.approx(shadow.mean())
    assert result.champion.threshold == 0.5  # no store row records one: the spec's
    assert result.distance is not None
    assert result.distance.ks == pytest.approx(stats.ks_2samp(champion, shadow).statistic)
    assert result.distance.psi > 0
    # Histograms over [0, 1], each role's shares summing to 1.
    shares = pl.DataFrame(result.histogram).group_by("role").agg(pl.col("share").sum())
    assert dict(shares.iter_rows()) == pytest.approx({"champion": 1.0, "shadow": 1.0})
    assert min(b.low for b in result.histogram) == 0 and max(b.high for b in result.histogram) == 1
    assert result.metric is None and "no labels yet" in str(result.metric_reason)


def test_labels_give_each_metric_and_the_difference_a_bootstrap_interval(
    settings: Settings,
) -> None:
    records, labels = live_records(600, role="shadow", seed=3)
    write_live_log(settings, records)
    write_labels(settings, labels.head(500))  # the newest 100 are not labelled yet
    result = lc.compare_live(settings, SPEC, bootstrap=300, seed=1)
    metric = result.metric
    assert metric is not None, result.metric_reason
    assert metric.metric == "average_precision" and metric.paired and metric.higher_is_better
    assert metric.champion_rows == metric.challenger_rows == 500
    truth = labels.head(500)["is_fraud"].to_numpy()
    champion, _ = paired(records)
    expected = compute_metrics(SPEC.task, truth, champion[:500], ["average_precision"])
    assert metric.champion.value == pytest.approx(expected["average_precision"])
    for interval in (metric.champion, metric.challenger, metric.difference):
        assert interval.low is not None and interval.high is not None
        assert interval.low <= interval.value <= interval.high
    assert metric.difference.value == pytest.approx(metric.challenger.value - metric.champion.value)
    assert metric.difference.low > 0, "the less noisy shadow should be clearly better"
    assert metric.resamples == 300
    again = lc.compare_live(settings, SPEC, bootstrap=300, seed=1)
    assert again.metric == metric  # seeded


def test_a_canary_is_compared_by_distribution_and_unpaired_metrics(settings: Settings) -> None:
    records, labels = live_records(300, role="canary", seed=2)
    write_live_log(settings, records)
    write_labels(settings, labels)
    result = lc.compare_live(settings, SPEC, challenger_role="auto", bootstrap=100)
    assert result.challenger_role == "canary" and result.agreement is None
    assert result.champion is not None and result.challenger is not None
    assert (result.champion.rows, result.challenger.rows) == (200, 100)
    canary = np.array([r["score"] for r in records if r["role"] == "canary"])
    champion = np.array([r["score"] for r in records if r["role"] == "champion"])
    assert result.distance is not None
    assert result.distance.ks == pytest.approx(stats.ks_2samp(champion, canary).statistic)
    assert result.metric is not None and not result.metric.paired
    assert (result.metric.champion_rows, result.metric.challenger_rows) == (200, 100)
    # Asking for a shadow when only a canary runs: a reason, not a crash.
    shadow = lc.compare_live(settings, SPEC, challenger_role="shadow")
    assert shadow.challenger_role is None and "no shadow prediction" in str(shadow.reason)


def test_an_empty_log_and_a_champion_alone_say_why(settings: Settings) -> None:
    empty = lc.compare_live(settings, SPEC)
    assert empty.reason == "no prediction of fraud-detector is logged in the window"
    assert empty.champion is None and empty.distance is None and empty.metric is None
    records, _ = live_records(30, role="none")
    write_live_log(settings, records)
    alone = lc.compare_live(settings, SPEC)
    assert alone.challenger_role is None
    assert (
        alone.reason == "no shadow or canary prediction of fraud-detector is logged in the window"
    )
    assert alone.champion is not None and alone.champion.rows == 30
    assert alone.as_dict()["champion"]["rows"] == 30
    other = lc.compare_live(settings, SPEC, model_name="someone-else")
    assert "no prediction of someone-else" in str(other.reason)
    window = lc.compare_live(settings, SPEC, since=NOW + timedelta(hours=1))
    assert window.reason is not None and window.since == NOW + timedelta(hours=1)


def test_too_few_labels_and_a_single_class_are_reasons(settings: Settings) -> None:
    records, labels = live_records(120, role="shadow", seed=4)
    write_live_log(settings, records)
    write_labels(settings, labels.head(1))
    one = lc.compare_live(settings, SPEC, bootstrap=10)
    assert one.metric is None and "not enough labels yet: 1 labelled" in str(one.metric_reason)
    # Relabelled later, every labelled request negative: average precision is undefined.
    negative = labels.head(21).with_columns(
        is_fraud=pl.lit(0, pl.Int64), label_timestamp=pl.col("label_timestamp") + timedelta(days=1)
    )
    write_labels(settings, negative)
    undefined = lc.compare_live(settings, SPEC, bootstrap=10)
    assert undefined.metric is None
    assert "average_precision is undefined on the labelled requests" in str(undefined.metric_reason)


def test_rows_of_an_earlier_champion_version_are_left_out_with_a_note(settings: Settings) -> None:
    old, _ = live_records(20, role="shadow", now=NOW - timedelta(hours=2))
    old = [
        r | {"model_version": 1, "model_version_id": "mv1"} for r in old if r["role"] == "champion"
    ]
    new, _ = live_records(40, role="shadow", seed=1)
    write_live_log(settings, [*old, *[r | {"request_id": "n" + r["request_id"]} for r in new]])
    result = lc.compare_live(settings, SPEC, bootstrap=0)
    assert result.agreement is not None and result.agreement.pairs == 40
    assert result.notes == ("20 champion row(s) of earlier version(s) v1 left out",)


def test_a_recorded_decision_threshold_is_used_for_agreement(settings: Settings) -> None:
    records, _ = live_records(150, role="shadow", seed=5)
    write_live_log(settings, records)
    store = Store.open(settings)
    try:
        with store.session() as s:
            s.add(Model(name="fraud-detector", use_case="fraud"))
            s.add_all([Run(id="r1", kind="train", use_case="fraud"),
                       Run(id="r2", kind="train", use_case="fraud",
                           summary={"evaluation": {"threshold": 0.3}})])  # fmt: skip
            s.add(Artifact(id="a", size_bytes=1, media_type="text/plain"))
            s.flush()
            for number, run_id, metrics in ((1, "r1", {"threshold": 0.7}), (2, "r2", {})):
                s.add(ModelVersion(id=f"mv{number}", model_name="fraud-detector", version=number,
                                   run_id=run_id, artifact_id="a", feature_service="fraud_v1",
                                   metrics=metrics))  # fmt: skip
        result = lc.compare_live(settings, SPEC, bootstrap=0, store=store)
    finally:
        store.dispose()
    champion, shadow = paired(records)
    assert result.champion is not None and result.champion.threshold == 0.3  # run summary
    assert result.challenger is not None and result.challenger.threshold == 0.7  # version
    assert result.agreement is not None
    assert result.agreement.decisions == pytest.approx(
        ((champion >= 0.3) == (shadow >= 0.7)).mean()
    )


def test_regression_agreement_is_the_difference_and_the_share_within_five_percent() -> None:
    champion = np.array([10.0, 20.0, 30.0, 40.0])
    shadow = np.array([10.4, 22.0, 30.0, 50.0])
    found = lc.agreement(DELIVERY.task, champion, shadow)
    assert found.decisions is None
    assert found.mean_abs_difference == pytest.approx((0.4 + 2 + 0 + 10) / 4)
    assert found.within_share == 0.5  # 0.4 of 10 and 0 of 30 are within 5%


def test_regression_log_gives_an_rmse_comparison(settings: Settings) -> None:
    rng = np.random.default_rng(0)
    truth = rng.gamma(4.0, 8.0, 80)
    records = []
    for i, y in enumerate(truth):
        base = {"request_id": f"d{i}", "event_id": f"o{i}", "ts": NOW - timedelta(minutes=i),
                "model_name": "delivery-eta", "feature_service": "delivery_v1"}  # fmt: skip
        records.append(
            base | {"role": "champion", "model_version": 1, "score": y + rng.normal(0, 6)}
        )
        records.append(base | {"role": "shadow", "model_version": 2, "score": y + rng.normal(0, 2)})
    write_live_log(settings, records)
    from loopline.lake import tables

    labels = pl.DataFrame({"order_id": [f"o{i}" for i in range(80)],
                           "label_timestamp": [NOW] * 80, "duration_min": truth})  # fmt: skip
    tables.append(tables.table_uri(settings.lake_dir, DELIVERY.labels.table), labels)
    result = lc.compare_live(settings, DELIVERY, bootstrap=200)
    assert result.agreement is not None and result.agreement.within_share is not None
    assert result.champion is not None and result.champion.threshold is None
    assert result.metric is not None and result.metric.metric == "rmse"
    assert not result.metric.higher_is_better
    assert result.metric.difference.high is not None and result.metric.difference.high < 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"challenger_role": "blue"}, "challenger_role: must be one of auto, shadow, canary"),
        ({"since": datetime(2026, 1, 1)}, "since: must be timezone-aware"),
        ({"until": datetime(2026, 1, 1)}, "until: must be timezone-aware"),
        ({"since": NOW, "until": NOW}, "since: must be before until"),
        ({"bootstrap": -1}, "bootstrap: must be an integer >= 0"),
    ],
)
def test_bad_arguments_name_the_field(settings: Settings, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lc.compare_live(settings, SPEC, **kwargs)


@pytest.mark.parametrize("seed", range(4))
def test_ks_matches_scipy_and_psi_is_zero_on_identical_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.beta(2, 5, 300), rng.beta(2, 4, 170)
    assert lc.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert lc.ks_statistic(a, a) == 0
    assert lc.decile_psi(a, a) == pytest.approx(0, abs=1e-9)
    assert lc.decile_psi(a, b) > 0

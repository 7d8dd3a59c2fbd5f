"""Drift by population stability index on whylogs profiles, and the monitoring job around it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.monitoring.drift import FeatureDrift, feature_drift, psi
from loopline.monitoring.monitor import PREDICTION, MonitorError, monitor_predictions
from loopline.monitoring.profiles import deserialize, profile_frame, serialize
from loopline.registry.models import register_version, set_alias
from loopline.serving.prediction_log import PredictionLog
from loopline.settings import Settings
from loopline.spec import UseCaseSpec, load_spec
from loopline.store import Store
from loopline.store.tables import DriftResult, RunArtifact
from loopline.tracking import tracked_run

N = 5000
CODES = [0.0, 1.0, 2.0, 3.0]
MIX = [0.4, 0.3, 0.2, 0.1]

Sampler = Callable[[np.random.Generator, int], np.ndarray]


def normal(mean: float = 0.0, sd: float = 1.0, null_share: float = 0.0) -> Sampler:
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        values = rng.normal(mean, sd, n)
        values[rng.random(n) < null_share] = np.nan
        return values

    return sample


def codes(mix: list[float], values: list[float] = CODES) -> Sampler:
    return lambda rng, n: rng.choice(values, n, p=mix)


def drift_of(reference: Sampler, target: Sampler, n_target: int = N) -> FeatureDrift:
    rng = np.random.default_rng(11)
    ref = profile_frame(pl.DataFrame({"f": reference(rng, N)}).fill_nan(None))
    tgt = profile_frame(pl.DataFrame({"f": target(rng, n_target)}).fill_nan(None))
    [result] = feature_drift(ref, tgt, ["f"], psi_threshold=0.2, min_rows=200)
    return result


@pytest.mark.parametrize(
    ("case", "reference", "target", "drifted", "low", "high"),
    [
        ("same normal", normal(), normal(), False, 0.0, 0.02),
        ("tiny shift 0.05 sd", normal(), normal(0.05), False, 0.0, 0.05),
        ("1 sd shift", normal(), normal(1.0), True, 0.5, 2.0),
        ("1 sd shift down", normal(), normal(-1.0), True, 0.5, 2.0),
        ("sd doubles", normal(), normal(sd=2.0), True, 0.3, 3.0),
        ("same category mix", codes(MIX), codes(MIX), False, 0.0, 0.02),
        ("category mix reversed", codes(MIX), codes(MIX[::-1]), True, 0.5, 3.0),
        (
            "unseen category code",
            codes(MIX),
            codes([0.3, 0.2, 0.2, 0.1, 0.2], [*CODES, 4.0]),
            True,
            0.2,
            5.0,
        ),
        ("nulls appear", normal(), normal(null_share=0.3), True, 0.5, 5.0),
        ("same nulls both sides", normal(null_share=0.1), normal(null_share=0.1), False, 0.0, 0.02),
    ],
)
def test_psi_table(
    case: str, reference: Sampler, target: Sampler, drifted: bool, low: float, high: float
) -> None:
    result = drift_of(reference, target)
    assert low <= result.statistic <= high, f"{case}: PSI {result.statistic}"
    assert result.drifted is drifted
    assert (result.method, result.threshold, result.note) == ("psi", 0.2, None)
    assert (result.sample_size, result.reference_size) == (N, N)


def test_too_few_rows_is_reported_not_judged() -> None:
    result = drift_of(normal(), normal(1.0), n_target=50)
    assert result.statistic > 0.2  # computed and shown ...
    assert result.drifted is False  # ... but not called drift on 50 rows
    assert result.sample_size == 50
    assert result.note is not None and "min_rows 200" in result.note


@pytest.mark.parametrize(
    ("reference", "target", "feature", "note"),
    [
        ({"a": [1.0, 2.0]}, {"b": [1.0]}, "b", "not in the reference profile"),
        ({"a": [1.0, 2.0]}, {"b": [1.0]}, "a", "not in the window's profile"),
        ({"s": ["x", "y"]}, {"s": ["x"]}, "s", "no numeric values in the reference"),
        ({"s": [1.0, 2.0]}, {"s": ["x"]}, "s", "no numeric values in the window"),
    ],
)
def test_features_that_cannot_be_compared_carry_a_note(
    reference: dict, target: dict, feature: str, note: str
) -> None:
    ref, tgt = profile_frame(pl.DataFrame(reference)), profile_frame(pl.DataFrame(target))
    [result] = feature_drift(ref, tgt, [feature], psi_threshold=0.2, min_rows=1)
    assert (result.drifted, result.statistic) == (False, 0.0)
    assert result.note is not None and note in result.note


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"psi_threshold": 0.0}, "psi_threshold: must be > 0"),
        ({"psi_threshold": math.nan}, "psi_threshold: must be > 0"),
        ({"min_rows": 0}, "min_rows: must be >= 1"),
        ({"bins": 1}, "bins: must be >= 2"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict, message: str) -> None:
    view = profile_frame(pl.DataFrame({"f": [1.0, 2.0]}))
    params = {"psi_threshold": 0.2, "min_rows": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        feature_drift(view, view, ["f"], **params)


@pytest.mark.parametrize(
    ("reference", "target", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0),
        # (0.8-0.5)ln(0.8/0.5) + (0.2-0.5)ln(0.2/0.5), epsilon negligible
        ([0.5, 0.5], [0.8, 0.2], 0.3 * math.log(1.6) - 0.3 * math.log(0.4)),
        ([1.0, 0.0], [0.0, 1.0], None),  # disjoint: finite thanks to smoothing, and large
    ],
)
def test_psi_of_bin_masses(
    reference: list[float], target: list[float], expected: float | None
) -> None:
    value = psi(reference, target, epsilon=1e-6)
    if expected is None:
        assert math.isfinite(value) and value > 10
    else:
        assert value == pytest.approx(expected, abs=1e-4)


def test_psi_rejects_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="2 bins but target has 3"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])


def test_profile_bytes_round_trip() -> None:
    rng = np.random.default_rng(3)
    frame = pl.DataFrame({"x": rng.normal(size=1000), "c": codes(MIX)(rng, 1000)})
    view = profile_frame(frame)
    again = deserialize(serialize(view))
    target = profile_frame(frame.with_columns(pl.col("x") + 1))
    features = ["x", "c"]
    args = {"psi_threshold": 0.2, "min_rows": 10}
    assert feature_drift(view, target, features, **args) == feature_drift(
        again, target, features, **args
    )
    with pytest.raises(ValueError, match="not a whylogs profile"):
        deserialize(b"definitely not a profile")


# --- the monitoring job -------------------------------------------------------------------

T0 = datetime(2026, 5, 1, tzinfo=UTC)
INPUTS = ["x1", "x2", "code"]


@dataclass
class Setup:
    settings: Settings
    store: Store
    artifacts: ArtifactStore
    spec: UseCaseSpec
    root: Path
    run_id: str = ""

    def monitor(self, **kwargs) -> list[FeatureDrift]:
        with tracked_run(
            self.store, self.artifacts, kind="monitor", use_case="fraud", project_dir=self.root
        ) as run:
            self.run_id = run.run_id
            return monitor_predictions(
                self.store, self.artifacts, self.settings, self.spec, run_id=run.run_id, **kwargs
            )


def training_frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "x1": rng.normal(shift, 1.0, n),
            "x2": rng.normal(10.0, 2.0, n),
            "code": codes(MIX)(rng, n),
        }
    )


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    settings = Settings(home=tmp_path / "home")
    store = Store.open(settings)
    return Setup(
        settings, store, ArtifactStore(settings.artifacts_dir), load_spec("fraud"), tmp_path
    )


def register(setup: Setup, *, with_reference: bool = True, with_prediction: bool = True) -> str:
    """Register a version like training does; returns its id."""
    rng = np.random.default_rng(5)
    reference = training_frame(rng, 3000)
    if with_prediction:
        reference = reference.with_columns(pl.Series(PREDICTION, rng.beta(2, 5, 3000)))
    with tracked_run(
        setup.store, setup.artifacts, kind="train", use_case="fraud", project_dir=setup.root
    ) as run:
        model_id = run.log_artifact_bytes("model", b"tree", media_type="text/plain")
        profile_id = (
            run.log_artifact_bytes(
                "reference_profile", serialize(profile_frame(reference)), media_type="x"
            )
            if with_reference
            else None
        )
        with setup.store.session() as session:
            version = register_version(
                session,
                model_name=setup.spec.model_name,
                use_case="fraud",
                run_id=run.run_id,
                artifact_id=model_id,
                feature_service="fraud_v1",
                feature_names=INPUTS,
                metrics={},
                datasets={},
                reference_profile_id=profile_id,
            )
            return version.id


def promote(setup: Setup, version: int, expected_revision: int | None) -> None:
    with setup.store.session() as session:
        set_alias(
            session,
            model_name=setup.spec.model_name,
            alias="champion",
            version=version,
            expected_revision=expected_revision,
            actor="test",
        )


def serve(
    setup: Setup, version_id: str, start: datetime, n: int, *, shift: float, seed: int
) -> None:
    """Log n predictions of a version, one per second from start."""
    rng = np.random.default_rng(seed)
    frame = training_frame(rng, n, shift=shift)
    log = PredictionLog(setup.settings.prediction_log_dir)
    for i, inputs in enumerate(frame.iter_rows(named=True)):
        log.append(
            {
                "request_id": f"{version_id[:6]}-{seed}-{i}",
                "ts": start + timedelta(seconds=i),
                "model_name": setup.spec.model_name,
                "model_version": 0,
                "model_version_id": version_id,
                "feature_service": "fraud_v1",
                "alias": "champion",
                "request": {},
                "inputs": inputs,
                "score": float(rng.beta(2, 5)),
            }
        )
    log.close()


def stored(setup: Setup) -> list[DriftResult]:
    with setup.store.reader() as session:
        return list(session.scalars(select(DriftResult).order_by(DriftResult.id)))


def test_monitor_flags_the_shifted_input_and_stores_one_row_per_feature(setup: Setup) -> None:
    version_id = register(setup)
    promote(setup, 1, None)
    serve(setup, version_id, T0, 1000, shift=1.0, seed=1)
    end = T0 + timedelta(hours=1)
    results = setup.monitor(window_end=end, window=timedelta(hours=1))

    assert [r.feature for r in results] == [*INPUTS, PREDICTION]
    assert {r.feature: r.drifted for r in results} == {
        "x1": True,
        "x2": False,
        "code": False,
        PREDICTION: False,
    }
    assert all(r.sample_size == 1000 and r.reference_size == 3000 for r in results)
    rows = stored(setup)
    assert [(r.feature, r.drifted, r.statistic) for r in rows] == [
        (r.feature, r.drifted, r.statistic) for r in results
    ]
    assert {(r.run_id, r.model_version_id, r.window_start, r.window_end) for r in rows} == {
        (setup.run_id, version_id, T0, end)
    }
    profile_id = rows[0].profile_id
    assert profile_id is not None
    profile = deserialize(setup.artifacts.get_bytes(profile_id))
    assert sorted(profile.get_columns()) == sorted([*INPUTS, PREDICTION])
    with setup.store.reader() as session:
        link = session.get(RunArtifact, (setup.run_id, "drift_target_profile"))
    assert link is not None and link.artifact_id == profile_id


def test_reference_without_prediction_monitors_inputs_only(setup: Setup) -> None:
    version_id = register(setup, with_prediction=False)
    serve(setup, version_id, T0, 300, shift=0.0, seed=2)
    results = setup.monitor(window_end=T0 + timedelta(hours=1))
    assert [r.feature for r in results] == INPUTS
    assert not any(r.drifted for r in results)


def test_thin_window_widens_to_the_latest_min_rows(setup: Setup) -> None:
    version_id = register(setup)
    promote(setup, 1, None)
    serve(setup, version_id, T0, 400, shift=0.0, seed=3)  # 00:00:00 .. 00:06:39
    later = T0 + timedelta(hours=2)
    serve(setup, version_id, later, 20, shift=0.0, seed=4)
    results = setup.monitor(window_end=later + timedelta(minutes=1), window=timedelta(minutes=1))
    min_rows = setup.spec.drift.min_rows
    assert {r.sample_size for r in results} == {min_rows}
    assert all(r.note is None for r in results)
    # The window now starts at the 200th-latest prediction: 180 from the first batch + 20.
    expected_start = T0 + timedelta(seconds=400 - (min_rows - 20))
    assert {r.window_start for r in stored(setup)} == {expected_start}


def test_champion_is_monitored_when_several_versions_served(setup: Setup) -> None:
    old = register(setup)
    new = register(setup)
    promote(setup, 2, None)
    serve(setup, old, T0, 600, shift=3.0, seed=5)  # the old version saw drifted traffic
    serve(setup, new, T0 + timedelta(minutes=20), 300, shift=0.0, seed=6)
    results = setup.monitor(window_end=T0 + timedelta(hours=1))
    assert {r.sample_size for r in results} == {300}
    assert not any(r.drifted for r in results)
    assert {r.model_version_id for r in stored(setup)} == {new}


def test_nothing_served_returns_nothing_and_writes_nothing(setup: Setup) -> None:
    register(setup)
    promote(setup, 1, None)
    assert setup.monitor(window_end=T0) == []
    assert stored(setup) == []


def test_version_without_reference_profile_is_an_error(setup: Setup) -> None:
    version_id = register(setup, with_reference=False)
    serve(setup, version_id, T0, 10, shift=0.0, seed=7)
    with pytest.raises(MonitorError, match="v1 has no reference profile"):
        setup.monitor(window_end=T0 + timedelta(hours=1))
    assert stored(setup) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_end": datetime(2026, 5, 1)}, "window_end: must be timezone-aware"),
        ({"window_end": T0, "window": timedelta(0)}, "window: must be positive"),
    ],
)
def test_bad_window_is_rejected(setup: Setup, kwargs: dict, message: str) -> None:
    with pytest.raises(MonitorError, match=message):
        setup.monitor(**kwargs)

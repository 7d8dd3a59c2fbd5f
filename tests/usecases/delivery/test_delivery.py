"""A second use case through the unchanged platform: food-delivery duration (regression).

Everything the use case is lives under tests/usecases/delivery/: its spec, its Feast repo,
its feature builders and its data generator. The platform (CLI, stages, Feast helpers,
training, registry, prediction API, monitoring) is driven exactly as for fraud, pointed at the
use case by LOOPLINE_USE_CASE / --use-case and LOOPLINE_FEATURE_REPO.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from loopline.features import transform
from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.serving.app import create_app
from loopline.serving.prediction_log import read_prediction_log
from loopline.serving.traffic import request_bodies
from loopline.settings import Settings
from loopline.spec import SpecError, UseCaseSpec, load_spec
from loopline.store import Store
from loopline.store.tables import DatasetVersion, DriftResult, ModelVersionDataset, Run
from loopline.training.model import load_booster
from usecases.delivery import FEATURE_REPO, SPEC_PATH, builders
from usecases.delivery.generator import DeliveryConfig, DeliveryData, generate, write_raw

pytestmark = pytest.mark.timeout(180)

CliRun = Callable[..., tuple[int, str, str]]
SERVICE = "delivery_v1"
BUILDERS = {"courier_activity": builders.courier_activity,
            "restaurant_activity": builders.restaurant_activity}  # fmt: skip


# --- the declarations -------------------------------------------------------------------------


def test_spec_loads_by_path_as_a_regression_use_case(delivery_spec: UseCaseSpec) -> None:
    spec = delivery_spec
    assert (spec.name, spec.task, spec.primary_metric) == ("delivery", "regression", "rmse")
    assert spec.metrics == ["rmse", "mae", "r2"]
    assert {g.kind for g in spec.gates} == {
        "max", "min", "beats_champion", "latency", "model_size", "data",
    }  # fmt: skip
    assert spec.entity_keys == ["courier_id", "restaurant_id"]
    assert [t.builder.split(":")[0] for t in spec.features.tables] == [
        "usecases.delivery.builders"
    ] * 2
    # Settings take the path as the use case, as an operator would set it.
    assert load_spec(Settings(use_case=str(SPEC_PATH)).use_case) == spec


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metrics": ["rmse", "roc_auc"]}, "do not apply to regression"),
        ({"primary_metric": "mape"}, "primary_metric 'mape' is not in 'metrics'"),
        ({"gates": [{"name": "g", "kind": "max", "metric": "rmse"}]}, "needs a threshold"),
    ],
)
def test_a_broken_delivery_spec_is_refused_naming_the_rule(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    raw = yaml.safe_load(SPEC_PATH.read_text()) | change
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=field):
        load_spec(path)


def _declarations(monkeypatch: pytest.MonkeyPatch, home: Path) -> Any:
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    source = importlib.util.spec_from_file_location(
        "_delivery_repo", FEATURE_REPO / "definitions.py"
    )
    assert source is not None and source.loader is not None
    module = importlib.util.module_from_spec(source)
    source.loader.exec_module(module)
    return module


def test_feature_repo_builders_and_spec_layout_agree(
    delivery_spec: UseCaseSpec, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = _declarations(monkeypatch, tmp_path)
    layout = delivery_spec.features.layouts[SERVICE]
    declared = {
        p.name: [f.name for f in p.features] for p in repo.delivery_v1.feature_view_projections
    }
    assert declared == layout.views
    for name, features in layout.views.items():
        # The builder publishes exactly the key, the timestamp and the view's features.
        table = BUILDERS[name]
        assert table.empty().columns == [table.key, "event_timestamp", *features]
    names = transform.feature_names(delivery_spec)
    assert names[:5] == delivery_spec.features.request
    assert "courier_last_activity_epoch_us" not in names  # a helper, not a model input
    assert names[-2:] == ["distance_to_courier_mean_7d", "secs_since_courier_activity"]


# --- the data and the builders ----------------------------------------------------------------


def test_generator_is_seeded_and_its_files_meet_the_contract(tmp_path: Path) -> None:
    config = DeliveryConfig(end=datetime(2026, 3, 1, tzinfo=UTC).date(), days=10, orders_per_day=80)
    first, again = generate(config), generate(config)
    assert first.orders.equals(again.orders) and first.deliveries.equals(again.deliveries)
    assert not first.orders.equals(generate(replace(config, seed=6)).orders)
    orders, labels = first.orders, first.deliveries
    assert (
        orders["event_timestamp"].max()
        < datetime(2026, 3, 1, tzinfo=UTC)
        <= first.live["event_timestamp"].min()
    )
    assert (orders["hour"] == orders["event_timestamp"].dt.hour()).all()
    joined = labels.join(orders, on="order_id")
    assert joined.height == orders.height == labels.height
    delivered = joined["label_timestamp"] - joined["event_timestamp"]
    minutes = delivered.dt.total_microseconds() / 60e6
    assert np.allclose(minutes.to_numpy(), joined["duration_min"].to_numpy(), atol=1e-6)
    written = write_raw(first, tmp_path)
    assert [p.name for p in written["orders"]] == ["orders_2026-02-19.csv", "orders_2026-02-26.csv"]
    assert written["live"] == [tmp_path / "live" / "orders.csv"]
    with pytest.raises(ValueError, match="days: must be an integer >= 8"):
        DeliveryConfig(end=config.end, days=3)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_durations_reach_features_only_once_delivered(
    small_delivery: DeliveryData, name: str
) -> None:
    """Label safety: rows up to T are the same whether or not deliveries known after T exist."""
    table = BUILDERS[name]
    orders, labels = small_delivery.orders, small_delivery.deliveries
    cut = datetime.combine(orders["event_timestamp"].max().date(), datetime.min.time(), UTC)
    cut -= timedelta(days=3)
    full = table(orders, labels=labels)
    known = table(orders, labels=labels.filter(pl.col("label_timestamp") < cut))
    before = pl.col("event_timestamp") <= cut
    assert full.filter(before).equals(known.filter(before))
    assert not full.equals(known)  # later deliveries do change later rows
    # And the durations are those of the deliveries: the last 7-day mean of one entity, by hand.
    key = table.key
    entity = full[key][0]
    last = full.filter(pl.col(key) == entity).filter(before).row(-1, named=True)
    at = last["event_timestamp"]
    done = labels.join(orders.select("order_id", key), on="order_id").filter(
        (pl.col(key) == entity)
        & (pl.col("label_timestamp") < at)
        & (pl.col("label_timestamp") >= at - timedelta(days=7))
    )
    column = name.split("_")[0] + "_duration_mean_7d"
    assert done.height > 0 and last[column] == pytest.approx(done["duration_min"].mean(), abs=0.01)


def test_a_builder_without_deliveries_is_refused(small_delivery: DeliveryData) -> None:
    with pytest.raises(ValueError, match="needs the labels table"):
        builders.restaurant_activity(small_delivery.orders)
    with pytest.raises(ValueError, match="labels: missing column"):
        builders.courier_activity(
            small_delivery.orders, labels=small_delivery.deliveries.drop("duration_min")
        )


# --- the loop ---------------------------------------------------------------------------------


def _cli(run: CliRun, home: Path, *args: str) -> dict[str, Any]:
    """A loopline command on the delivery use case; its JSON summary."""
    code, out, err = run(home, *args, "--use-case", str(SPEC_PATH))
    assert code == 0, f"loopline {' '.join(args)} failed ({code}): {err}\n{out}"
    return json.loads(out)


def _hold_back_newest(raw: Path, written: dict[str, list[Path]]) -> dict[str, tuple[Path, Path]]:
    """Hold back the newest batch of each table (moved aside; returns where to put it back)."""
    held: dict[str, tuple[Path, Path]] = {}
    for table in ("orders", "deliveries"):
        newest = written[table][-1]
        aside = raw.parent / "held" / table / newest.name
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(newest, aside)
        held[table] = (aside, newest)
    return held


@pytest.mark.usefixtures("delivery_env")
def test_delivery_loop_end_to_end_through_the_cli_and_the_api(run: CliRun, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    assert settings.feature_repo == FEATURE_REPO and Path(settings.use_case) == SPEC_PATH
    spec = load_spec(settings.use_case)
    # The live day is yesterday: replayed with each order's own time, it is present traffic.
    data = generate(DeliveryConfig(end=datetime.now(UTC).date() - timedelta(days=1)))
    written = write_raw(data, settings.raw_dir)

    # Ingest all but the newest week, build the features; then the newest week, incrementally.
    held = _hold_back_newest(settings.raw_dir, written)
    first = _cli(run, home, "ingest", "--json")
    assert first["rows_rejected"] == first["rows_quarantined"] == 0
    built = _cli(run, home, "features", "build")
    assert {t["mode"] for t in built["tables"].values()} == {"full"}
    for aside, back in held.values():
        shutil.move(aside, back)
    second = _cli(run, home, "ingest", "--json")
    assert second["orders"]["files_new"] == 1 and second["orders"]["files_skipped"] == 6
    assert first["orders"]["rows_accepted"] + second["orders"]["rows_accepted"] == (
        data.orders.height
    )
    built = _cli(run, home, "features", "build", "--materialize")
    assert {t["mode"] for t in built["tables"].values()} == {"incremental"}
    assert {m["view"] for m in built["materialized"]} == set(BUILDERS)

    # Train: a regression model on the point-in-time training set of delivery_v1.
    trained = _cli(run, home, "train")
    metrics = trained["metrics"]
    assert set(metrics) == {"rmse", "mae", "r2"}, metrics
    durations = data.deliveries["duration_min"]
    assert metrics["r2"] > 0.7 and metrics["rmse"] < 0.6 * float(durations.std()), metrics
    assert 0 < metrics["mae"] < metrics["rmse"]
    assert trained["gates_passed"] is True and trained["model_version"] == 1, trained.get("gates")

    store = Store.open(settings)
    with store.reader() as session:
        version = registry.get_version(session, spec.model_name, 1)
        assert version.feature_service == SERVICE
        assert session.get_one(Run, version.run_id).use_case == "delivery"
        assert set(version.metrics) == {"rmse", "mae", "r2"}
        inputs = list(version.feature_names["inputs"])
        assert inputs == transform.feature_names(spec)
        roles = dict(
            session.execute(
                select(ModelVersionDataset.role, DatasetVersion.dataset)
                .join(DatasetVersion, DatasetVersion.id == ModelVersionDataset.dataset_version_id)
                .where(ModelVersionDataset.model_version_id == version.id)
            ).all()
        )
        assert roles == {"events": "orders", "labels": "deliveries",
                         "feature:courier_activity": "courier_activity",
                         "feature:restaurant_activity": "restaurant_activity"}  # fmt: skip
        artifact_id = version.artifact_id

    promoted = _cli(run, home, "promote")
    assert promoted["promoted"] is True and promoted["model_version"] == 1

    # Serve: the prediction API of the delivery use case, on its own Feast repo.
    bodies = request_bodies(data.live, spec, n=80, seed=1, now=datetime.now(UTC))
    with TestClient(create_app(Settings(), refresh_s=60)) as client:
        assert client.get("/health").json()["champion"] == 1
        answers = [client.post("/predict", json=body) for body in bodies]
        assert {a.status_code for a in answers} == {200}, answers[0].text
        scores = np.array([a.json()["score"] for a in answers])
        assert ((scores > 4) & (scores < 240)).all() and scores.std() > 1.0
        assert all(a.json()["unknown_entities"] == [] for a in answers)
        assert {a.json()["feature_service"] for a in answers} == {SERVICE}

        # An unknown courier, ordering now (after every replayed order, so that no earlier
        # answer could have seen it).
        at = datetime.now(UTC)
        late = {"request_id": "stranger", "order_id": "stranger",
                "event_timestamp": at.isoformat(), "hour": at.hour}  # fmt: skip
        stranger = client.post("/predict", json={**bodies[0], "courier_id": 9999, **late})
        assert stranger.status_code == 200
        assert stranger.json()["unknown_entities"] == ["courier_id=9999"]
        bad = client.post("/predict", json={**bodies[0], "zone": "moon"})
        assert bad.status_code == 422 and bad.json()["message"].startswith("zone: ")

    # The served score is the offline model on the served features and the shared transform.
    logged = read_prediction_log(settings.prediction_log_dir)
    assert logged.height == len(bodies) + 1
    body = bodies[0]
    served = logged.filter(pl.col("request_id") == body["request_id"]).row(0, named=True)
    row = {k: v for k, v in body.items() if k in spec.features.request} | served["features"]
    row[spec.events.timestamp] = served["ts"]
    frame = pl.DataFrame([row], schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")})
    booster = load_booster(ArtifactStore(settings.artifacts_dir).get_bytes(artifact_id))
    offline = booster.predict(transform.to_numpy(transform.model_inputs(frame, spec)))[0]
    assert served["score"] == pytest.approx(float(offline), abs=1e-9)

    # Parity: the served orders land in the lake; every served value equals the point-in-time
    # offline value at the order's time (no platform change for this use case).
    _cli(run, home, "ingest", "--json")
    _cli(run, home, "features", "build")
    parity = _cli(run, home, "features", "skew", "--served", "--sample", "1000")
    assert parity["requests"] == len(bodies) + 1
    assert parity["checked"] == parity["requests"] * 15 and parity["mismatches"] == 0, parity

    # Monitor: served inputs and scores against the training reference.
    monitored = _cli(run, home, "monitor")
    assert monitored["features_checked"] == len(inputs) + 1
    with store.reader() as session:
        drift = list(session.scalars(select(DriftResult)))
        kinds = {r.kind for r in session.scalars(select(Run).where(Run.use_case == "delivery"))}
    assert {d.feature for d in drift} == {*inputs, "prediction"}
    # The window is the last day of event time (the replayed day started a little earlier).
    sizes = {d.sample_size for d in drift}
    assert len(sizes) == 1 and spec.drift.min_rows <= sizes.pop() <= len(bodies) + 1
    assert kinds == {"ingest", "features", "train", "promote", "monitor"}
    store.dispose()

"""Fresh features end to end on the fraud demo, with the real Feast store and the real stages.

The demo is anchored at now (history ends a day ago, the live day is the last 24 h), trained and
promoted; the API replays a sample of the live day with each event's own time; the landed
events are then ingested and the features rebuilt, and every value each request was served is
compared with the point-in-time offline value at its time: 0 mismatches. The same traffic raises
no drift against the training reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from loopline.data.contracts import read_batch
from loopline.data.demo import LIVE_DIR
from loopline.features import feast_ops
from loopline.features.served_skew import served_skew
from loopline.serving.app import create_app
from loopline.serving.online import LANDING_PREFIX
from loopline.serving.prediction_log import read_prediction_log
from loopline.serving.traffic import request_bodies
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.stages import run_features, run_ingest, run_monitor, run_promote, run_train
from loopline.stages.demo import write_demo_data
from loopline.stages.features import run_served_skew
from loopline.stages.score import run_score

pytestmark = pytest.mark.timeout(600)

SPEC = load_spec("fraud")
N_REQUESTS = 300


@dataclass
class Served:
    settings: Settings
    bodies: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    statuses: list[int]
    bad: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("fresh-serving")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOPLINE_HOME", str(home))
        settings = Settings(home=home)
        now = datetime.now(UTC)
        write_demo_data(settings, days=62, customers=300, seed=11, end=now)
        run_ingest(settings, SPEC)
        run_features(settings, SPEC)
        assert run_train(settings, SPEC)["gates_passed"] is True
        assert run_promote(settings, SPEC)["promoted"] is True
        live = read_batch(settings.raw_dir / LIVE_DIR / "transactions.csv", SPEC.events)
        bodies = request_bodies(live, SPEC, n=N_REQUESTS, seed=3, now=now)
        with TestClient(create_app(settings, refresh_s=60)) as client:
            answers = [client.post("/predict", json=body) for body in bodies]

            def at(case: str, when: str) -> Any:
                body = {**bodies[0], "request_id": f"{case}-1", "transaction_id": f"{case}-1"}
                return client.post("/predict", json={**body, "event_timestamp": when})

            bad = {
                "future": at("future", (now + timedelta(hours=1)).isoformat()),
                "stale": at("stale", (now - timedelta(days=9)).isoformat()),
                "naive": at("naive", "2026-01-01T00:00:00"),
                "health": client.get("/health").json(),
            }
        yield Served(
            settings,
            bodies,
            [a.json() for a in answers],
            [a.status_code for a in answers],
            bad,
        )


def test_every_live_event_is_answered_at_its_own_time(served: Served) -> None:
    assert set(served.statuses) == {200}, served.answers[0]
    for body, answer in zip(served.bodies, served.answers, strict=True):
        assert answer["event_timestamp"].replace("Z", "+00:00") == body["event_timestamp"]
        assert answer["event_id"] == body["transaction_id"]
        assert answer["role"] == "champion"
    # Customers of the demo have history: the fresh path finds them.
    unknown = sum(1 for a in served.answers if a["unknown_entities"])
    assert unknown <= len(served.answers) * 0.05


@pytest.mark.parametrize("case", ["future", "stale", "naive"])
def test_an_event_time_outside_the_bounds_is_422_and_changes_nothing(
    served: Served, case: str
) -> None:
    response = served.bad[case]
    assert response.status_code == 422
    assert response.json()["message"].startswith("event_timestamp: ")
    logged = read_prediction_log(served.settings.prediction_log_dir)
    assert logged.filter(pl.col("request_id") == f"{case}-1").is_empty()
    landed = _landed(served.settings)
    assert landed.filter(pl.col("transaction_id") == f"{case}-1").is_empty()


def test_served_events_land_for_the_next_ingest_and_feast_holds_fresh_rows(served: Served) -> None:
    landed = _landed(served.settings)
    assert sorted(landed["transaction_id"].to_list()) == sorted(
        b["transaction_id"] for b in served.bodies
    )
    assert served.bad["health"]["online"]["events_folded"] == len(served.bodies) > 100
    # The online store holds the customer's row after its last served event, not the batch one.
    last = served.bodies[-1]
    store = feast_ops.open_store(served.settings)
    (online,) = feast_ops.online_features(store, [last], SPEC.features.service)
    assert online["cust_last_txn_epoch_us"] == _epoch_us(last["event_timestamp"])


def test_served_features_equal_the_offline_point_in_time_values(served: Served) -> None:
    """The parity target of the issue: 0 mismatches beyond float tolerance."""
    run_ingest(served.settings, SPEC)  # the landed events, through the contract
    run_features(served.settings, SPEC)
    report = run_served_skew(served.settings, SPEC, sample=10_000)
    layout = feast_ops.service_layout(SPEC.features.service, SPEC)
    assert report["requests"] == len(served.bodies)
    assert report["checked"] == len(served.bodies) * len(layout.features)
    bad = [f for f in report["features"] if f["mismatches"]]
    assert report["mismatches"] == 0, bad[:3]

    # Requests after a table's watermark are not comparable for its view (a stale offline row).
    logged = read_prediction_log(served.settings.prediction_log_dir)
    middle = logged.get_column("ts").sort()[logged.height // 2]
    limited = served_skew(
        feast_ops.open_store(served.settings), logged, SPEC,
        watermarks={"customer_activity": middle},
    )  # fmt: skip
    by_view = {f.view: f for f in limited.features}
    later = logged.filter(pl.col("ts") > middle).height
    assert by_view["customer_activity"].beyond_watermark == later > 0
    assert by_view["merchant_activity"].beyond_watermark == 0
    assert limited.mismatches == 0


def test_batch_scoring_gives_the_served_scores(served: Served) -> None:
    """The same transform online and in batch: the served events, scored by `loopline score`
    over the lake table (point-in-time features), get the scores /predict answered."""
    result = run_score(served.settings, SPEC)
    scores = pl.read_delta(result.uri, version=result.table_version)
    answered = {a["event_id"]: a["score"] for a in served.answers}
    batch = dict(
        scores.filter(pl.col("transaction_id").is_in(list(answered)))
        .select("transaction_id", "score")
        .iter_rows()
    )
    assert set(batch) == set(answered)
    for event_id, score in answered.items():
        assert batch[event_id] == pytest.approx(score, abs=1e-12), event_id


def test_untouched_demo_traffic_raises_no_drift(served: Served) -> None:
    summary = run_monitor(served.settings, SPEC)
    assert summary["features_checked"] > 30
    assert summary["drifted"] == [], summary


def _landed(settings: Settings) -> pl.DataFrame:
    folder = settings.raw_dir / SPEC.events.table
    files = sorted(Path(folder).glob(f"{LANDING_PREFIX}*.parquet"))
    return (
        pl.concat([pl.read_parquet(f) for f in files])
        if files
        else pl.DataFrame(schema={"transaction_id": pl.String})
    )


def _epoch_us(iso: str) -> int:
    at = datetime.fromisoformat(iso)
    return int((at - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))

"""The prediction API's routing, guards and bad input, on a real uvicorn server.

Feast is stubbed as in test_serving.py (deterministic features); models, registry, transform,
prediction log and API keys are real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from serving.auth_helpers import assert_every_route_guarded
from test_serving import (
    VALID,
    Home,
    Server,
    expected_score,
    fake_features,
    make_home,
    serve,
    traffic_during,
)

from loopline.registry.models import delete_alias, get_alias, set_alias
from loopline.serving.api_keys import create_key
from loopline.serving.app import create_app
from loopline.serving.prediction_log import read_prediction_log

pytestmark = pytest.mark.timeout(180)

REFRESH_S = 0.2


def _move(home: Home, alias: str, version: int) -> None:
    with home.store.session() as session:
        current = get_alias(session, home.spec.model_name, alias)
        set_alias(
            session,
            model_name=home.spec.model_name,
            alias=alias,
            version=version,
            expected_revision=current.revision if current else None,
            actor="test",
        )


def _wait(api: Server, role: str, version: int | None) -> None:
    deadline = time.monotonic() + 10
    while api.client.get("/health").json()[role] != version:
        assert time.monotonic() < deadline, f"{role} {version} not picked up within 10 s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Server]]:
    home = make_home(tmp_path_factory.mktemp("routing"))
    home.promote(1)
    app = create_app(home.settings, feature_lookup=fake_features, refresh_s=REFRESH_S)
    with serve(app) as server:
        _wait(server, "champion", 1)
        yield home, server


def _logged(home: Home) -> pl.DataFrame:
    return read_prediction_log(home.settings.prediction_log_dir)


def test_canary_is_sticky_by_entity_and_takes_its_share(routed: tuple[Home, Server]) -> None:
    home, api = routed
    _move(home, "canary", 2)
    _wait(api, "canary", 2)
    try:
        customers = range(1, 801)
        first = {}
        for c in customers:
            r = api.client.post("/predict", json={**VALID, "customer_id": c})
            assert r.status_code == 200, r.text
            first[c] = (r.json()["role"], r.json()["model_version"])
        # The same entity always gets the same model.
        for c in list(customers)[:100]:
            again = api.client.post("/predict", json={**VALID, "customer_id": c}).json()
            assert (again["role"], again["model_version"]) == first[c]
        share = sum(1 for role, _ in first.values() if role == "canary") / len(first)
        assert abs(share - home.spec.serving.canary_share) < 0.035, share
        assert {v for role, v in first.values() if role == "canary"} == {2}
        assert {v for role, v in first.values() if role == "champion"} == {1}
        models = {m["role"]: m for m in api.client.get("/models").json()["models"]}
        assert models["canary"]["version"] == 2 and models["canary"]["share"] == 0.1
    finally:
        with home.store.session() as session:
            delete_alias(session, model_name=home.spec.model_name, alias="canary", actor="test")
        _wait(api, "canary", None)


def test_shadow_scores_every_request_and_never_changes_the_answer(
    routed: tuple[Home, Server],
) -> None:
    home, api = routed
    _move(home, "shadow", 2)
    _wait(api, "shadow", 2)
    ids = [f"shadow-{i}" for i in range(40)]
    try:
        for i, request_id in enumerate(ids):
            body = {**VALID, "customer_id": 1000 + i, "request_id": request_id}
            answer = api.client.post("/predict", json=body).json()
            # The champion's score, exactly, whatever the shadow says.
            assert (answer["role"], answer["model_version"]) == ("champion", 1)
            assert answer["score"] == pytest.approx(expected_score(home, 1, body), abs=1e-12)
        deadline = time.monotonic() + 10
        while api.client.get("/health").json()["shadow_queue"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        logged = _logged(home).filter(pl.col("request_id").is_in(ids))
        roles = logged.group_by("role").agg(pl.len(), pl.col("model_version").unique())
        by_role = {r["role"]: r for r in roles.iter_rows(named=True)}
        assert by_role["champion"]["len"] == by_role["shadow"]["len"] == len(ids)
        assert by_role["shadow"]["model_version"] == [2]
        shadow = logged.filter(pl.col("role") == "shadow").sort("request_id")
        body = {**VALID, "customer_id": 1000, "request_id": ids[0]}
        first = shadow.filter(pl.col("request_id") == ids[0])["score"].item()
        assert first == pytest.approx(expected_score(home, 2, body), abs=1e-12)
    finally:
        with home.store.session() as session:
            delete_alias(session, model_name=home.spec.model_name, alias="shadow", actor="test")
        _wait(api, "shadow", None)


def test_promotion_and_rollback_under_load_drop_nothing(routed: tuple[Home, Server]) -> None:
    home, api = routed

    def promote_and_roll_back() -> None:
        home.promote(2)
        _wait(api, "champion", 2)
        time.sleep(0.3)
        home.promote(1)  # the rollback
        _wait(api, "champion", 1)

    seen = traffic_during(api, promote_and_roll_back, clients=3)
    assert len(seen) > 50
    assert {status for status, _ in seen} == {200}
    assert {version for _, version in seen} == {1, 2}


BAD = [
    ("event_timestamp", {"event_timestamp": "yesterday"}),
    ("event_timestamp", {"event_timestamp": "2026-01-01T00:00:00"}),
    ("event_timestamp", {"event_timestamp": "2000-01-01T00:00:00+00:00"}),
    ("transaction_id", {"transaction_id": "has space"}),
    ("features", {"features": {"cust_txn_count_1h": 1.0}}),
    ("features", {"features": "all"}),
    ("amount", {"amount": float("nan")}),
]


@pytest.mark.parametrize(("field", "change"), BAD)
def test_bad_input_is_422_naming_the_field_and_nothing_is_logged(
    routed: tuple[Home, Server], field: str, change: dict[str, Any]
) -> None:
    home, api = routed
    before = _logged(home).height
    body = {**VALID, **change, "request_id": "bad-1"}
    if field == "amount":  # JSON has no NaN: send what a lax client would
        response = api.client.post(
            "/predict",
            content=b'{"customer_id": 1, "merchant_id": 1, "amount": NaN, "merchant_category": '
            b'"grocery", "channel": "chip", "country": "US", "hour": 1}',
            headers={"content-type": "application/json"},
        )
    else:
        response = api.client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(field), response.json()["message"]
    assert _logged(home).height == before


def test_full_payload_is_scored_as_given(routed: tuple[Home, Server]) -> None:
    home, api = routed
    features = fake_features([VALID], home.spec.features.service)[0]
    payload = {k: v for k, v in features.items() if k not in ("customer_id", "merchant_id")}
    answer = api.client.post(
        "/predict", json={**VALID, "features": payload, "request_id": "payload-1"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["score"] == pytest.approx(expected_score(home, 1, VALID), abs=1e-12)
    row = _logged(home).filter(pl.col("request_id") == "payload-1")
    assert row.height == 1


def test_batch_scores_like_single_requests(routed: tuple[Home, Server]) -> None:
    home, api = routed
    rows = [{**VALID, "customer_id": c, "request_id": f"batch-{c}"} for c in range(1, 21)]
    answer = api.client.post("/predict/batch", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    for row, got in zip(rows, answer.json()["predictions"], strict=True):
        assert got["request_id"] == row["request_id"]
        assert got["score"] == pytest.approx(expected_score(home, 1, row), abs=1e-12)
    bad = api.client.post("/predict/batch", json={"rows": [*rows[:3], {**VALID, "hour": 99}]})
    assert bad.status_code == 422 and bad.json()["message"].startswith("rows.3.hour")
    too_many = api.client.post("/predict/batch", json={"rows": [VALID] * 1001})
    assert too_many.status_code == 422 and too_many.json()["message"].startswith("rows")


def test_every_route_needs_its_key_once_keys_exist(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    home.promote(1)
    with home.store.session() as session:
        predict_key = create_key(session, name="p", scopes=["predict"], actor="test").token
        admin_key = create_key(session, name="a", scopes=["admin"], actor="test").token
    app = create_app(home.settings, feature_lookup=fake_features, refresh_s=REFRESH_S)
    checked = assert_every_route_guarded(app, predict_key, admin_key, public={"/health", "/ready"})
    paths = {path for _, path, _ in checked}
    assert {"/predict", "/predict/batch", "/events", "/models", "/model"} <= paths
    with TestClient(app) as client:
        ok = client.post("/predict", json=VALID, headers={"X-API-Key": predict_key})
        assert ok.status_code == 200
        big = client.post(
            "/predict",
            content=b"{" + b" " * (home.settings.max_body_bytes + 1) + b"}",
            headers={"X-API-Key": predict_key, "content-type": "application/json"},
        )
        assert big.status_code == 413


def test_refuses_to_start_exposed_without_a_key(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    exposed = home.settings.model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(Exception, match="API key"), TestClient(create_app(exposed)):
        pass

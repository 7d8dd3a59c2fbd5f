"""The prediction API on a real uvicorn server over a real metadata store, registry and transform.

Only Feast's online store is stubbed (a lookup callable injected into `create_app`); the models
are tiny LightGBM boosters trained on random data and registered like the training stage does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import uvicorn

from loopline.features import transform
from loopline.features.feast_ops import service_layout
from loopline.lake.artifacts import ArtifactStore
from loopline.registry.models import get_alias, register_version, set_alias
from loopline.serving.app import create_app
from loopline.serving.prediction_log import read_prediction_log
from loopline.settings import Settings
from loopline.spec import UseCaseSpec, load_spec
from loopline.store import Store
from loopline.tracking import tracked_run

pytestmark = pytest.mark.timeout(120)

REFRESH_S = 0.2
VALID = {
    "customer_id": 17,
    "merchant_id": 4,
    "amount": 123.45,
    "merchant_category": "electronics",
    "channel": "online",
    "country": "GB",
    "hour": 23,
}


@dataclass
class Home:
    """A data home with a registered model and two versions (no alias set yet)."""

    settings: Settings
    store: Store
    spec: UseCaseSpec
    boosters: dict[int, lgb.Booster]

    def promote(self, version: int) -> None:
        with self.store.session() as session:
            current = get_alias(session, self.spec.model_name, "champion")
            set_alias(
                session,
                model_name=self.spec.model_name,
                alias="champion",
                version=version,
                expected_revision=current.revision if current else None,
                actor="test",
            )


def fake_features(rows: Sequence[Mapping[str, Any]], service: str) -> list[dict[str, Any]]:
    """Deterministic stand-in for Feast: values from the keys; customer 0 is unknown (None)."""
    layout = service_layout(service)
    names = layout.features
    out = []
    for row in rows:
        c, m = row["customer_id"], row["merchant_id"]
        # Helpers (e.g. the last event time behind recency) stay unknown: the expected score
        # must not depend on the API's clock.
        values = [
            None if c == 0 or name in layout.helpers else float((c * 31 + m * 7 + i) % 97)
            for i, name in enumerate(names)
        ]
        out.append({"customer_id": c, "merchant_id": m, **dict(zip(names, values, strict=True))})
    return out


def make_home(root: Path) -> Home:
    settings = Settings(home=root / "home", feature_repo=root / "no_feature_repo")
    store = Store.open(settings)
    artifacts = ArtifactStore(settings.artifacts_dir)
    spec = load_spec("fraud")
    names = transform.feature_names(spec)
    rng = np.random.default_rng(7)
    x = rng.normal(50, 30, size=(300, len(names)))
    boosters = {}
    with tracked_run(store, artifacts, kind="train", use_case=spec.name, project_dir=root) as run:
        for version, column in ((1, 0), (2, 3)):
            y = (x[:, column] + rng.normal(0, 10, 300) > 50).astype(int)
            params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 1}
            booster = lgb.train(params, lgb.Dataset(x, y, feature_name=names), num_boost_round=8)
            model_id = run.log_artifact_bytes(
                f"model_v{version}", booster.model_to_string().encode(), media_type="text/plain"
            )
            with store.session() as session:
                register_version(
                    session,
                    model_name=spec.model_name,
                    use_case=spec.name,
                    run_id=run.run_id,
                    artifact_id=model_id,
                    feature_service=spec.features.service,
                    feature_names=names,
                    metrics={},
                    datasets={},
                )
            boosters[version] = booster
    return Home(settings, store, spec, boosters)


@dataclass
class Server:
    url: str
    client: httpx.Client


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: Any) -> Iterator[Server]:
    """Run `app` on a real uvicorn server on a free loopback port in a thread."""
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "server thread died during startup"
        assert time.monotonic() < deadline, "server did not start within 20 s"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield Server(url, client)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return make_home(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def api(home: Home) -> Iterator[Server]:
    app = create_app(home.settings, feature_lookup=fake_features, refresh_s=REFRESH_S)
    with serve(app) as server:
        yield server


def expected_score(home: Home, version: int, body: Mapping[str, Any]) -> float:
    """What the model gives on the same inputs, built here without the API's code."""
    row = {
        **fake_features([body], home.spec.features.service)[0],
        **body,
        home.spec.events.timestamp: datetime.now(UTC),
    }
    nulls = {name: pl.Float64 for name, value in row.items() if value is None}
    frame = pl.DataFrame([row], schema_overrides=nulls)
    inputs = transform.to_numpy(transform.model_inputs(frame, home.spec))
    return float(home.boosters[version].predict(inputs)[0])


def wait_for_champion(api: Server, version: int) -> None:
    deadline = time.monotonic() + 10
    while api.client.get("/health").json()["champion"] != version:
        assert time.monotonic() < deadline, f"champion {version} not picked up within 10 s"
        time.sleep(0.05)


def traffic_during(
    api: Server, action: Callable[[], None], *, clients: int = 1
) -> list[tuple[int, int]]:
    """(status, model version) of every /predict sent by `clients` threads while `action` runs
    (with 0.3 s of traffic before and after it); a client's exception fails the caller."""
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        try:
            with httpx.Client(base_url=api.url, timeout=10) as client:
                while not stop.is_set():
                    r = client.post("/predict", json=VALID)
                    seen.append((r.status_code, r.json().get("model_version", -1)))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    senders = [threading.Thread(target=traffic) for _ in range(clients)]
    for sender in senders:
        sender.start()
    try:
        time.sleep(0.3)
        action()
        time.sleep(0.3)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=10)
    assert errors == []
    return seen


def test_predict_lifecycle_and_live_promotion(home: Home, api: Server) -> None:
    # No champion yet: the process is up, predictions are refused with a reason.
    health = api.client.get("/health").json()
    assert (health["status"], health["champion"], health["canary"]) == ("ok", None, None)
    assert api.client.get("/ready").status_code == 503
    refused = api.client.post("/predict", json=VALID)
    assert refused.status_code == 503
    assert "no champion" in refused.json()["detail"]
    assert api.client.get("/model").status_code == 503

    home.promote(1)
    wait_for_champion(api, 1)
    model = api.client.get("/model").json()
    assert (model["version"], model["inputs"]) == (1, transform.feature_names(home.spec))

    bodies = [
        VALID,
        {**VALID, "customer_id": 0, "request_id": "unknown-customer_1"},  # no features: NaN
        {**VALID, "amount": 5000.0, "channel": "chip", "hour": 0, "merchant_id": 99},
    ]
    for body in bodies:
        response = api.client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["score"] == pytest.approx(expected_score(home, 1, body), abs=1e-9)
        assert (got["model_name"], got["model_version"]) == (home.spec.model_name, 1)
        assert got["feature_service"] == home.spec.features.service
        assert got["request_id"] == body.get("request_id", got["request_id"])
        assert len(got["request_id"]) > 0

    # Promote while a client keeps sending: every request answers, versions move forward once.
    def promote_two() -> None:
        home.promote(2)
        wait_for_champion(api, 2)

    seen = traffic_during(api, promote_two)
    statuses = {status for status, _ in seen}
    versions = [v for _, v in seen]
    assert statuses == {200}
    assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 2

    after = api.client.post("/predict", json=VALID).json()
    assert after["model_version"] == 2
    assert after["score"] == pytest.approx(expected_score(home, 2, VALID), abs=1e-9)
    assert expected_score(home, 1, VALID) != pytest.approx(after["score"], abs=1e-9)

    # Every answered prediction is in the log, with its version, inputs and score.
    logged = read_prediction_log(home.settings.prediction_log_dir)
    assert logged.height == len(bodies) + len(seen) + 1
    first = logged.row(0, named=True)
    assert first["model_version"] == 1 and first["request"]["merchant_category"] == "electronics"
    assert first["score"] == pytest.approx(expected_score(home, 1, VALID), abs=1e-9)
    assert sorted(first["inputs"]) == sorted(transform.feature_names(home.spec))
    unknown = logged.filter(pl.col("request_id") == "unknown-customer_1")
    assert unknown.height == 1
    assert unknown["inputs"].struct.field("cust_txn_count_7d").to_list() == [None]
    assert logged["model_version"].to_list()[-1] == 2


BAD_INPUTS = [
    ("amount", {"amount": -5.0}),
    ("amount", {"amount": 0}),
    ("amount", {"amount": "12.5"}),
    ("amount", {"amount": 1e9}),
    ("hour", {"hour": 24}),
    ("hour", {"hour": 3.5}),
    ("customer_id", {"customer_id": -1}),
    ("customer_id", {"customer_id": "42"}),
    ("merchant_id", {"merchant_id": True}),
    ("merchant_category", {"merchant_category": "casino"}),
    ("channel", {"channel": None}),
    ("discount", {"discount": 0.1}),
    ("request_id", {"request_id": "x" * 65}),
    ("request_id", {"request_id": "has space"}),
]


@pytest.mark.parametrize(("field", "change"), BAD_INPUTS)
def test_bad_input_is_422_naming_the_field(api: Server, field: str, change: dict[str, Any]) -> None:
    response = api.client.post("/predict", json={**VALID, **change})
    assert response.status_code == 422
    body = response.json()
    assert body["message"].startswith(f"{field}: "), body["message"]
    assert [e["loc"][-1] for e in body["detail"]] == [field]


def test_missing_field_is_422_naming_it(api: Server) -> None:
    body = {k: v for k, v in VALID.items() if k != "country"}
    response = api.client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["message"] == "country: Field required"


def test_broken_json_is_422(api: Server) -> None:
    headers = {"content-type": "application/json"}
    response = api.client.post("/predict", content=b'{"amount": ', headers=headers)
    assert response.status_code == 422
    assert response.json()["message"].startswith("body: not valid JSON")


def test_feast_unavailable_is_503_with_reason(tmp_path: Path) -> None:
    home = make_home(tmp_path)  # its feature_repo folder does not exist
    home.promote(1)
    with serve(create_app(home.settings, refresh_s=REFRESH_S)) as api:
        assert api.client.get("/health").json()["champion"] == 1
        assert "features unavailable" in api.client.get("/ready").json()["reason"]
        response = api.client.post("/predict", json=VALID)
        assert response.status_code == 503
        assert "feature store unavailable" in response.json()["detail"]
        assert "feature_store.yaml" in response.json()["detail"]
    assert read_prediction_log(home.settings.prediction_log_dir).is_empty()

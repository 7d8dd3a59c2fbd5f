"""API-key guards on a minimal app: 401/403/200, open mode, the verifier cache, the bind check."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from auth_helpers import BAD_KEY, assert_every_route_guarded
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from loopline.serving import auth
from loopline.serving.api_keys import create_key, revoke_key
from loopline.serving.auth import (
    BindConfigError,
    KeyVerifier,
    Principal,
    check_bind,
    is_loopback,
    open_verifier,
    require_scope,
    use_verifier,
)
from loopline.settings import Settings
from loopline.store import Store


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    def predict(who: Principal = Depends(require_scope("predict"))) -> dict[str, str | None]:
        return {"key": who.key_id, "name": who.name}

    @app.post("/admin/reload", dependencies=[Depends(require_scope("admin"))])
    def reload() -> dict[str, bool]:
        return {"reloaded": True}

    @app.get("/models/{name}", dependencies=[Depends(require_scope("predict"))])
    def model(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _client(store: Store, *, require: bool = False, cache_s: float = 5.0) -> TestClient:
    app = _app()
    use_verifier(app, KeyVerifier(store, require=require, cache_s=cache_s))
    return TestClient(app)


@pytest.fixture
def client(store: Store, keys: dict[str, str]) -> Iterator[TestClient]:
    with _client(store) as http:
        yield http


def _headers(keys: dict[str, str], who: str | None, how: str) -> dict[str, str]:
    if who is None:
        return {}
    token = BAD_KEY if who == "bad" else keys[who]
    return {"Authorization": f"Bearer {token}"} if how == "bearer" else {"X-API-Key": token}


@pytest.mark.parametrize("how", ["bearer", "x-api-key"])
@pytest.mark.parametrize(
    ("path", "who", "status"),
    [
        ("/predict", None, 401),
        ("/predict", "bad", 401),
        ("/predict", "predict", 200),
        ("/predict", "admin", 200),
        ("/admin/reload", None, 401),
        ("/admin/reload", "bad", 401),
        ("/admin/reload", "predict", 403),
        ("/admin/reload", "admin", 200),
    ],
)
def test_a_route_answers_by_key_and_scope(
    client: TestClient, keys: dict[str, str], path: str, who: str | None, how: str, status: int
) -> None:
    answer = client.post(path, headers=_headers(keys, who, how))
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="loopline"')
    if status == 403:
        assert answer.headers["WWW-Authenticate"] == (
            'Bearer error="insufficient_scope", scope="admin"'
        )
        assert "lacks scope 'admin'" in answer.json()["detail"]
    for token in keys.values():
        assert token not in answer.text


def test_the_route_receives_the_principal(client: TestClient, keys: dict[str, str]) -> None:
    answer = client.post("/predict", headers={"X-API-Key": keys["predict"]})
    assert answer.json() == {"key": keys["predict"].split("_")[1], "name": "scorer"}


def test_every_route_is_guarded(client: TestClient, keys: dict[str, str]) -> None:
    checked = assert_every_route_guarded(
        client.app,  # type: ignore[arg-type]
        keys["predict"],
        keys["admin"],
        public={"/health"},
        client=client,
    )
    assert sorted(checked) == [
        ("GET", "/health", "public"),
        ("GET", "/models/{name}", "predict"),
        ("POST", "/admin/reload", "admin"),
        ("POST", "/predict", "predict"),
    ]


def test_the_route_walk_finds_an_unguarded_route(client: TestClient, keys: dict[str, str]) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.get("/leak")
    def leak() -> dict[str, str]:
        return {}

    with pytest.raises(AssertionError, match="GET /leak: no require_scope"):
        assert_every_route_guarded(
            app, keys["predict"], keys["admin"], public={"/health"}, client=client
        )


def test_with_no_key_a_loopback_service_is_open_until_the_first_key(store: Store) -> None:
    with _client(store) as http:
        answer = http.post("/predict")
        assert answer.status_code == 200 and answer.json()["name"] == "anonymous"
        assert http.post("/predict", headers={"X-API-Key": BAD_KEY}).status_code == 401
        with store.session() as session:
            create_key(session, name="k", scopes=["predict"], actor="t")
        verifier: KeyVerifier = http.app.state.key_verifier  # type: ignore[attr-defined]
        verifier.forget()  # as after api_key_cache_s
        assert http.post("/predict").status_code == 401


def test_required_keys_are_demanded_even_before_any_exists(store: Store) -> None:
    with _client(store, require=True) as http:
        assert http.post("/predict").status_code == 401


def test_without_a_verifier_the_guards_fail_closed() -> None:
    with TestClient(_app()) as http:
        answer = http.post("/predict")
    assert answer.status_code == 500 and "not configured" in answer.json()["detail"]


def test_a_revocation_takes_effect_within_the_cache_time(
    store: Store, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    verifier = KeyVerifier(store, require=False, cache_s=5.0, clock=clock)
    calls: list[str] = []
    real = auth.verify_key
    monkeypatch.setattr(auth, "verify_key", lambda s, t: calls.append("db") or real(s, t))
    assert verifier.verify(keys["predict"]) is not None
    assert verifier.verify(keys["predict"]) is not None
    assert verifier.verify(BAD_KEY) is None and verifier.verify(BAD_KEY) is None
    assert calls == ["db", "db"]  # one store check (and scrypt) per token per cache time
    with store.session() as session:
        revoke_key(session, key_id=keys["predict"].split("_")[1], actor="t")
    clock.now += 4.9
    assert verifier.verify(keys["predict"]) is not None  # still trusted: documented
    clock.now += 0.2
    assert verifier.verify(keys["predict"]) is None


def test_with_no_cache_every_check_asks_the_store(store: Store, keys: dict[str, str]) -> None:
    verifier = KeyVerifier(store, require=False, cache_s=0)
    assert verifier.verify(keys["admin"]) is not None
    with store.session() as session:
        revoke_key(session, key_id=keys["admin"].split("_")[1], actor="t")
    assert verifier.verify(keys["admin"]) is None


def test_the_cache_stays_bounded(store: Store) -> None:
    clock = Clock()
    verifier = KeyVerifier(store, require=False, cache_s=5.0, max_entries=3, clock=clock)
    for n in range(10):
        verifier.verify(f"junk-{n}")
    assert len(verifier._outcomes) <= 3


def test_a_used_key_gets_its_last_use_recorded(store: Store, keys: dict[str, str]) -> None:
    import time

    from loopline.store.tables import ApiKey

    KeyVerifier(store, require=False, cache_s=5.0).verify(keys["predict"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with store.reader() as session:
            if session.get(ApiKey, keys["predict"].split("_")[1]).last_used_at:  # type: ignore[union-attr]
                return
        time.sleep(0.05)
    pytest.fail("last_used_at was not written")


def test_keys_never_reach_the_logs(
    client: TestClient, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (*keys.values(), BAD_KEY):
        client.post("/admin/reload", headers={"Authorization": f"Bearer {token}"})
    for token in (*keys.values(), BAD_KEY):
        assert token not in caplog.text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "keys_exist", "require", "refused"),
    [
        ("127.0.0.1", False, False, None),
        ("localhost", False, False, None),
        ("::1", False, False, None),
        ("127.0.0.1", True, False, None),
        ("127.0.0.1", True, True, None),
        ("127.0.0.1", False, True, "require_api_keys: set, but no active API key"),
        ("0.0.0.0", False, False, "host '0.0.0.0': a non-loopback bind needs an active API key"),
        ("0.0.0.0", False, True, "host '0.0.0.0'"),
        ("::", False, False, "host '::'"),
        ("10.1.2.3", False, False, "host '10.1.2.3'"),
        ("0.0.0.0", True, False, None),
        ("10.1.2.3", True, True, None),
    ],
)
def test_check_bind(host: str, keys_exist: bool, require: bool, refused: str | None) -> None:
    if refused is None:
        check_bind(host, keys_exist=keys_exist, require=require)
        return
    with pytest.raises(BindConfigError, match=refused) as error:
        check_bind(host, keys_exist=keys_exist, require=require)
    assert "\n" not in str(error.value)


def test_open_verifier_checks_the_bind_and_keeps_an_exposed_bind_closed(
    settings: Settings, store: Store
) -> None:
    with pytest.raises(BindConfigError, match="non-loopback"):
        open_verifier(store, settings, host="0.0.0.0")
    assert not open_verifier(store, settings).require
    with store.session() as session:
        key_id = create_key(session, name="k", scopes=["predict"], actor="t").key.id
    verifier = open_verifier(store, settings, host="0.0.0.0")
    with store.session() as session:
        revoke_key(session, key_id=key_id, actor="t")
    assert verifier.require and verifier.enforced()  # revoking the last key never opens it


def test_an_unknown_scope_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="scope 'write'"):
        require_scope("write")
    assert require_scope("predict") is require_scope("predict")

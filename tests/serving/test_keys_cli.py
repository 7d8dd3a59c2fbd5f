"""`loopline keys` create/list/revoke; `loopline serve` refuses an exposed bind without keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loopline.serving.api_keys import verify_key
from loopline.settings import Settings
from loopline.store import Store

Run = Callable[..., tuple[int, str, str]]


def _database_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("loopline.db*") if p.is_file())


def test_create_list_revoke(run: Run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out, err = run(home, "keys", "create", "--name", "replay", "--scope", "predict")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("ll_") and out.count("\n") == 1
    key_id = token.split("_")[1]
    assert f"created key {key_id} ('replay', scopes predict)" in err and token not in err
    store = Store.open(Settings(home=home))
    with store.reader() as session:
        assert verify_key(session, token) is not None
    store.dispose()
    assert token.split("_", 2)[2].encode() not in _database_bytes(home)

    code, out, _ = run(home, "keys", "create", "--name", "ops", "--scope", "admin", "--json")
    assert code == 0
    admin = json.loads(out)
    assert admin["scopes"] == ["admin"] and admin["key"].startswith(f"ll_{admin['id']}_")

    code, out, _ = run(home, "keys", "list", "--json")
    listed = json.loads(out)["keys"]
    assert code == 0 and {k["id"] for k in listed} == {key_id, admin["id"]}
    assert token not in out and admin["key"] not in out and "scrypt" not in out
    code, out, _ = run(home, "keys", "list")
    assert code == 0 and "replay" in out and token not in out

    code, out, err = run(home, "keys", "revoke", key_id)
    assert code == 0 and f"revoked key {key_id}" in out and "warning" not in err
    code, out, _ = run(home, "keys", "list", "--json")
    assert [k["id"] for k in json.loads(out)["keys"]] == [admin["id"]]
    code, out, _ = run(home, "keys", "list", "--revoked", "--json")
    assert {k["id"]: k["revoked_at"] is not None for k in json.loads(out)["keys"]} == {
        key_id: True,
        admin["id"]: False,
    }
    code, _, err = run(home, "keys", "revoke", admin["id"])
    assert code == 0 and "no active key is left" in err
    for secret in (token, admin["key"]):
        assert secret.split("_", 2)[2].encode() not in _database_bytes(home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "x", "--scope", "write"], "scope 'write': not one of admin, predict"),
        (["create", "--name", " ", "--scope", "predict"], "name: give 1-200 characters"),
        (["create", "--name", "x"], "--scope"),
        (["revoke", "0123456789abcdef"], "key id '0123456789abcdef': no such key"),
        (["revoke", "nope"], "key id 'nope': expected 16 hex characters"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    run: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    home = tmp_path / "home"
    code, out, err = run(home, "keys", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert out == ""
    code, out, _ = run(home, "keys", "list", "--revoked", "--json")
    assert json.loads(out) == {"keys": []}


def test_revoking_twice_exits_2(run: Run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, out, _ = run(home, "keys", "create", "--name", "x", "--scope", "predict")
    key_id = out.strip().split("_")[1]
    assert run(home, "keys", "revoke", key_id)[0] == 0
    code, _, err = run(home, "keys", "revoke", key_id)
    assert code == 2 and "already revoked" in err


def test_serve_refuses_an_exposed_bind_without_keys(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(kw))
    monkeypatch.setenv("LOOPLINE_HOST", "127.0.0.1")  # restored after the test
    home = tmp_path / "home"
    code, _, err = run(home, "serve", "--host", "0.0.0.0")
    assert code == 2 and "host '0.0.0.0': a non-loopback bind needs an active API key" in err
    assert started == []
    run(home, "keys", "create", "--name", "x", "--scope", "predict")
    code, _, err = run(home, "serve", "--host", "0.0.0.0")
    assert code == 0, err
    assert started[0]["host"] == "0.0.0.0" and Settings().host == "0.0.0.0"

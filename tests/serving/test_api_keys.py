"""API keys in the store: salted hashes, verification, revocation, scopes, audit, migration."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from loopline.serving import api_keys
from loopline.serving.api_keys import (
    ApiKeyError,
    create_key,
    has_active_keys,
    key_record,
    key_scopes,
    list_keys,
    record_use,
    revoke_key,
    verify_key,
)
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.db import make_engine
from loopline.store.migrate import alembic_config, at_head, upgrade
from loopline.store.tables import ApiKey, AuditEvent, Base, utcnow


def _secret(token: str) -> str:
    return token.split("_", 2)[2]


def test_a_created_key_verifies_and_only_its_salted_hash_is_stored(store: Store) -> None:
    with store.session() as session:
        created = create_key(session, name=" scorer ", scopes=["predict"], actor="alice")
    prefix, key_id, secret = created.token.split("_", 2)
    assert (prefix, key_id, len(secret)) == ("ll", created.key.id, 43)
    with store.reader() as session:
        row = session.get(ApiKey, key_id)
        assert row is not None and row.name == "scorer" and row.created_by == "alice"
        assert secret not in row.secret_hash and created.token not in row.secret_hash
        assert row.secret_hash.startswith("scrypt$16384$8$1$")
        verified = verify_key(session, created.token)
        assert verified is not None and verified.id == key_id
        assert "secret_hash" not in key_record(row)


def test_two_hashes_of_one_secret_differ_by_their_salt() -> None:
    first, second = api_keys.hash_secret("s3cret"), api_keys.hash_secret("s3cret")
    assert first != second
    assert api_keys.secret_matches("s3cret", first) and api_keys.secret_matches("s3cret", second)
    assert not api_keys.secret_matches("s3cret!", first)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: t.replace("ll_", "xx_", 1),  # wrong prefix
        lambda t: t[:-1],  # secret too short
        lambda t: "ll_" + "0" * 16 + "_" + _secret(t),  # unknown id, right secret
        lambda t: "",
        lambda t: "Bearer " + t,
    ],
    ids=["wrong-secret", "prefix", "short", "unknown-id", "empty", "scheme-included"],
)
def test_a_wrong_token_verifies_to_nothing(store: Store, mangle: Any) -> None:
    with store.session() as session:
        token = create_key(session, name="k", scopes=["predict"], actor="t").token
    with store.reader() as session:
        assert verify_key(session, mangle(token)) is None


def test_a_malformed_stored_hash_never_matches() -> None:
    for stored in ["", "scrypt$1$2", "bcrypt$16384$8$1$00$00", "scrypt$x$8$1$00$00"]:
        assert not api_keys.secret_matches("anything", stored)


def test_a_revoked_key_is_refused_and_audited(store: Store) -> None:
    with store.session() as session:
        created = create_key(session, name="k", scopes=["admin"], actor="alice")
    with store.session() as session:
        revoked = revoke_key(session, key_id=created.key.id.upper(), actor="bob")
        assert revoked.revoked_by == "bob" and revoked.revoked_at is not None
    with store.reader() as session:
        assert verify_key(session, created.token) is None
        assert not has_active_keys(session)
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.actor, e.subject_id) for e in events] == [
        ("api_key.create", "alice", created.key.id),
        ("api_key.revoke", "bob", created.key.id),
    ]
    assert created.token not in repr([e.detail for e in events])


@pytest.mark.parametrize(
    ("key_id", "message"),
    [
        ("nothex", "expected 16 hex characters"),
        ("0" * 16, "no such key"),
    ],
)
def test_revoking_a_bad_id_names_it(store: Store, key_id: str, message: str) -> None:
    with pytest.raises(ApiKeyError, match=message), store.session() as session:
        revoke_key(session, key_id=key_id, actor="t")


def test_revoking_twice_is_refused(store: Store) -> None:
    with store.session() as session:
        key_id = create_key(session, name="k", scopes=["predict"], actor="t").key.id
    with store.session() as session:
        revoke_key(session, key_id=key_id, actor="t")
    with pytest.raises(ApiKeyError, match="already revoked"), store.session() as session:
        revoke_key(session, key_id=key_id, actor="t")


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("k", ["predict", "write"], "scope 'write': not one of admin, predict"),
        ("k", [], "scopes: give at least one"),
        ("  ", ["predict"], "name: give 1-200 characters"),
        ("x" * 201, ["predict"], "name: give 1-200 characters"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    store: Store, name: str, scopes: list[str], message: str
) -> None:
    with pytest.raises(ApiKeyError, match=message), store.session() as session:
        create_key(session, name=name, scopes=scopes, actor="t")
    with store.reader() as session:
        assert session.scalar(select(sa.func.count()).select_from(ApiKey)) == 0
        assert session.scalar(select(sa.func.count()).select_from(AuditEvent)) == 0


@pytest.mark.parametrize(
    ("scopes", "held"),
    [
        (["predict"], {"predict"}),
        (["admin"], {"admin", "predict"}),
        (["Predict", "admin"], {"admin", "predict"}),
    ],
)
def test_admin_implies_predict(store: Store, scopes: list[str], held: set[str]) -> None:
    with store.session() as session:
        assert key_scopes(create_key(session, name="k", scopes=scopes, actor="t").key) == held


def test_listing_hides_revoked_keys_unless_asked(store: Store, keys: dict[str, str]) -> None:
    with store.session() as session:
        revoke_key(session, key_id=keys["admin"].split("_")[1], actor="t")
    with store.reader() as session:
        assert [k.name for k in list_keys(session)] == ["scorer"]
        assert {k.name for k in list_keys(session, include_revoked=True)} == {"scorer", "operator"}
        assert has_active_keys(session)


def test_last_use_is_written_at_most_once_a_minute(store: Store, keys: dict[str, str]) -> None:
    key_id = keys["predict"].split("_")[1]
    now = utcnow()
    with store.session() as session:
        assert record_use(session, key_id=key_id, at=now)
        assert not record_use(session, key_id=key_id, at=now + timedelta(seconds=30))
        assert record_use(session, key_id=key_id, at=now + timedelta(seconds=61))
        assert not record_use(session, key_id="0" * 16, at=now)


def _diffs(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    return [d for d in diffs if "api_keys" in repr(d)]


def test_migration_0006_creates_the_table_of_the_model_and_downgrades(settings: Settings) -> None:
    engine = make_engine(settings.metadata_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    assert "api_keys" not in sa.inspect(engine).get_table_names()
    upgrade(engine)
    assert at_head(engine) and "api_keys" in sa.inspect(engine).get_table_names()
    assert _diffs(engine) == []
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0006@-1")
    assert "api_keys" not in sa.inspect(engine).get_table_names()
    engine.dispose()

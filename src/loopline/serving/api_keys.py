"""API keys of the prediction service, kept in the metadata store as salted hashes.

A key reads `ll_<id>_<secret>`: the id (16 hex characters) names its row, the secret (32
random bytes, URL-safe base64) is shown once, in the `CreatedKey` that `create_key` returns,
and only its scrypt hash with a per-key salt is stored. `verify_key` recomputes that hash and
compares it in constant time. Scopes are `predict` (score, read models) and `admin` (which
implies `predict`). Creating and revoking a key writes an audit event in the same transaction.

No function here logs a key or puts one in an exception message or a SQL parameter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loopline.registry.models import audit
from loopline.store.tables import ApiKey, utcnow

PREDICT = "predict"
ADMIN = "admin"
SCOPES = frozenset({PREDICT, ADMIN})
PREFIX = "ll"

_TOKEN = re.compile(rf"^{PREFIX}_(?P<id>[0-9a-f]{{16}})_(?P<secret>[A-Za-z0-9_-]{{43}})$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
# scrypt cost: 16 MiB and a few tens of milliseconds per hash; the verifier cache keeps it off
# the hot path. Stored with each hash, so raising it later leaves old keys verifiable.
_N, _R, _P = 2**14, 8, 1
_NAME_MAX = 200
# last_used_at is a hint, not an audit trail: written at most once per this interval.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(ValueError):
    """Bad input to key management: a bad name or scope, an unknown or revoked key id."""


@dataclass(frozen=True)
class CreatedKey:
    """A key just created: the only place its plaintext token ever appears."""

    key: ApiKey
    token: str


def parse_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Validate scope names; at least one of `predict`, `admin`.

    Raises:
        ApiKeyError: an unknown scope, or none at all.
    """
    chosen = frozenset(scope.strip().lower() for scope in scopes)
    unknown = sorted(chosen - SCOPES)
    if unknown:
        raise ApiKeyError(f"scope {unknown[0]!r}: not one of {', '.join(sorted(SCOPES))}")
    if not chosen:
        raise ApiKeyError(f"scopes: give at least one of {', '.join(sorted(SCOPES))}")
    return chosen


def key_scopes(key: ApiKey) -> frozenset[str]:
    """The scopes a key holds, with `admin` implying `predict`."""
    held = frozenset(key.scopes.split())
    return held | {PREDICT} if ADMIN in held else held


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32)


def hash_secret(secret: str) -> str:
    """A self-describing salted scrypt hash of a secret: `scrypt$n$r$p$<salt>$<hash>`."""
    salt = secrets.token_bytes(16)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${_hash(secret, salt, _N, _R, _P).hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether a secret hashes to a stored hash (constant-time compare; False if malformed)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        computed = _hash(secret, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed, expected)


def create_key(session: Session, *, name: str, scopes: Iterable[str], actor: str) -> CreatedKey:
    """Create a key with a fresh secret; the caller's transaction stores its hash.

    Args:
        session: A writing session.
        name: What the key is for (shown in listings), 1-200 characters.
        scopes: `predict` and/or `admin`.
        actor: Who creates it (audit trail).

    Returns:
        The new key and its token `ll_<id>_<secret>`, which is not stored anywhere.

    Raises:
        ApiKeyError: an empty or too long name, an unknown or missing scope.
    """
    name = name.strip()
    if not name or len(name) > _NAME_MAX:
        raise ApiKeyError(f"name: give 1-{_NAME_MAX} characters, got {len(name)}")
    chosen = parse_scopes(scopes)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=key_id,
        name=name,
        scopes=" ".join(sorted(chosen)),
        secret_hash=hash_secret(secret),
        created_at=utcnow(),
        created_by=actor,
    )
    session.add(key)
    audit(
        session,
        actor=actor,
        action="api_key.create",
        subject_type="api_key",
        subject_id=key_id,
        detail={"name": name, "scopes": sorted(chosen)},
    )
    session.flush()
    return CreatedKey(key=key, token=f"{PREFIX}_{key_id}_{secret}")


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    """Keys, newest first; revoked ones only when asked."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def has_active_keys(session: Session) -> bool:
    """Whether any key is not revoked (then the service demands one)."""
    query = select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)
    return session.scalar(query) is not None


def revoke_key(session: Session, *, key_id: str, actor: str) -> ApiKey:
    """Revoke a key by id; the caller's transaction records it with an audit event.

    A running service stops accepting the key within its cache time (`api_key_cache_s`).

    Raises:
        ApiKeyError: a malformed or unknown id, or a key already revoked.
    """
    key_id = key_id.strip().lower()
    if not _KEY_ID.fullmatch(key_id):
        raise ApiKeyError(f"key id {key_id!r}: expected 16 hex characters (see `keys list`)")
    key = session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyError(f"key id {key_id!r}: no such key")
    if key.revoked_at is not None:
        raise ApiKeyError(f"key id {key_id!r}: already revoked at {key.revoked_at.isoformat()}")
    key.revoked_at = utcnow()
    key.revoked_by = actor
    audit(
        session,
        actor=actor,
        action="api_key.revoke",
        subject_type="api_key",
        subject_id=key_id,
        detail={"name": key.name},
    )
    session.flush()
    return key


def verify_key(session: Session, token: str) -> ApiKey | None:
    """The active key a token belongs to, or None (malformed, unknown, revoked, wrong secret).

    Reads only; costs one scrypt hash for a token whose id exists. Use `record_use` to
    update `last_used_at`.
    """
    match = _TOKEN.fullmatch(token.strip())
    if match is None:
        return None
    key = session.get(ApiKey, match["id"])
    if key is None or key.revoked_at is not None:
        return None
    return key if secret_matches(match["secret"], key.secret_hash) else None


def record_use(session: Session, *, key_id: str, at: datetime | None = None) -> bool:
    """Set a key's `last_used_at` unless it was set within `LAST_USED_RESOLUTION`.

    Returns:
        Whether the row was written.
    """
    at = at or utcnow()
    key = session.get(ApiKey, key_id)
    if key is None or (key.last_used_at and at - key.last_used_at < LAST_USED_RESOLUTION):
        return False
    key.last_used_at = at
    return True


def key_record(key: ApiKey) -> dict[str, Any]:
    """A key as JSON-ready data for listings (never its hash)."""
    return {
        "id": key.id,
        "name": key.name,
        "scopes": sorted(key.scopes.split()),
        "created_at": key.created_at,
        "created_by": key.created_by,
        "revoked_at": key.revoked_at,
        "revoked_by": key.revoked_by,
        "last_used_at": key.last_used_at,
    }

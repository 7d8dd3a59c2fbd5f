"""Who may call the prediction service: API-key guards, the key verifier, the bind check.

Routes declare the scope they need with `Depends(require_scope("predict"))` (or `"admin"`,
which implies `predict`). A key comes as `Authorization: Bearer <key>` or `X-API-Key: <key>`;
a missing or invalid key gets 401 with `WWW-Authenticate`, a key without the scope 403.

Keys are demanded when the settings say so (`require_api_keys`), when the service is bound to
a non-loopback address, or as soon as one active key exists. With no key and a loopback bind
the service is open: the embedded default stays zero-config. A key that is presented is always
checked, even then. `check_bind` (run by `open_verifier` at startup) refuses a non-loopback
bind with no active key.

The guards read the `KeyVerifier` at `app.state.key_verifier` (set it with `use_verifier`;
without one every guarded route fails closed with 500). The verifier caches each outcome by
the sha256 of the token for `api_key_cache_s` seconds, so a request does not run scrypt or
query the store every time; a revocation (or a first key created) takes effect within that
time. No key is logged or put in an error message.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from loopline.serving.api_keys import (
    ADMIN,
    LAST_USED_RESOLUTION,
    SCOPES,
    has_active_keys,
    key_scopes,
    record_use,
    verify_key,
)
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import utcnow

log = logging.getLogger(__name__)

VERIFIER_STATE = "key_verifier"
API_KEY_HEADER = "X-API-Key"
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ll_…`.")
_api_key = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="An API key: `X-API-Key: ll_…`."
)


class BindConfigError(ValueError):
    """The service may not start: an exposed bind, or required keys, with no active key."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a key (id, name, scopes) or, on an open service, anonymous."""

    key_id: str | None
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this principal holds a scope (`admin` implies every scope)."""
        return scope in self.scopes or ADMIN in self.scopes


ANONYMOUS = Principal(key_id=None, name="anonymous", scopes=SCOPES)


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts local connections (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:  # another host name: it may resolve to anything
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def check_bind(host: str, *, keys_exist: bool, require: bool) -> None:
    """Refuse to serve unprotected beyond this machine, or with required keys none can hold.

    Args:
        host: The address the service binds.
        keys_exist: Whether the store holds an active API key.
        require: The setting `require_api_keys`.

    Raises:
        BindConfigError: a non-loopback host, or `require`, and no active key.
    """
    if keys_exist:
        return
    create = "create one with `loopline keys create --name NAME --scope predict`"
    if not is_loopback(host):
        raise BindConfigError(
            f"host {host!r}: a non-loopback bind needs an active API key; {create}, "
            "or bind 127.0.0.1"
        )
    if require:
        raise BindConfigError(f"require_api_keys: set, but no active API key exists; {create}")


class KeyVerifier:
    """Checks tokens against the store, caching each outcome for a short time.

    Thread-safe (guards run in FastAPI's thread pool). A cache entry is keyed by the sha256 of
    the token, never the token, and lives `cache_s` seconds, so a revoked key is refused, and
    a first key makes the service demand keys, within `cache_s`. Refusals are cached too, so a
    repeated bad token costs no scrypt. A verified key's `last_used_at` is written in the
    background, at most once a minute per key.
    """

    def __init__(
        self,
        store: Store,
        *,
        require: bool,
        cache_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build a verifier.

        Args:
            store: The metadata store holding the keys.
            require: Demand a key even while no active key exists.
            cache_s: How long an outcome is trusted (0: ask the store every time).
            max_entries: Cache size bound (expired entries go first, then all).
            clock: Monotonic seconds (tests pass a fake one).
        """
        self.store = store
        self.require = require
        self.cache_s = cache_s
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._outcomes: dict[bytes, tuple[float, Principal | None]] = {}
        self._enforced: tuple[float, bool] | None = None

    def enforced(self) -> bool:
        """Whether requests must carry a key: required, or any active key exists (cached)."""
        if self.require:
            return True
        now = self._clock()
        with self._lock:
            if self._enforced is not None and self._enforced[0] > now:
                return self._enforced[1]
        with self.store.reader() as session:
            value = has_active_keys(session)
        if self.cache_s > 0:
            with self._lock:
                self._enforced = (now + self.cache_s, value)
        return value

    def verify(self, token: str) -> Principal | None:
        """The principal of a token, or None when it is malformed, unknown, revoked or wrong."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            hit = self._outcomes.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        with self.store.reader() as session:
            key = verify_key(session, token)
            principal = None if key is None else Principal(key.id, key.name, key_scopes(key))
            last_used = None if key is None else key.last_used_at
        if principal is not None and (
            last_used is None or utcnow() - last_used >= LAST_USED_RESOLUTION
        ):
            self._record_use(principal.key_id)
        if self.cache_s > 0:
            self._remember(digest, now + self.cache_s, principal)
        return principal

    def forget(self) -> None:
        """Drop every cached outcome (the next request asks the store)."""
        with self._lock:
            self._outcomes.clear()
            self._enforced = None

    def _remember(self, digest: bytes, until: float, principal: Principal | None) -> None:
        with self._lock:
            if len(self._outcomes) >= self._max_entries:
                now = self._clock()
                for stale in [d for d, (t, _) in self._outcomes.items() if t <= now]:
                    del self._outcomes[stale]
                if len(self._outcomes) >= self._max_entries:
                    self._outcomes.clear()
            self._outcomes[digest] = (until, principal)

    def _record_use(self, key_id: str | None) -> None:
        if key_id is None:
            return

        def write() -> None:
            try:
                with self.store.session() as session:
                    record_use(session, key_id=key_id)
            except SQLAlchemyError as exc:  # a hint only: never fail or slow a request for it
                log.warning("recording the use of API key %s failed: %s", key_id, exc)

        threading.Thread(target=write, name="api-key-last-used", daemon=True).start()


def open_verifier(store: Store, settings: Settings, *, host: str | None = None) -> KeyVerifier:
    """Run the startup bind check and build the verifier the guards use.

    Args:
        store: The (migrated) metadata store.
        settings: `require_api_keys`, `api_key_cache_s`, and `host` unless given.
        host: The address actually bound, when it is not `settings.host`.

    Raises:
        BindConfigError: see `check_bind`.
    """
    host = settings.host if host is None else host
    with store.reader() as session:
        keys_exist = has_active_keys(session)
    check_bind(host, keys_exist=keys_exist, require=settings.require_api_keys)
    return KeyVerifier(
        store,
        require=settings.require_api_keys or not is_loopback(host),
        cache_s=settings.api_key_cache_s,
    )


def use_verifier(app: FastAPI, verifier: KeyVerifier) -> None:
    """Make the guards of an app check keys with this verifier."""
    setattr(app.state, VERIFIER_STATE, verifier)


def _unauthorized(message: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="loopline"' + (f', error="{error}"' if error else "")
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


class ScopeGuard:
    """A FastAPI dependency demanding a scope; `require_scope` builds (and shares) them."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r}: not one of {', '.join(sorted(SCOPES))}")
        self.scope = scope

    def __repr__(self) -> str:
        return f"ScopeGuard({self.scope!r})"

    def __call__(
        self,
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        header: str | None = Security(_api_key),
    ) -> Principal:
        verifier = getattr(request.app.state, VERIFIER_STATE, None)
        if not isinstance(verifier, KeyVerifier):
            raise HTTPException(500, "API key verification is not configured on this service")
        token = (bearer.credentials if bearer is not None else header or "").strip()
        try:
            if not token:
                if not verifier.enforced():
                    return ANONYMOUS
                raise _unauthorized(
                    "missing API key: send 'Authorization: Bearer <key>' or "
                    f"'{API_KEY_HEADER}: <key>'"
                )
            principal = verifier.verify(token)
        except SQLAlchemyError as exc:
            log.error("API key check failed: %s", type(exc).__name__)
            raise HTTPException(503, "API key store unavailable; try again") from None
        if principal is None:
            raise _unauthorized("invalid or revoked API key", error="invalid_token")
        if not principal.allows(self.scope):
            raise HTTPException(
                403,
                f"API key {principal.key_id} ({principal.name!r}) lacks scope {self.scope!r}",
                headers={
                    "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{self.scope}"'
                },
            )
        request.state.api_key_id = principal.key_id
        return principal


@cache
def require_scope(scope: str) -> ScopeGuard:
    """The dependency demanding `scope` (`predict` or `admin`); one shared guard per scope.

    Use as `Depends(require_scope("predict"))` on a route or a router; the route receives the
    `Principal` when it declares the parameter.

    Raises:
        ValueError: an unknown scope (a wiring bug, at import time).
    """
    return ScopeGuard(scope)

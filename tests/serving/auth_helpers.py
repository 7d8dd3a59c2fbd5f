"""A reusable check that every route of a FastAPI app demands an API key of its scope.

from auth_helpers import assert_every_route_guarded
assert_every_route_guarded(app, predict_key, admin_key, public={"/health", "/ready"})
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from contextlib import nullcontext
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from loopline.serving.api_keys import ADMIN, PREDICT
from loopline.serving.auth import ScopeGuard

BAD_KEY = "ll_0123456789abcdef_" + "A" * 43
_PARAM = re.compile(r"\{[^}]+\}")


def _guards(dependant: Dependant) -> Iterator[ScopeGuard]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, ScopeGuard):
            yield sub.call
        yield from _guards(sub)


def route_scope(route: APIRoute) -> str | None:
    """The scope a route demands (`admin` if any of its guards does), None when unguarded."""
    scopes = {guard.scope for guard in _guards(route.dependant)}
    return ADMIN if ADMIN in scopes else PREDICT if scopes else None


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of an app, also inside included routers (FastAPI >= 0.150 keeps an
    included router as one lazy `_IncludedRouter` entry in `app.routes`)."""
    found: list[APIRoute] = []

    def walk(routes: Any) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes)

    walk(app.router.routes)
    return found


def assert_every_route_guarded(
    app: FastAPI,
    predict_key: str,
    admin_key: str,
    *,
    public: Collection[str] = (),
    client: TestClient | None = None,
) -> list[tuple[str, str, str]]:
    """Call every API route without a key, with a bad key and with a key of the wrong scope.

    Every route not in `public` must carry a scope guard; without a key, or with an unknown
    one, it answers 401 with `WWW-Authenticate`; an `admin` route answers 403 to the predict
    key; with the right key it answers neither 401 nor 403 (no body is sent, so most write
    routes stop at 422). Public routes must answer without a key.

    Args:
        app: The app (its lifespan runs unless `client` is given).
        predict_key: A token with scope `predict` only.
        admin_key: A token with scope `admin`.
        public: Paths meant to be open (health probes).
        client: A client already in the app's lifespan.

    Returns:
        (method, path, scope) of every checked route, the scope `public` for public ones.
    """
    checked: list[tuple[str, str, str]] = []
    context = nullcontext(client) if client is not None else TestClient(app)
    with context as http:
        for route in api_routes(app):
            path = _PARAM.sub("1", route.path)
            scope = route_scope(route)
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                where = f"{method} {route.path}"
                if route.path in public:
                    answer = http.request(method, path)
                    assert answer.status_code not in (401, 403), f"{where}: public, got {answer}"
                    checked.append((method, route.path, "public"))
                    continue
                assert scope is not None, f"{where}: no require_scope(...) dependency"
                for headers in ({}, {"Authorization": f"Basic {predict_key}"}):
                    answer = http.request(method, path, headers=headers)
                    assert answer.status_code == 401, f"{where} without a key: {answer.text}"
                    assert "WWW-Authenticate" in answer.headers, f"{where}: no WWW-Authenticate"
                for headers in ({"Authorization": f"Bearer {BAD_KEY}"}, {"X-API-Key": BAD_KEY}):
                    answer = http.request(method, path, headers=headers)
                    assert answer.status_code == 401, f"{where} with a bad key: {answer.text}"
                if scope == ADMIN:
                    answer = http.request(method, path, headers={"X-API-Key": predict_key})
                    assert answer.status_code == 403, f"{where} with a predict key: {answer.text}"
                else:  # admin implies predict
                    answer = http.request(method, path, headers={"X-API-Key": admin_key})
                    assert answer.status_code not in (401, 403), f"{where} with admin: {answer}"
                right = admin_key if scope == ADMIN else predict_key
                answer = http.request(method, path, headers={"Authorization": f"Bearer {right}"})
                assert answer.status_code not in (401, 403), f"{where} with its key: {answer}"
                checked.append((method, route.path, scope))
    return checked

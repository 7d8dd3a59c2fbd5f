"""The prediction API: FastAPI routers over the prediction service.

Run it with `uvicorn --factory loopline.serving.app:create_app` (settings from LOOPLINE_*), or
`loopline serve`.

`create_app` only wires: the body models come from the use case (`schemas`), the routes are thin
(`routes`), the work is in plain functions (`scoring`) and in the service object opened at
startup (`service.PredictionService`: model caches per alias, online features, prediction log,
shadow worker). Every model alias the service follows is re-checked every `refresh_s` seconds
in the background and swapped atomically, so a promotion or rollback is picked up without a
restart and without a dropped request.

Routes need an API key with their scope (`predict`; `admin` for `/model`, which names
artifacts) once a key exists, and always on a non-loopback bind, where the service refuses to
start without one; `/health` and `/ready` stay open for probes. Bodies are bounded
(`max_body_bytes`, 413).

Errors map the same way on every route: a body that breaks the contract or a rule is a 422
whose `message` names the field (no input is echoed back), no champion / no features / a log
that refuses is a 503 with the reason, a model that cannot be fed is a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from loopline.lake.artifacts import ArtifactStore
from loopline.registry.models import CHAMPION
from loopline.serving.auth import open_verifier, require_scope, use_verifier
from loopline.serving.limits import BodySizeLimit
from loopline.serving.model_cache import ModelCache
from loopline.serving.online import FeatureLookup, OnlineFeatures
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.routes import events_router, predict_router, status_router
from loopline.serving.schemas import (
    batch_request_model,
    events_request_model,
    prediction_request_model,
)
from loopline.serving.scoring import InputTransform, RequestError, ScoringError
from loopline.serving.service import PredictionService, ServiceUnavailable
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.store import Store

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 2.0

__all__ = ["FeatureLookup", "InputTransform", "create_app"]


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 whose `message` names each bad field and the rule it broke; `detail` as FastAPI's,
    without the offending input (it may be huge, or NaN, which JSON cannot carry)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    parts = []
    detail = []
    for error in errors:
        if error.get("type") == "json_invalid":  # loc is ("body", character position)
            reason = error.get("ctx", {}).get("error", "")
            parts.append(f"body: not valid JSON ({reason} at character {error['loc'][-1]})")
        else:
            path = [str(p) for p in error.get("loc", ()) if p != "body"]
            parts.append(f"{'.'.join(path) or 'body'}: {error.get('msg', 'invalid')}")
        detail.append(
            {
                "loc": [str(p) for p in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return JSONResponse(status_code=422, content={"detail": detail, "message": "; ".join(parts)})


def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    detail = [{"loc": ["body", *exc.field.split(".")], "msg": str(exc), "type": "value_error"}]
    return JSONResponse(status_code=422, content={"detail": detail, "message": str(exc)})


def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)})


def _scoring_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("scoring failed: %s", exc)
    return JSONResponse(status_code=500, content={"detail": str(exc)})


async def _refresh_forever(service: PredictionService, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(service.refresh)


def create_app(
    settings: Settings | None = None,
    *,
    feature_lookup: FeatureLookup | None = None,
    transform: InputTransform | None = None,
    refresh_s: float | None = None,
    fresh: bool | None = None,
) -> FastAPI:
    """Build the prediction API (an app factory for `uvicorn --factory`).

    Nothing is opened here: the metadata store, the models, the features and the prediction log
    are opened once, at startup (lifespan), and closed at shutdown.

    Args:
        settings: Configuration; `Settings()` (LOOPLINE_* environment) when None.
        feature_lookup: Replaces the Feast online-store read (tests, custom stores); windowed
            views are then not served fresh unless `fresh` is True.
        transform: Replaces `loopline.features.transform` (tests only: it is the one
            transformation training uses, and serving must not have another).
        refresh_s: How often the aliases are re-checked; default the setting `model_refresh_s`.
        fresh: Serve windowed views fresh (default: when Feast is used).
    """
    settings = settings if settings is not None else Settings()
    spec = load_spec(settings.use_case)
    shared: InputTransform = (
        transform
        if transform is not None
        else importlib.import_module("loopline.features.transform")  # type: ignore[assignment]
    )
    every_s = float(refresh_s if refresh_s is not None else settings.model_refresh_s)
    if every_s <= 0:
        raise ValueError(f"refresh_s: must be > 0, got {every_s}")
    request_model = prediction_request_model(spec)
    online = OnlineFeatures(settings, spec, lookup=feature_lookup, fresh=fresh)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(Store.open, settings)
        artifacts = ArtifactStore(settings.artifacts_dir)
        aliases = {
            CHAMPION: CHAMPION,
            "canary": spec.serving.canary_alias,
            "shadow": spec.serving.shadow_alias,
        }
        caches = {
            role: ModelCache(store, artifacts, spec.model_name, alias=alias)
            for role, alias in aliases.items()
        }
        # Refuses to start on a non-loopback address without an active API key.
        use_verifier(app, await asyncio.to_thread(open_verifier, store, settings))
        prediction_log = await asyncio.to_thread(PredictionLog.from_settings, settings)
        service = PredictionService(
            spec, caches=caches, online=online, prediction_log=prediction_log, transform=shared
        )
        await asyncio.to_thread(service.refresh)
        await asyncio.to_thread(online.open)
        app.state.service = service
        refresher = asyncio.create_task(_refresh_forever(service, every_s))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await asyncio.to_thread(service.close)
            await asyncio.to_thread(online.close)
            await asyncio.to_thread(prediction_log.close)
            store.dispose()

    app = FastAPI(title="loopline prediction API", version="2", lifespan=lifespan)
    handlers: dict[Any, Any] = {
        RequestValidationError: _validation_error,
        RequestError: _request_error,
        ServiceUnavailable: _unavailable,
        ScoringError: _scoring_error,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    predict = [Depends(require_scope("predict"))]
    admin = [Depends(require_scope("admin"))]
    # Dependencies on the routers themselves, so every route carries its guard.
    batch_model = batch_request_model(spec, request_model)
    app.include_router(predict_router(request_model, batch_model, dependencies=predict))
    app.include_router(events_router(events_request_model(spec), dependencies=predict))
    app.include_router(status_router(predict=predict, admin=admin))
    return app

"""The prediction API: FastAPI over the champion, Feast's online store and the shared transform.

Run it with `uvicorn --factory loopline.serving.app:create_app` (settings from LOOPLINE_*).

`POST /predict` validates the body against the use case's contract, fetches the entity features
of the champion's feature service from Feast's online store, turns request fields plus features
into model inputs with the one transform training uses (`loopline.features.transform`), scores
with the champion, appends the prediction to the prediction log, and answers. The champion is
re-checked every `refresh_s` seconds in the background and swapped without a restart.
"""

# No `from __future__ import annotations` here: FastAPI must see the request model built inside
# `create_app` as a real annotation, not as a string it cannot resolve from module globals.

import asyncio
import contextlib
import importlib
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import numpy as np
import polars as pl
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from loopline.features.feast_ops import NOT_FOUND
from loopline.lake.artifacts import ArtifactStore
from loopline.serving.model_cache import LoadedModel, ModelCache
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.schemas import (
    HealthResponse,
    ModelResponse,
    PredictionResponse,
    prediction_request_model,
)
from loopline.settings import Settings
from loopline.spec import UseCaseSpec, load_spec
from loopline.store import Store
from loopline.store.tables import utcnow

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 2.0

FeatureLookup = Callable[[Sequence[Mapping[str, Any]], str], list[dict[str, Any]]]
"""(rows holding the entity join keys, feature service name) -> one dict of features per row."""


class InputTransform(Protocol):
    """What serving needs of `loopline.features.transform` (the module satisfies this)."""

    def model_inputs(
        self, frame: pl.DataFrame, spec: UseCaseSpec, service: str | None = None
    ) -> pl.DataFrame: ...

    def to_numpy(self, frame: pl.DataFrame) -> np.ndarray: ...


_POLARS_TYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "string": pl.String(),
    "category": pl.String(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us", "UTC"),
}


class _Features:
    """Feature lookups: an injected callable, or Feast's online store opened once and kept."""

    RETRY_S = 5.0

    def __init__(self, settings: Settings, lookup: FeatureLookup | None) -> None:
        self._settings = settings
        self._lookup = lookup
        self._lock = threading.Lock()
        self._attempted = -math.inf
        self.error: str | None = None

    def open(self, *, retry: bool = False) -> None:
        """Open Feast (only if no lookup was injected); remember the error if it fails.

        With `retry`, a failed open is tried again at most every RETRY_S seconds.
        """
        with self._lock:
            if self._lookup is not None:
                return
            if retry and time.monotonic() - self._attempted < self.RETRY_S:
                return
            self._attempted = time.monotonic()
            try:
                from loopline.features import feast_ops

                store = feast_ops.open_store(self._settings)
            except Exception as exc:  # serve /health anyway; /predict reports it
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("opening the Feast feature store failed")
                return
            self._lookup = partial(feast_ops.online_features, store, unknown="report")
            self.error = None

    def __call__(self, rows: Sequence[Mapping[str, Any]], service: str) -> list[dict[str, Any]]:
        if self._lookup is None:
            self.open(retry=True)  # the store may have been applied since startup
        if self._lookup is None:
            raise HTTPException(503, f"feature store unavailable: {self.error}")
        return self._lookup(rows, service)


def request_frame(row: Mapping[str, Any], spec: UseCaseSpec) -> pl.DataFrame:
    """A one-row frame of request fields and features, typed like the training frame.

    Contract columns get their contract type; a feature Feast has no value for (None) becomes a
    Float64 null, so the transform sees the same types online as in training.
    """
    schema: dict[str, pl.DataType] = {}
    for name, value in row.items():
        rule = spec.events.columns.get(name)
        if rule is not None:
            schema[name] = _POLARS_TYPES[rule.type]
        elif value is None:
            schema[name] = pl.Float64()
    return pl.DataFrame({name: [value] for name, value in row.items()}, schema_overrides=schema)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 whose `message` names each bad field and the rule it broke; `detail` as FastAPI's."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":  # loc is ("body", character position)
            detail = error.get("ctx", {}).get("error", "")
            parts.append(f"body: not valid JSON ({detail} at character {error['loc'][-1]})")
            continue
        path = [str(p) for p in error.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(path) or 'body'}: {error.get('msg', 'invalid')}")
    return JSONResponse(
        status_code=422,
        content={"detail": jsonable_encoder(errors), "message": "; ".join(parts)},
    )


def _no_model(cache: ModelCache) -> HTTPException:
    if cache.last_error:
        reason = f"loading it failed: {cache.last_error}"
    else:
        reason = f"model '{cache.model_name}' has no version with alias '{cache.alias}'"
    return HTTPException(
        503, f"no {cache.alias} yet: {reason}; train and promote one (`loopline promote`)"
    )


async def _refresh_forever(cache: ModelCache, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(cache.refresh)


def create_app(
    settings: Settings | None = None,
    *,
    feature_lookup: FeatureLookup | None = None,
    transform: InputTransform | None = None,
    refresh_s: float | None = None,
) -> FastAPI:
    """Build the prediction API (an app factory for `uvicorn --factory`).

    Nothing is opened here: the metadata store, the champion and the Feast store are opened
    once, at startup (lifespan), and closed at shutdown.

    Args:
        settings: Configuration; `Settings()` (LOOPLINE_* environment) when None.
        feature_lookup: Replaces the Feast online-store lookup (tests, custom stores).
        transform: Replaces `loopline.features.transform` (tests only: it is the one
            transformation training uses, and serving must not have another).
        refresh_s: How often the champion alias is re-checked; default the setting
            `model_refresh_s` if present, else 2 seconds.
    """
    settings = settings if settings is not None else Settings()
    spec = load_spec(settings.use_case)
    shared: InputTransform = (
        transform
        if transform is not None
        else importlib.import_module("loopline.features.transform")  # type: ignore[assignment]
    )
    every_s = float(
        refresh_s
        if refresh_s is not None
        else getattr(settings, "model_refresh_s", DEFAULT_REFRESH_S)
    )
    if every_s <= 0:
        raise ValueError(f"refresh_s: must be > 0, got {every_s}")
    RequestModel = prediction_request_model(spec)
    features = _Features(settings, feature_lookup)
    runtime: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(Store.open, settings)
        cache = ModelCache(store, ArtifactStore(settings.artifacts_dir), spec.model_name)
        await asyncio.to_thread(cache.refresh)
        await asyncio.to_thread(features.open)
        prediction_log = PredictionLog(settings.prediction_log_dir)
        runtime.update(cache=cache, log=prediction_log)
        refresher = asyncio.create_task(_refresh_forever(cache, every_s))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            prediction_log.close()
            store.dispose()

    app = FastAPI(title="loopline prediction API", version="1", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _validation_error)

    def score(
        model: LoadedModel, body: BaseModel, now: datetime
    ) -> tuple[dict[str, Any], dict[str, Any], float, list[str]]:
        fields = body.model_dump(exclude={"request_id"})
        keys = {key: fields[key] for key in spec.entity_keys}
        try:
            found = features([keys], model.feature_service)[0]
        except HTTPException:
            raise
        except Exception as exc:
            log.exception("feature lookup failed")
            raise HTTPException(
                503, f"feature lookup failed for service '{model.feature_service}': {exc}"
            ) from exc
        # Entities the online store has never seen (a brand-new customer is normal traffic, and
        # training saw the same missing values): scored, and reported in the response and log.
        unknown = [str(entity) for entity in found.pop(NOT_FOUND, [])]
        # Request fields win over anything the lookup echoes back (e.g. the join keys).
        row = {
            **{k: v for k, v in found.items() if k not in fields},
            **fields,
            spec.events.timestamp: now,
        }
        try:
            # The model's own service: a champion pinned to an older service keeps its inputs.
            inputs = shared.model_inputs(request_frame(row, spec), spec, model.feature_service)
        except ValueError as exc:  # e.g. a feature of a type the transform cannot encode
            log.exception("building model inputs failed")
            raise HTTPException(500, f"building model inputs failed: {exc}") from exc
        missing = [name for name in model.inputs if name not in inputs.columns]
        if missing:
            raise HTTPException(
                500,
                f"model {model.model_name} v{model.version} expects inputs the transform did "
                f"not produce: {', '.join(missing)}",
            )
        matrix = shared.to_numpy(inputs.select(model.inputs))
        value = float(model.booster.predict(matrix, num_threads=1)[0])
        by_name = dict(zip(model.inputs, matrix[0].tolist(), strict=True))
        return fields, by_name, value, unknown

    @app.post("/predict", response_model=PredictionResponse)
    def predict(body: RequestModel) -> PredictionResponse:  # type: ignore[valid-type]
        """Score one event with the champion; features come from Feast's online store."""
        cache: ModelCache = runtime["cache"]
        model = cache.current()
        if model is None:
            raise _no_model(cache)
        request_id = body.request_id or uuid.uuid4().hex
        now = utcnow()
        fields, inputs, value, unknown = score(model, body, now)
        record = {
            "request_id": request_id,
            "ts": now,
            "model_name": model.model_name,
            "model_version": model.version,
            "model_version_id": model.version_id,
            "feature_service": model.feature_service,
            "alias": model.alias,
            "request": fields,
            "inputs": inputs,
            "score": value,
            "unknown_entities": unknown,
        }
        try:
            runtime["log"].append(record)
        except OSError as exc:
            # An unlogged prediction cannot be traced or monitored: refuse it.
            log.exception("prediction log write failed")
            raise HTTPException(503, f"prediction log write failed: {exc}") from exc
        return PredictionResponse(
            score=value,
            model_name=model.model_name,
            model_version=model.version,
            request_id=request_id,
            feature_service=model.feature_service,
            unknown_entities=unknown,
        )

    @app.get("/health", response_model=HealthResponse)
    def health() -> HealthResponse:
        """200 whenever the process is up, with the champion version it serves (or null)."""
        cache: ModelCache | None = runtime.get("cache")
        model = cache.current() if cache is not None else None
        return HealthResponse(champion=model.version if model else None)

    @app.get("/model", response_model=ModelResponse)
    def current_model() -> ModelResponse:
        """The champion this process serves right now; 503 if there is none."""
        cache: ModelCache = runtime["cache"]
        model = cache.current()
        if model is None:
            raise _no_model(cache)
        return ModelResponse(
            model_name=model.model_name,
            alias=model.alias,
            version=model.version,
            model_version_id=model.version_id,
            revision=model.revision,
            feature_service=model.feature_service,
            inputs=list(model.inputs),
            artifact_id=model.artifact_id,
            loaded_at=model.loaded_at,
            checked_at=cache.checked_at,
            last_error=cache.last_error,
        )

    return app

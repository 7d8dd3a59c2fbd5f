"""The prediction API's routes: thin functions over the service (`Depends` aliases).

Request and response bodies come from the use case (`loopline.serving.schemas`), so the routers
are built per app by `predict_router`, `events_router` and `status_router`. Errors are raised
as the service's exceptions and mapped to HTTP statuses in `loopline.serving.app`.
"""

# No `from __future__ import annotations`: FastAPI must see the body models built at runtime
# as real annotations.

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from loopline.serving.schemas import (
    BatchPredictionResponse,
    EventsResponse,
    HealthResponse,
    ModelResponse,
    ModelsResponse,
    PredictionResponse,
    ReadyResponse,
)
from loopline.serving.scoring import Event, Scored, event_of
from loopline.serving.service import PredictionService
from loopline.store.tables import utcnow

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key."},
    403: {"description": "The API key lacks the route's scope."},
    413: {"description": "Request body too large."},
    422: {"description": "Invalid request: `message` names the field and the rule."},
    500: {"description": "The model could not be fed (a platform bug)."},
    503: {"description": "No champion, feature store unavailable, or the log refused."},
}


def _service(request: Request) -> PredictionService:
    return request.app.state.service


ServiceDep = Annotated[PredictionService, Depends(_service)]


def _response(scored: Scored) -> PredictionResponse:
    event, model = scored.event, scored.model
    return PredictionResponse(
        score=scored.score,
        model_name=model.model_name,
        model_version=model.version,
        role=scored.role,  # type: ignore[arg-type]
        request_id=event.request_id,
        event_id=event.event_id,
        event_timestamp=event.at,
        feature_service=model.feature_service,
        unknown_entities=scored.served.unknown,
    )


def _event(service: PredictionService, body: BaseModel, *, now: Any) -> Event:
    request_id = getattr(body, "request_id", None) or uuid.uuid4().hex
    return event_of(body, service.spec, now=now, request_id=request_id)


def predict_router(
    request_model: type[BaseModel],
    batch_model: type[BaseModel],
    *,
    dependencies: Sequence[Any] = (),
) -> APIRouter:
    """`POST /predict` and `POST /predict/batch` for a use case's request models."""
    router = APIRouter(tags=["predict"], responses=ERRORS, dependencies=list(dependencies))

    @router.post("/predict", response_model=PredictionResponse)
    def predict(body: request_model, service: ServiceDep) -> PredictionResponse:  # type: ignore[valid-type]
        """Score one event: by entity keys (fresh features at the event's time) or with a full
        feature payload. The champion answers unless the event's entity is in the canary share."""
        now = utcnow()
        (scored,) = service.predict([_event(service, body, now=now)], received_at=now)
        return _response(scored)

    @router.post("/predict/batch", response_model=BatchPredictionResponse)
    def predict_batch(body: batch_model, service: ServiceDep) -> BatchPredictionResponse:  # type: ignore[valid-type]
        """Score many events in order (each sees the earlier ones); one answer per row."""
        now = utcnow()
        rows = body.rows  # type: ignore[attr-defined]
        events = [_event(service, row, now=now) for row in rows]
        scored = service.predict(events, received_at=now)
        return BatchPredictionResponse(predictions=[_response(s) for s in scored])

    return router


def events_router(events_model: type[BaseModel], *, dependencies: Sequence[Any] = ()) -> APIRouter:
    """`POST /events`: events that are not scored update their entities' online features."""
    router = APIRouter(tags=["events"], responses=ERRORS, dependencies=list(dependencies))

    @router.post("/events", response_model=EventsResponse)
    def push_events(body: events_model, service: ServiceDep) -> EventsResponse:  # type: ignore[valid-type]
        """Fold events into the online features (and land them in the lake)."""
        now = utcnow()
        events = [_event(service, e, now=now) for e in body.events]  # type: ignore[attr-defined]
        return EventsResponse(accepted=service.push(events))

    return router


def status_router(*, predict: Sequence[Any] = (), admin: Sequence[Any] = ()) -> APIRouter:
    """`/health` and `/ready` (open, for probes), `/models` (`predict` dependencies) and
    `/model` (`admin` dependencies: it names artifacts)."""
    router = APIRouter(tags=["status"], responses=ERRORS)

    @router.get("/health", response_model=HealthResponse)
    def health(service: ServiceDep) -> HealthResponse:
        """200 while the process is up: the versions it serves and its counters."""
        counters = service.health()
        return HealthResponse(
            champion=_version(service, "champion"),
            canary=_version(service, "canary"),
            shadow=_version(service, "shadow"),
            prediction_log=counters["prediction_log"],
            online=counters["online"],
            shadow_queue=service.shadow_pending(),
        )

    @router.get("/ready", response_model=ReadyResponse)
    def ready(service: ServiceDep) -> Any:
        """200 when a champion is loaded and features can be served, else 503 with the reason."""
        reason = None
        if service.model("champion") is None:
            reason = "no champion loaded"
        elif not service.online.ready:
            reason = f"features unavailable: {service.online.error}"
        if reason is not None:
            return JSONResponse(status_code=503, content={"ready": False, "reason": reason})
        return ReadyResponse(ready=True)

    @router.get("/models", response_model=ModelsResponse, dependencies=list(predict))
    def models(service: ServiceDep) -> ModelsResponse:
        """The versions serving now: champion, canary (with its share) and shadow."""
        return ModelsResponse(models=service.served_models())

    @router.get("/model", response_model=ModelResponse, dependencies=list(admin))
    def current_model(service: ServiceDep) -> ModelResponse:
        """The champion this process serves right now; 503 if there is none."""
        model = service.champion()
        cache = service.caches["champion"]
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

    return router


def _version(service: PredictionService, role: str) -> int | None:
    model = service.model(role)
    if role == "canary" and model is not None:
        champion = service.model("champion")
        if champion is not None and champion.version_id == model.version_id:
            return None
    return model.version if model is not None else None

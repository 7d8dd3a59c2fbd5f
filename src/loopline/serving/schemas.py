"""Request and response bodies of the prediction API, derived from the use-case spec.

The request body is built from the spec's data contract (entity join keys plus the request
fields, with their types, ranges and declared categories), so a second use case gets its own
validated API without code changes. Validation is strict: no type coercion ("12" is not an
integer), no unknown fields, no NaN or infinity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, create_model

from loopline.spec import ColumnRule, UseCaseSpec

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

_PYTHON_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "string": str,
    "bool": bool,
    "datetime": datetime,
}


class _StrictBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _field(rule: ColumnRule) -> tuple[Any, Any]:
    """(annotation, FieldInfo) for one contract column."""
    if rule.type == "category":
        assert rule.values is not None  # the spec guarantees values for categories
        annotation: Any = Literal[tuple(rule.values)]  # type: ignore[valid-type]
    else:
        annotation = _PYTHON_TYPES[rule.type]
    constraints: dict[str, Any] = {}
    if rule.type in ("int", "float"):
        if rule.min is not None:
            constraints["ge"] = int(rule.min) if rule.type == "int" else rule.min
        if rule.max is not None:
            constraints["le"] = int(rule.max) if rule.type == "int" else rule.max
    if rule.type == "float":
        constraints["allow_inf_nan"] = False
    if rule.nullable:
        return annotation | None, Field(default=None, **constraints)
    return annotation, Field(..., **constraints)


def request_fields(spec: UseCaseSpec) -> list[str]:
    """Fields of a prediction request other than request_id: join keys, then request fields."""
    names = list(spec.entity_keys)
    names.extend(n for n in spec.features.request if n not in names)
    return names


# JSON carries times as ISO 8601 strings: parse them (strict mode would refuse a string), and
# only with an offset (a naive time is ambiguous).
_EventTime = Annotated[AwareDatetime, Strict(False)]
FeatureValue = Annotated[float | int | bool | None, Field(allow_inf_nan=False)]


def _event_fields(spec: UseCaseSpec) -> dict[str, Any]:
    """Join keys, request fields, the event's own time and its id (both optional)."""
    columns = spec.events.columns
    fields: dict[str, Any] = {name: _field(columns[name]) for name in request_fields(spec)}
    fields[spec.events.timestamp] = (
        _EventTime | None,
        Field(default=None, description="When the event happened (ISO 8601 with offset); "
              "default: when the request arrives. Features are computed at this time."),
    )  # fmt: skip
    if spec.events.id and spec.events.id not in fields:
        rule = columns.get(spec.events.id)
        fields[spec.events.id] = (
            str | None,
            Field(
                default=None,
                pattern=REQUEST_ID_PATTERN,
                max_length=rule.max_length if rule is not None else 64,
                description="The event's id (default: the request id).",
            ),
        )
    return fields


def _title(spec: UseCaseSpec) -> str:
    return "".join(part.capitalize() for part in spec.name.split("_"))


def prediction_request_model(spec: UseCaseSpec) -> type[BaseModel]:
    """The pydantic model of `POST /predict` bodies for a use case.

    Join keys and request fields carry the spec's contract (type, min/max, declared categories);
    the event time (the spec's timestamp field) and the event id are optional; `request_id` is
    optional, 1-64 characters of [A-Za-z0-9_-]; `features`, when given, is the full feature
    payload of the model's feature service (then nothing is read from the feature store).
    """
    fields = _event_fields(spec)
    fields["request_id"] = (
        str | None,
        Field(default=None, pattern=REQUEST_ID_PATTERN, description="Caller's id, echoed back."),
    )
    fields["features"] = (
        dict[str, FeatureValue] | None,
        Field(default=None, description="Every feature of the model's feature service."),
    )
    return create_model(f"{_title(spec)}PredictionRequest", __base__=_StrictBody, **fields)


def batch_request_model(spec: UseCaseSpec, row: type[BaseModel]) -> type[BaseModel]:
    """`POST /predict/batch` bodies: `{"rows": [<prediction request>, ...]}`."""
    limit = spec.serving.max_batch_rows
    return create_model(
        f"{_title(spec)}BatchRequest",
        __base__=_StrictBody,
        rows=(list[row], Field(min_length=1, max_length=limit)),  # type: ignore[valid-type]
    )


def events_request_model(spec: UseCaseSpec) -> type[BaseModel]:
    """`POST /events` bodies: `{"events": [<event>, ...]}`, events that are not scored."""
    event = create_model(f"{_title(spec)}Event", __base__=_StrictBody, **_event_fields(spec))
    limit = spec.serving.max_batch_rows
    return create_model(
        f"{_title(spec)}EventsRequest",
        __base__=_StrictBody,
        events=(list[event], Field(min_length=1, max_length=limit)),  # type: ignore[valid-type]
    )


Role = Literal["champion", "canary", "shadow"]


class PredictionResponse(BaseModel):
    """What `POST /predict` returns."""

    score: float
    model_name: str
    model_version: int
    role: Role = Field(description="Which model answered: the champion or the canary.")
    request_id: str
    event_id: str
    event_timestamp: datetime = Field(description="The time the features were computed for.")
    feature_service: str
    unknown_entities: list[str] = Field(
        default_factory=list, description="Entities the online store has no features for."
    )


class BatchPredictionResponse(BaseModel):
    """What `POST /predict/batch` returns: one prediction per row, in order."""

    predictions: list[PredictionResponse]


class EventsResponse(BaseModel):
    """What `POST /events` returns."""

    accepted: int


class ServedModel(BaseModel):
    """One model version the service answers (or shadows) with."""

    role: Role
    alias: str
    model_name: str
    version: int
    model_version_id: str
    feature_service: str
    loaded_at: datetime
    share: float | None = Field(default=None, description="Canary: the share of traffic.")


class ModelsResponse(BaseModel):
    """What `GET /models` returns."""

    models: list[ServedModel]


class HealthResponse(BaseModel):
    """What `GET /health` returns: the process is up; what it serves; its counters."""

    status: Literal["ok"] = "ok"
    champion: int | None
    canary: int | None = None
    shadow: int | None = None
    prediction_log: dict[str, Any] = Field(default_factory=dict)
    online: dict[str, Any] = Field(default_factory=dict)
    shadow_queue: int = 0


class ReadyResponse(BaseModel):
    """What `GET /ready` returns (503 with the reason when not ready)."""

    ready: bool
    reason: str | None = None


class ModelResponse(BaseModel):
    """What `GET /model` returns: the champion the process serves right now."""

    model_name: str
    alias: str
    version: int
    model_version_id: str
    revision: int
    feature_service: str
    inputs: list[str]
    artifact_id: str
    loaded_at: datetime
    checked_at: datetime | None
    last_error: str | None

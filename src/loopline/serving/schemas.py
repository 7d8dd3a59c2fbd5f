"""Request and response bodies of the prediction API, derived from the use-case spec.

The request body is built from the spec's data contract (entity join keys plus the request
fields, with their types, ranges and declared categories), so a second use case gets its own
validated API without code changes. Validation is strict: no type coercion ("12" is not an
integer), no unknown fields, no NaN or infinity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

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


def prediction_request_model(spec: UseCaseSpec) -> type[BaseModel]:
    """The pydantic model of `POST /predict` bodies for a use case.

    Join keys and request fields carry the spec's contract (type, min/max, declared categories);
    `request_id` is optional, 1-64 characters of [A-Za-z0-9_-].
    """
    columns = spec.events.columns
    fields: dict[str, Any] = {name: _field(columns[name]) for name in request_fields(spec)}
    fields["request_id"] = (
        str | None,
        Field(default=None, pattern=REQUEST_ID_PATTERN, description="Caller's id, echoed back."),
    )
    title = "".join(part.capitalize() for part in spec.name.split("_"))
    return create_model(f"{title}PredictionRequest", __base__=_StrictBody, **fields)


class PredictionResponse(BaseModel):
    """What `POST /predict` returns."""

    score: float
    model_name: str
    model_version: int
    request_id: str
    feature_service: str
    unknown_entities: list[str] = Field(
        default_factory=list, description="Entities the online store has no features for."
    )


class HealthResponse(BaseModel):
    """What `GET /health` returns: the process is up; which champion version it serves."""

    status: Literal["ok"] = "ok"
    champion: int | None


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

"""Scoring as plain functions: a validated request becomes an event, features, inputs, a score.

The routes (`loopline.serving.routes`) only call these. Nothing here reads a clock or a store:
the time, the model and the features are passed in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import polars as pl
from pydantic import BaseModel

from loopline.features.feast_ops import service_layout
from loopline.serving.model_cache import LoadedModel
from loopline.serving.online import POLARS_TYPES, ServedFeatures
from loopline.spec import UseCaseSpec


class InputTransform(Protocol):
    """What serving needs of `loopline.features.transform` (the module satisfies this)."""

    def model_inputs(
        self, frame: pl.DataFrame, spec: UseCaseSpec, service: str | None = None
    ) -> pl.DataFrame: ...

    def to_numpy(self, frame: pl.DataFrame) -> np.ndarray: ...


class RequestError(ValueError):
    """A request that is well-formed JSON but breaks a rule; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ScoringError(RuntimeError):
    """The model could not be fed (a transform or signature problem on our side)."""


@dataclass(frozen=True)
class Event:
    """One event to score or fold.

    Attributes:
        fields: Join keys and request fields, as validated.
        at: The event's time (UTC): the request's own, or when it arrived.
        event_id: The event's id (the request id when the request gave none).
        request_id: The request's id.
        payload: A full feature payload given by the caller, or None.
    """

    fields: dict[str, Any]
    at: datetime
    event_id: str
    request_id: str
    payload: dict[str, Any] | None = None

    def row(self, spec: UseCaseSpec) -> dict[str, Any]:
        """The event as a row of the events table (id, time, keys, request fields)."""
        row = dict(self.fields)
        row[spec.events.timestamp] = self.at
        if spec.events.id:
            row[spec.events.id] = self.event_id
        return row


@dataclass(frozen=True)
class Scored:
    """A scored event: what the model saw and said."""

    event: Event
    model: LoadedModel
    role: str
    served: ServedFeatures
    inputs: dict[str, float]
    score: float


def event_of(body: BaseModel, spec: UseCaseSpec, *, now: datetime, request_id: str) -> Event:
    """An event from a validated request body, its time checked against `now`.

    Raises:
        RequestError: the event time is further in the past or the future than the spec's
            `serving.max_event_delay` / `serving.max_clock_skew` allow.
    """
    ts_name = spec.events.timestamp
    data = body.model_dump(exclude={"request_id", "features"})
    at = data.pop(ts_name, None) or now
    event_id = data.pop(spec.events.id, None) if spec.events.id else None
    skew, delay = spec.serving.max_clock_skew, spec.serving.max_event_delay
    if at - now > skew:
        raise RequestError(
            ts_name,
            f"{at.isoformat()} is more than {skew.total_seconds():g} s ahead of the server's "
            f"clock ({now.isoformat()})",
        )
    if now - at > delay:
        raise RequestError(
            ts_name,
            f"{at.isoformat()} is older than the {delay.total_seconds():g} s the service "
            f"accepts (serving.max_event_delay)",
        )
    payload = getattr(body, "features", None)
    return Event(
        fields=data,
        at=at,
        event_id=event_id or request_id,
        request_id=request_id,
        payload=dict(payload) if payload is not None else None,
    )


def payload_features(event: Event, spec: UseCaseSpec, service: str) -> ServedFeatures:
    """A caller's full feature payload, checked against the service's features.

    Raises:
        RequestError: a feature is missing or not one of the service's.
    """
    assert event.payload is not None
    layout = service_layout(service, spec)
    wanted = layout.features
    missing = [n for n in wanted if n not in event.payload]
    extra = sorted(n for n in event.payload if n not in wanted)
    if missing:
        raise RequestError(f"features.{missing[0]}", f"missing (service '{service}' needs "
                           f"{len(wanted)} features; {len(missing)} missing)")  # fmt: skip
    if extra:
        raise RequestError(f"features.{extra[0]}", f"not a feature of service '{service}'")
    values = {n: event.payload[n] for n in wanted}
    return ServedFeatures(values, dict.fromkeys(layout.views), [], ())


def model_frame(rows: Sequence[Mapping[str, Any]], spec: UseCaseSpec) -> pl.DataFrame:
    """Request fields and features as a frame typed like the training frame.

    Contract columns get their contract type; a feature column whose values are all None
    becomes Float64 nulls, so the transform sees the same types online as in training.
    """
    columns = spec.events.columns
    names = list(dict.fromkeys(name for row in rows for name in row))
    schema: dict[str, pl.DataType] = {}
    for name in names:
        rule = columns.get(name)
        if rule is not None:
            schema[name] = POLARS_TYPES[rule.type]
        elif all(row.get(name) is None or isinstance(row.get(name), float) for row in rows):
            schema[name] = pl.Float64()  # all-None or float: Float64, as in training
    data = {name: [row.get(name) for row in rows] for name in names}
    return pl.DataFrame(data, schema_overrides=schema)


def score_many(
    model: LoadedModel,
    items: Sequence[tuple[Event, ServedFeatures]],
    spec: UseCaseSpec,
    transform: InputTransform,
    *,
    role: str,
) -> list[Scored]:
    """Score events with one model in one call of the shared transform and the booster.

    Raises:
        ScoringError: the transform failed or did not produce the model's inputs.
    """
    if not items:
        return []
    ts = spec.events.timestamp
    rows = []
    for event, served in items:
        row = {k: v for k, v in served.values.items() if k not in event.fields}
        row.update(event.fields)
        row[ts] = event.at
        rows.append(row)
    try:
        inputs = transform.model_inputs(model_frame(rows, spec), spec, model.feature_service)
    except ValueError as exc:
        raise ScoringError(f"building model inputs failed: {exc}") from exc
    missing = [name for name in model.inputs if name not in inputs.columns]
    if missing:
        raise ScoringError(
            f"model {model.model_name} v{model.version} expects inputs the transform did not "
            f"produce: {', '.join(missing)}"
        )
    matrix = transform.to_numpy(inputs.select(model.inputs))
    scores = model.booster.predict(matrix, num_threads=1)
    out = []
    for i, (event, served) in enumerate(items):
        by_name = dict(zip(model.inputs, matrix[i].tolist(), strict=True))
        out.append(Scored(event, model, role, served, by_name, float(scores[i])))
    return out


def bucket(value: Any, salt: str) -> float:
    """A stable number in [0, 1) for an entity key: the same key always lands the same."""
    digest = hashlib.sha256(f"{salt}:{value!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def log_record(
    scored: Scored, spec: UseCaseSpec, *, received_at: datetime, latency_ms: float
) -> dict[str, Any]:
    """The prediction log record of one scored event."""
    event, model, served = scored.event, scored.model, scored.served
    keys = {k: event.fields.get(k) for k in spec.entity_keys}
    return {
        "request_id": event.request_id,
        "event_id": event.event_id,
        "ts": event.at,
        "received_at": received_at,
        "model_name": model.model_name,
        "model_version": model.version,
        "model_version_id": model.version_id,
        "feature_service": model.feature_service,
        "alias": model.alias,
        "role": scored.role,
        "entities": keys,
        "request": event.fields,
        "features": {k: _finite(v) for k, v in served.values.items()},
        "feature_timestamps": served.timestamps,
        "inputs": scored.inputs,
        "score": scored.score,
        "latency_ms": latency_ms,
        "unknown_entities": served.unknown,
        "payload": event.payload is not None,
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

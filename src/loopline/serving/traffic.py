"""Replay curated events against a running prediction API: demo traffic and smoke checks.

The bodies are built from the use-case spec (entity keys plus request fields), so replaying
works for any use case. Sending is sequential and bounded: it is a demo and test tool, not a
load generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import polars as pl

from loopline.spec import UseCaseSpec


@dataclass
class ReplayReport:
    """What a replay sent and got back."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    pushed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary with latency percentiles."""
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return (
                round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None
            )

        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "events_pushed": self.pushed,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "errors": self.errors[:5],
        }


def request_bodies(
    events: pl.DataFrame,
    spec: UseCaseSpec,
    *,
    n: int,
    seed: int = 0,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Up to `n` events, sampled uniformly and sent in time order, as /predict bodies
    (entity keys, request fields, the event's own time and id, a request id derived from it).

    Sampling the whole file rather than its tail keeps the time-of-day mix of real traffic.
    With `now`, events older than the service accepts (`serving.max_event_delay`) are moved
    forward by whole days, so the time of day (and fields derived from it) stays true.
    """
    ts = spec.events.timestamp
    columns = list(dict.fromkeys([*spec.entity_keys, *spec.features.request]))
    picked = events.sample(n=min(n, events.height), seed=seed).sort(ts)
    if now is not None and picked.height and ts in picked.columns:
        oldest = picked.get_column(ts).min()
        assert isinstance(oldest, datetime)
        limit = spec.serving.max_event_delay - timedelta(hours=1)
        if now - oldest > limit:
            days = math.ceil((now - oldest - limit) / timedelta(days=1))
            picked = picked.with_columns(pl.col(ts) + timedelta(days=days))
    bodies = picked.select(columns).to_dicts()
    times = picked.get_column(ts).to_list() if ts in picked.columns else [None] * len(bodies)
    ids = picked.get_column(spec.events.id).to_list() if spec.events.id else [None] * len(bodies)
    for body, at, event_id in zip(bodies, times, ids, strict=True):
        if at is not None:
            body[ts] = at.isoformat()
        if event_id is not None:
            body[spec.events.id] = str(event_id)
            body["request_id"] = f"replay-{event_id}"[:64]
    return bodies


def event_bodies(events: pl.DataFrame, spec: UseCaseSpec) -> list[dict[str, Any]]:
    """Every event of a frame, in time order, as `POST /events` items (entity keys, request
    fields, the event's own time and id).

    Raises:
        ValueError: a column the API needs is missing (named), or a body breaks the contract
            (the field and rule named); nothing is sent then.
    """
    from pydantic import ValidationError

    from loopline.serving.schemas import events_request_model

    ts = spec.events.timestamp
    columns = list(dict.fromkeys([*spec.entity_keys, *spec.features.request, ts]))
    if spec.events.id:
        columns.append(spec.events.id)
    missing = [c for c in columns if c not in events.columns]
    if missing:
        raise ValueError(f"events: missing column(s) {', '.join(missing)}")
    bodies = events.sort(ts).select(columns).to_dicts()
    for body in bodies:
        body[ts] = body[ts].isoformat() if body[ts] is not None else None
        if spec.events.id and body[spec.events.id] is not None:
            body[spec.events.id] = str(body[spec.events.id])
    model = events_request_model(spec)
    for start in range(0, len(bodies), spec.serving.max_batch_rows):
        chunk = bodies[start : start + spec.serving.max_batch_rows]
        try:
            model.model_validate({"events": chunk})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = [str(p) for p in error["loc"]]
            row = start + int(where[1]) if len(where) > 1 and where[1].isdigit() else start
            field_name = ".".join(where[2:]) or "event"
            raise ValueError(f"row {row + 1}: {field_name}: {error['msg']}") from None
    return bodies


def push(
    base_url: str,
    bodies: list[dict[str, Any]],
    *,
    chunk: int,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """POST bodies to `<base_url>/events` in chunks; how many the service accepted.

    Raises:
        httpx.HTTPError: the service could not be reached.
        RuntimeError: the service refused a chunk (its status and message).
    """
    accepted = 0
    with httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers) as client:
        for start in range(0, len(bodies), chunk):
            part = bodies[start : start + chunk]
            response = client.post("/events", json={"events": part})
            if response.status_code != 200:
                raise RuntimeError(
                    f"/events refused rows {start + 1}-{start + len(part)} "
                    f"({response.status_code}): {response.text[:300]}"
                )
            accepted += int(response.json()["accepted"])
            if on_chunk is not None:
                on_chunk(len(part))
    return accepted


def wait_for_champion(base_url: str, *, timeout_s: float = 60.0) -> int | None:
    """Poll `/health` until the API serves a champion; its version, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                champion = client.get("/health").json().get("champion")
            except (httpx.HTTPError, ValueError):
                champion = None
            if champion is not None:
                return int(champion)
            time.sleep(0.5)
    return None


def unscored_between(
    events: pl.DataFrame, spec: UseCaseSpec, bodies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The events of a replayed span that `bodies` does not score, as `POST /events` items.

    A replay that scores a sample of a day must still tell the service about the rest of the
    day's events, or every windowed count it serves is short by the events left out (and looks
    drifted): `send` pushes these, in time order, between the scored ones. Times are moved as
    `request_bodies` moved them.
    """
    ts, id_column = spec.events.timestamp, spec.events.id
    if not bodies or not id_column:
        return []
    scored = {b[id_column] for b in bodies}
    first = datetime.fromisoformat(bodies[0][ts])
    original = events.filter(pl.col(id_column).cast(pl.String) == bodies[0][id_column])
    shift = first - original.get_column(ts).item() if original.height else timedelta(0)
    rest = events.filter(~pl.col(id_column).cast(pl.String).is_in(list(scored)))
    rest = rest.with_columns(pl.col(ts) + shift)
    return event_bodies(rest, spec) if rest.height else []


def send(
    base_url: str,
    bodies: list[dict[str, Any]],
    *,
    timeout_s: float = 10.0,
    on_response: Callable[[int], None] | None = None,
    unscored: list[dict[str, Any]] | None = None,
    timestamp: str | None = None,
) -> ReplayReport:
    """POST every body to `<base_url>/predict`, in order; never raises on a failed request.

    With `unscored` (event bodies, see `unscored_between`) and the `timestamp` field, the
    events that fall before each scored one are pushed to `/events` first, so the service sees
    the whole span in time order.
    """
    report = ReplayReport()
    pending = list(unscored or [])
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        for body in bodies:
            if pending and timestamp is not None:
                at = datetime.fromisoformat(body[timestamp])
                due = [e for e in pending if datetime.fromisoformat(e[timestamp]) < at]
                if due:
                    pending = pending[len(due) :]
                    _push_quietly(client, due, report)
            started = time.perf_counter()
            try:
                response = client.post("/predict", json=body)
                status = response.status_code
            except httpx.HTTPError as exc:
                status, response = 0, None
                report.errors.append(f"{type(exc).__name__}: {exc}")
            report.sent += 1
            if status == 200:
                report.ok += 1
                report.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                report.failed += 1
                if response is not None:
                    report.errors.append(f"{status}: {response.text[:200]}")
            if on_response is not None:
                on_response(status)
        if pending:
            _push_quietly(client, pending, report)
    return report


def _push_quietly(client: httpx.Client, events: list[dict[str, Any]], report: ReplayReport) -> None:
    for start in range(0, len(events), 1_000):
        part = events[start : start + 1_000]
        try:
            response = client.post("/events", json={"events": part})
        except httpx.HTTPError as exc:
            report.errors.append(f"/events: {type(exc).__name__}: {exc}")
            continue
        if response.status_code == 200:
            report.pushed += len(part)
        else:
            report.errors.append(f"/events {response.status_code}: {response.text[:200]}")

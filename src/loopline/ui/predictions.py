"""Read-only queries over the prediction log for the control panel: one prediction's record,
the latest predictions, and the live champion-vs-challenger comparison.

Each takes the settings first (the log is a lake table, not a store table), so a page reads it
through `panel.read(fn, **params)`; frames have fixed schemas, so an empty log gives empty
frames with the same columns. The model version's lineage (run, datasets) comes from
`queries.version_lineage`, keyed by the `model_version_id` the log recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from loopline.monitoring.live_compare import CHAMPION, LiveComparison, compare_live
from loopline.serving.prediction_log import lookup_prediction, read_prediction_log
from loopline.settings import Settings
from loopline.spec import load_spec

TS = pl.Datetime("us", "UTC")
LATEST_DAYS = 7
ROLE_ORDER = {"champion": 0, "canary": 1, "shadow": 2}
WINDOWS_H: dict[str, int | None] = {
    "last 24 hours": 24,
    "last 7 days": 24 * 7,
    "last 30 days": 24 * 30,
    "everything logged": None,
}

LATEST_SCHEMA: dict[str, Any] = {
    "ts": TS,
    "request_id": pl.String,
    "model_name": pl.String,
    "model_version": pl.Int64,
    "role": pl.String,
    "score": pl.Float64,
    "latency_ms": pl.Float64,
}
VALUE_SCHEMA: dict[str, Any] = {"name": pl.String, "value": pl.String}
STAMP_SCHEMA: dict[str, Any] = {"view": pl.String, "row_time": TS, "age_h": pl.Float64}
HISTOGRAM_SCHEMA: dict[str, Any] = {
    "role": pl.String,
    "low": pl.Float64,
    "high": pl.Float64,
    "rows": pl.Int64,
    "share": pl.Float64,
}
FIGURE_SCHEMA: dict[str, Any] = {
    "figure": pl.String,
    "champion": pl.String,
    "challenger": pl.String,
    "difference": pl.String,
}


@dataclass(frozen=True)
class ScoredBy:
    """One logged row of a request: the model that scored it and what it saw.

    Attributes:
        role: champion, canary or shadow.
        model_name: The registered model.
        model_version: Its version number.
        model_version_id: Its registry id (the key of its lineage), if logged.
        alias: The alias it was served under.
        feature_service: The Feast feature service it was served from.
        score: Its score.
        latency_ms: Time to answer.
        ts: The event's time.
        received_at: When the service received it.
        features: The served feature values (name, value as text).
        feature_rows: Each view's row time, and its age at `ts` in hours.
        inputs: The model inputs (name, value as text).
        unknown_entities: Entities no view had a row for.
    """

    role: str
    model_name: str
    model_version: int
    model_version_id: str | None
    alias: str | None
    feature_service: str | None
    score: float | None
    latency_ms: float | None
    ts: datetime
    received_at: datetime | None
    features: pl.DataFrame
    feature_rows: pl.DataFrame
    inputs: pl.DataFrame
    unknown_entities: tuple[str, ...]


@dataclass(frozen=True)
class PredictionDetail:
    """Everything the log holds about one request, the answering row first."""

    request_id: str
    event_id: str | None
    entities: dict[str, Any]
    request: dict[str, Any]
    rows: tuple[ScoredBy, ...]


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _values(mapping: dict[str, Any] | None) -> pl.DataFrame:
    rows = [{"name": k, "value": _text(v)} for k, v in (mapping or {}).items()]
    return pl.DataFrame(rows, schema=VALUE_SCHEMA, orient="row")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _feature_rows(stamps: dict[str, Any] | None, ts: datetime) -> pl.DataFrame:
    rows = []
    for view, value in (stamps or {}).items():
        at = _parse_time(value)
        age = (ts - at).total_seconds() / 3600 if at is not None else None
        rows.append({"view": view, "row_time": at, "age_h": age})
    return pl.DataFrame(rows, schema=STAMP_SCHEMA, orient="row")


def _mapping(row: dict[str, Any], name: str) -> dict[str, Any]:
    value = row.get(name)
    return {k: v for k, v in value.items()} if isinstance(value, dict) else {}


def prediction_detail(settings: Settings, *, request_id: str) -> PredictionDetail | None:
    """The logged rows of one request (champion, then canary, then shadow), or None."""
    request_id = request_id.strip()
    if not request_id:
        return None
    found = lookup_prediction(settings.prediction_log_dir, request_id)
    if found.is_empty():
        return None
    rows = sorted(found.to_dicts(), key=lambda r: ROLE_ORDER.get(r.get("role") or CHAMPION, 9))
    first = rows[0]
    extra = _mapping(first, "extra")
    scored = tuple(
        ScoredBy(
            role=r.get("role") or CHAMPION,
            model_name=r["model_name"],
            model_version=int(r["model_version"]),
            model_version_id=r.get("model_version_id"),
            alias=r.get("alias"),
            feature_service=r.get("feature_service"),
            score=r.get("score"),
            latency_ms=r.get("latency_ms"),
            ts=r["ts"],
            received_at=r.get("received_at"),
            features=_values(_mapping(r, "features")),
            feature_rows=_feature_rows(_mapping(r, "feature_timestamps"), r["ts"]),
            inputs=_values(_mapping(r, "inputs")),
            unknown_entities=tuple(r.get("unknown_entities") or ()),
        )
        for r in rows
    )
    return PredictionDetail(
        request_id=request_id,
        event_id=extra.get("event_id"),
        entities=_mapping(first, "entities"),
        request=_mapping(first, "request"),
        rows=scored,
    )


def latest_predictions(settings: Settings, *, limit: int = 50) -> pl.DataFrame:
    """The newest logged rows of the last `LATEST_DAYS` days, newest first."""
    since = datetime.now(UTC) - timedelta(days=LATEST_DAYS)
    frame = read_prediction_log(settings.prediction_log_dir, since=since)
    if frame.is_empty():
        return pl.DataFrame(schema=LATEST_SCHEMA)
    return (
        frame.with_columns(pl.col("role").fill_null(CHAMPION))
        .with_columns(order=pl.col("role").replace_strict(ROLE_ORDER, default=9))
        .sort(["ts", "order"], descending=[True, False], maintain_order=True)
        .select(list(LATEST_SCHEMA))
        .cast(LATEST_SCHEMA)
        .head(limit)
    )


def live_comparison(
    settings: Settings, *, use_case: str, model_name: str, role: str, hours: int | None
) -> LiveComparison:
    """`compare_live` of a model over the last `hours` (None: the whole log).

    Raises:
        SpecError: the use case cannot be loaded.
        ValueError: an unknown challenger role.
    """
    since = None if hours is None else datetime.now(UTC) - timedelta(hours=hours)
    return compare_live(
        settings, load_spec(use_case), model_name=model_name, challenger_role=role, since=since
    )


def histogram_frame(comparison: LiveComparison) -> pl.DataFrame:
    """The comparison's score histograms as a frame (`charts.live_scores` draws it)."""
    rows = [
        {"role": b.role, "low": b.low, "high": b.high, "rows": b.rows, "share": b.share}
        for b in comparison.histogram
    ]
    return pl.DataFrame(rows, schema=HISTOGRAM_SCHEMA, orient="row")


def _number(value: float | int | None, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "—"
    if low is None or high is None:
        return f"{value:.4f}"
    return f"{value:.4f} ({low:.4f} to {high:.4f})"


def figure_table(comparison: LiveComparison) -> pl.DataFrame:
    """The comparison's figures as rows: champion, challenger and their difference."""
    c, s = comparison.champion, comparison.challenger
    rows: list[dict[str, str]] = []
    if c is None or s is None:
        return pl.DataFrame(schema=FIGURE_SCHEMA)

    def add(figure: str, champion: str, challenger: str, difference: str = "") -> None:
        rows.append(dict(figure=figure, champion=champion, challenger=challenger,
                         difference=difference))  # fmt: skip

    add("version", f"v{c.model_version}", f"v{s.model_version}")
    add("requests", str(c.rows), str(s.rows))
    gap = None if c.mean_score is None or s.mean_score is None else s.mean_score - c.mean_score
    add("mean score", _number(c.mean_score), _number(s.mean_score), _number(gap, "+.4f"))
    if c.threshold is not None and s.threshold is not None:
        add("decision threshold", _number(c.threshold, ".3g"), _number(s.threshold, ".3g"))
    m = comparison.metric
    if m is not None:
        add(
            f"{m.metric} (95% interval)",
            _interval(m.champion.value, m.champion.low, m.champion.high),
            _interval(m.challenger.value, m.challenger.low, m.challenger.high),
            _interval(m.difference.value, m.difference.low, m.difference.high),
        )
        add("labelled requests", str(m.champion_rows), str(m.challenger_rows))
    return pl.DataFrame(rows, schema=FIGURE_SCHEMA, orient="row")

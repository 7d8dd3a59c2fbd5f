"""Prediction log records: the table schema, validation, and the spool's line and file format.

A record is validated and normalized once (`normalize_record`), written to the spool as one JSON
line (`encode_record`), and turned into table rows in batches (`rows_to_frame`): typed scalar
columns, and the mappings whose keys differ between models (`JSON_COLUMNS`) as JSON strings.
Spool segment files are named `<writer>-<seq>.spool`; a writer's progress is the Delta
application transaction `app_id(writer)` with version `pack_offset(seq, end offset)`.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

ROLES = frozenset({"champion", "canary", "shadow"})
SPOOL_DIR_NAME = "_spool"
SEGMENT_PATTERN = re.compile(r"^([0-9a-f]{16})-(\d{8})\.spool$")
APP_ID_PREFIX = "loopline.prediction_log."
OFFSET_BITS = 40  # txn version = segment sequence << OFFSET_BITS | committed end offset
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"

# The scalar columns every row has, in this order, and their types in the frame the reader returns.
BASE_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "received_at": pl.Datetime("us", "UTC"),
    "model_name": pl.String(),
    "model_version": pl.Int64(),
    "model_version_id": pl.String(),
    "feature_service": pl.String(),
    "alias": pl.String(),
    "role": pl.String(),
    "score": pl.Float64(),
    "latency_ms": pl.Float64(),
}
# Mappings whose keys differ between models: JSON strings in the table, structs when read.
JSON_COLUMNS = ("request", "inputs", "entities", "features", "feature_timestamps")
# Record keys outside the schema are kept, as one JSON object.
EXTRA_COLUMN = "extra"
TABLE_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(),
    **BASE_SCHEMA,
    "unknown_entities": pl.List(pl.String()),
    **{name: pl.String() for name in (*JSON_COLUMNS, EXTRA_COLUMN)},
}
PARTITION_BY = ("day",)
_REQUIRED = ("request_id", "ts", "model_name", "model_version")
_OPTIONAL_TEXT = ("model_version_id", "feature_service", "alias")
_KNOWN = frozenset(BASE_SCHEMA) | {"unknown_entities", *JSON_COLUMNS}


class PredictionLogError(Exception):
    """Root of the prediction log's errors."""


class PredictionRecordError(PredictionLogError, ValueError):
    """A record cannot be logged (a field is missing, has the wrong type, or is not JSON)."""


class PredictionLogUnavailable(PredictionLogError, OSError):
    """The log cannot take a record now; the prediction must not be acknowledged (503)."""


class PredictionLogFull(PredictionLogUnavailable):
    """The spool is full: the table is not keeping up or cannot be written."""


class PredictionLogClosed(PredictionLogUnavailable):
    """The log was closed (the service is shutting down)."""


class PredictionLogFlushError(PredictionLogError):
    """Spooled records could not be committed to the table; they stay spooled and are retried."""


def _finite(value: Any, name: str) -> float | None:
    """A real number as float (NaN and infinities become None), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or (
        not isinstance(value, int | float) and not hasattr(value, "item")
    ):
        raise PredictionRecordError(f"{name}: must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise PredictionRecordError(f"{name}: must be a number ({exc})") from exc
    return number if math.isfinite(number) else None


def _aware(value: Any, name: str) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise PredictionRecordError(f"{name}: must be a timezone-aware datetime")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise PredictionRecordError(f"{name}: must be a non-empty string")
    return value


def _mapping(value: Any, name: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PredictionRecordError(f"{name}: must be a mapping, got {type(value).__name__}")
    return value


def _timestamps(value: Any) -> dict[str, str | None] | None:
    mapping = _mapping(value, "feature_timestamps")
    if mapping is None:
        return None
    out: dict[str, str | None] = {}
    for view, ts in mapping.items():
        name = f"feature_timestamps.{view}"
        if ts is None or isinstance(ts, str):
            out[str(view)] = ts
        else:
            out[str(view)] = _aware(ts, name)
    return out


def _json_safe(value: Any) -> Any:
    """JSON-ready value: NaN and infinities become null, datetimes ISO strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return _json_safe(value.item())
    return value


def normalize_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the spool stores it: validated, timestamps as UTC ISO strings.

    Raises:
        PredictionRecordError: a required field is missing or a field has the wrong type.
    """
    if not isinstance(record, Mapping):
        raise PredictionRecordError(f"record: must be a mapping, got {type(record).__name__}")
    missing = [name for name in _REQUIRED if record.get(name) is None]
    if "ts" in missing:  # the message callers (and tests) know
        raise PredictionRecordError("ts: must be a timezone-aware datetime")
    if missing:
        raise PredictionRecordError(f"missing required field(s): {', '.join(missing)}")
    version = record["model_version"]
    try:
        if isinstance(version, bool):
            raise TypeError("bool")
        version = operator.index(version)
    except TypeError as exc:
        raise PredictionRecordError("model_version: must be an integer") from exc
    role = record.get("role")
    if role is not None and role not in ROLES:
        raise PredictionRecordError(f"role: must be one of {sorted(ROLES)}, got {role!r}")
    received = record.get("received_at")
    unknown = record.get("unknown_entities")
    if unknown is not None and (
        not isinstance(unknown, list | tuple) or not all(isinstance(u, str) for u in unknown)
    ):
        raise PredictionRecordError("unknown_entities: must be a list of strings")
    inputs = _mapping(record.get("inputs"), "inputs")
    out: dict[str, Any] = {
        "request_id": _text(record["request_id"], "request_id", required=True),
        "ts": _aware(record["ts"], "ts"),
        "received_at": None if received is None else _aware(received, "received_at"),
        "model_name": _text(record["model_name"], "model_name", required=True),
        "model_version": version,
        **{name: _text(record.get(name), name) for name in _OPTIONAL_TEXT},
        "role": role,
        "score": _finite(record.get("score"), "score"),
        "latency_ms": _finite(record.get("latency_ms"), "latency_ms"),
        "unknown_entities": None if unknown is None else list(unknown),
        "inputs": None
        if inputs is None
        else {str(k): _finite(v, f"inputs.{k}") for k, v in inputs.items()},
        "feature_timestamps": _timestamps(record.get("feature_timestamps")),
    }
    for name in ("request", "entities", "features"):
        mapping = _mapping(record.get(name), name)
        out[name] = None if mapping is None else _json_safe(mapping)
    extra = {k: _json_safe(v) for k, v in record.items() if k not in _KNOWN}
    if extra:
        out[EXTRA_COLUMN] = extra
    return out


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One spool line (with its newline) for a record; see `normalize_record` for the rules.

    Raises:
        PredictionRecordError: the record is malformed or a value cannot be written as JSON.
    """
    body = normalize_record(record)
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PredictionRecordError(f"record is not JSON-serializable: {exc}") from exc
    return text.encode() + b"\n"


def decode_line(line: bytes) -> dict[str, Any] | None:
    """A spooled record, or None for a torn or unreadable line."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    if not isinstance(row.get("request_id"), str) or not isinstance(row.get("ts"), str):
        return None
    return row


def rows_to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Spooled records as a frame of `TABLE_SCHEMA` (mappings as JSON strings)."""
    columns: dict[str, list[Any]] = {
        name: [row.get(name) for row in rows]
        for name in TABLE_SCHEMA
        if name not in (*JSON_COLUMNS, EXTRA_COLUMN, "day")
    }
    for name in (*JSON_COLUMNS, EXTRA_COLUMN):
        columns[name] = [
            None if row.get(name) is None else json.dumps(row[name], separators=(",", ":"))
            for row in rows
        ]
    text_ts = {"ts": pl.String(), "received_at": pl.String()}
    frame = pl.DataFrame(
        columns,
        schema={n: text_ts.get(n, t) for n, t in TABLE_SCHEMA.items() if n != "day"},
        strict=False,
    )
    parsed = [
        pl.col(n)
        .str.to_datetime(TS_FORMAT, time_unit="us", strict=False)
        .dt.convert_time_zone("UTC")
        for n in text_ts
    ]
    frame = frame.with_columns(parsed).filter(pl.col("ts").is_not_null())
    return frame.with_columns(pl.col("ts").dt.date().alias("day")).select(*TABLE_SCHEMA)


# ---------------------------------------------------------------------------- spool files


def app_id(writer: str) -> str:
    return APP_ID_PREFIX + writer


def pack_offset(seq: int, offset: int) -> int:
    return seq << OFFSET_BITS | offset


def committed_offset(seq: int, txn: int | None) -> int | None:
    """Bytes of segment `seq` the table holds per its writer's txn version (None: all)."""
    if txn is None:
        return 0
    done_seq, done_offset = txn >> OFFSET_BITS, txn & ((1 << OFFSET_BITS) - 1)
    if done_seq > seq:
        return None
    return done_offset if done_seq == seq else 0


def segments_in(spool_dir: Path) -> list[tuple[str, int, Path]]:
    """(writer, seq, path) of the segment files of a spool, in commit order."""
    if not spool_dir.is_dir():
        return []
    found = []
    for path in spool_dir.iterdir():
        match = SEGMENT_PATTERN.match(path.name)
        if match:
            found.append((match.group(1), int(match.group(2)), path))
    return sorted(found, key=lambda item: (item[0], item[1]))


def spool_lines(data: bytes, start: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, end, line) of the newline-terminated lines of `data` read at `start`."""
    position = 0
    while True:
        cut = data.find(b"\n", position)
        if cut < 0:
            return
        yield start + position, start + cut + 1, data[position:cut]
        position = cut + 1

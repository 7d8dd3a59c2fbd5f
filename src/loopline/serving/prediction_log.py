"""Append-only prediction log: one JSON line per prediction, one file per UTC day.

Files are `predictions-YYYY-MM-DD.jsonl` under the log folder, the day being the UTC date of the
record's `ts`. A line is written with one `write` on a file opened in append mode, so lines from
threads (and from several server processes) never interleave, and each line is handed to the
operating system before the request returns: a crash of the server loses nothing it answered.
A crash of the machine mid-write can leave a torn last line; the reader skips it, and the writer
terminates it before appending, so the next record starts on a line of its own.

A record holds request_id, ts (UTC ISO 8601), model_name, model_version, model_version_id,
feature_service, alias, `request` (the request fields), `inputs` (the model inputs by name,
exactly as the model saw them, NaN written as null) and score.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^predictions-(\d{4}-\d{2}-\d{2})\.jsonl$")
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"

# Columns every record has, in this order, and their types in the frame the reader returns.
BASE_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "model_name": pl.String(),
    "model_version": pl.Int64(),
    "model_version_id": pl.String(),
    "feature_service": pl.String(),
    "alias": pl.String(),
    "score": pl.Float64(),
}


class PredictionLogError(ValueError):
    """A record cannot be logged (missing or naive `ts`, not JSON-serializable)."""


def log_file(directory: Path, day: date) -> Path:
    """Path of the log file of one UTC day."""
    return Path(directory) / f"predictions-{day.isoformat()}.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe value: NaN and infinities become null (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One log line (with its newline) for a record whose `ts` is a UTC-aware datetime.

    Raises:
        PredictionLogError: `ts` is missing or naive, or a value cannot be written as JSON.
    """
    ts = record.get("ts")
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        raise PredictionLogError("ts: must be a timezone-aware datetime")
    body = _clean({**record, "ts": ts.astimezone(UTC).isoformat(timespec="microseconds")})
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise PredictionLogError(f"record is not JSON-serializable: {exc}") from exc
    return text.encode() + b"\n"


def _json_default(value: Any) -> Any:
    # numpy scalars (scores, inputs) without importing numpy here
    if hasattr(value, "item"):
        return _clean(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


class PredictionLog:
    """Thread-safe appender of prediction records to the day files of a folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day: date | None = None

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as a line of its UTC day's file; returns once the OS has it.

        Raises:
            PredictionLogError: the record is malformed (nothing is written).
            OSError: the file could not be written.
        """
        line = encode_record(record)
        day = record["ts"].astimezone(UTC).date()
        with self._lock:
            fd = self._open(day)
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]

    def _open(self, day: date) -> int:
        if self._fd is not None and self._day == day:
            return self._fd
        self._close()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_file(self.directory, day), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _terminate_torn_line(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._day = fd, day
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._day = None, None

    def close(self) -> None:
        """Close the open file (appending again reopens it)."""
        with self._lock:
            self._close()


def _terminate_torn_line(fd: int) -> None:
    """End a torn last line left by a crash so the next record starts on its own line."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")


def _day_of(path: Path) -> date | None:
    match = FILE_PATTERN.match(path.name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _read_file(path: Path) -> pl.DataFrame | None:
    """The records of one log file; torn or unreadable lines are skipped with a warning."""
    data = path.read_bytes()
    if not data.strip():
        return None
    try:
        return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except pl.exceptions.PolarsError:  # a torn line: check line by line
        pass
    good: list[bytes] = []
    dropped = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            good.append(line)
        else:
            dropped += 1
    log.warning("%s: skipped %d torn or unreadable line(s)", path, dropped)
    if not good:
        return None
    return pl.read_ndjson(io.BytesIO(b"\n".join(good)), infer_schema_length=None)


def read_prediction_log(
    directory: Path, *, since: datetime | None = None, until: datetime | None = None
) -> pl.DataFrame:
    """Predictions logged in `[since, until)` (both optional, UTC-aware), oldest first.

    Torn lines (a crash mid-write) are skipped with a warning, never raised on.

    Returns:
        One row per prediction: the columns of `BASE_SCHEMA` (ts as datetime[us, UTC]) plus
        struct columns `request` and `inputs` (unnest them with `.struct.unnest()`); fields a
        record lacks are null. No files or no rows in range: an empty frame of BASE_SCHEMA.

    Raises:
        ValueError: since or until is naive.
    """
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise ValueError(f"{name}: must be timezone-aware (UTC)")
    first = since.astimezone(UTC).date() if since else None
    last = until.astimezone(UTC).date() if until else None
    frames: list[pl.DataFrame] = []
    folder = Path(directory)
    paths = sorted(folder.glob("predictions-*.jsonl")) if folder.is_dir() else []
    for path in paths:
        day = _day_of(path)
        if day is None or (first and day < first) or (last and day > last):
            continue
        records = _read_file(path)
        if records is not None:
            frames.append(records)
    if not frames:
        return pl.DataFrame(schema=BASE_SCHEMA)
    frame = pl.concat(frames, how="diagonal_relaxed")
    frame = frame.with_columns(
        pl.col("ts").str.to_datetime(TS_FORMAT, time_unit="us").dt.convert_time_zone("UTC")
    )
    missing = [pl.lit(None, dtype).alias(n) for n, dtype in BASE_SCHEMA.items() if n not in frame]
    frame = frame.with_columns(missing).with_columns(
        pl.col(n).cast(dtype) for n, dtype in BASE_SCHEMA.items()
    )
    if since is not None:
        frame = frame.filter(pl.col("ts") >= since)
    if until is not None:
        frame = frame.filter(pl.col("ts") < until)
    extra = [c for c in frame.columns if c not in BASE_SCHEMA]
    return frame.select(*BASE_SCHEMA, *extra).sort("ts", maintain_order=True)

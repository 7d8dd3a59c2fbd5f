"""Reading the prediction log: the table plus what its writers still hold in the spool.

Spooled lines that the table's transaction state does not cover yet are included, exactly once,
so a prediction is visible as soon as `PredictionLog.append` returned.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.dataset as ds

from loopline.lake import tables
from loopline.serving.prediction_records import (
    BASE_SCHEMA,
    EXTRA_COLUMN,
    JSON_COLUMNS,
    SPOOL_DIR_NAME,
    TABLE_SCHEMA,
    app_id,
    decode_line,
    pack_offset,
    rows_to_frame,
    segments_in,
    spool_lines,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable


def _check_bounds(since: datetime | None, until: datetime | None) -> None:
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise ValueError(f"{name}: must be timezone-aware (UTC)")


def _spooled(spool_dir: Path) -> list[tuple[str, int, int, dict[str, Any]]]:
    """(writer, seq, end offset, record) of every whole, readable line of a spool."""
    found = []
    for writer, seq, path in segments_in(spool_dir):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # committed and deleted meanwhile: the table has it
            continue
        for _, end, line in spool_lines(data, 0):
            row = decode_line(line)
            if row is not None:
                found.append((writer, seq, end, row))
    return found


def _filters(
    since: datetime | None, until: datetime | None, request_id: str | None
) -> list[pl.Expr]:
    out = []
    if since is not None:
        out.append(pl.col("ts") >= since)
    if until is not None:
        out.append(pl.col("ts") < until)
    if request_id is not None:
        out.append(pl.col("request_id") == request_id)
    return out


def _table_rows(
    uri: str, since: datetime | None, until: datetime | None, request_id: str | None
) -> tuple[pl.DataFrame | None, DeltaTable | None]:
    if not tables.exists(uri):
        return None, None
    snapshot = tables.snapshot(uri)
    expression = None
    parts = []
    if since is not None:
        parts.append(ds.field("day") >= since.astimezone(UTC).date())
    if until is not None:
        parts.append(ds.field("day") <= until.astimezone(UTC).date())
    if request_id is not None:
        parts.append(ds.field("request_id") == request_id)
    for part in parts:
        expression = part if expression is None else expression & part
    arrow = snapshot.to_pyarrow_dataset().to_table(filter=expression)
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    missing = [pl.lit(None, t).alias(n) for n, t in TABLE_SCHEMA.items() if n not in frame]
    return frame.with_columns(missing).select(*TABLE_SCHEMA), snapshot


def _read(
    directory: Path | str,
    *,
    spool_dir: Path | str | None,
    include_spool: bool,
    since: datetime | None,
    until: datetime | None,
    request_id: str | None = None,
) -> pl.DataFrame:
    """The reader's frame (see `read_prediction_log`) of the table and the spool it lacks."""
    _check_bounds(since, until)
    directory = Path(directory)
    spool = Path(spool_dir) if spool_dir else directory / SPOOL_DIR_NAME
    # The spool is read before the table: a line committed (and its segment deleted) in
    # between is then in the table snapshot, and the snapshot's txn versions drop the spooled
    # copies of every line it holds.
    spooled = _spooled(spool) if include_spool else []
    table, snapshot = _table_rows(str(directory), since, until, request_id)
    frames = [table] if table is not None else []
    if spooled:
        txns: dict[str, int | None] = {}
        waiting = []
        for writer, seq, end, row in spooled:
            if writer not in txns:
                txns[writer] = snapshot.transaction_version(app_id(writer)) if snapshot else None
            txn = txns[writer]
            if txn is None or pack_offset(seq, end) > txn:
                waiting.append(row)
        if waiting:
            frames.append(rows_to_frame(waiting))
    if not frames:
        return pl.DataFrame(schema=BASE_SCHEMA)
    frame = pl.concat(frames, how="vertical_relaxed")
    conditions = _filters(since, until, request_id)
    return _present(frame.filter(*conditions) if conditions else frame)


def _decode_json(column: pl.Series) -> pl.Series:
    if column.null_count() == column.len():
        return pl.Series(column.name, [None] * column.len(), dtype=pl.Struct({}))
    decoded = column.str.json_decode(infer_schema_length=None)
    if decoded.dtype == pl.Null:
        return pl.Series(column.name, [None] * column.len(), dtype=pl.Struct({}))
    return decoded


def _present(frame: pl.DataFrame) -> pl.DataFrame:
    """The reader's contract: BASE_SCHEMA, then the mappings as structs, oldest first."""
    if frame.is_empty():
        return pl.DataFrame(schema=BASE_SCHEMA)
    frame = frame.sort("ts", "received_at", nulls_last=True, maintain_order=True)
    decoded = [_decode_json(frame.get_column(name)) for name in JSON_COLUMNS]
    extra = frame.get_column(EXTRA_COLUMN)
    if extra.null_count() < extra.len():
        decoded.append(_decode_json(extra))
    return frame.select(*BASE_SCHEMA, "unknown_entities").with_columns(decoded)


def read_prediction_log(
    directory: Path | str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    spool_dir: Path | str | None = None,
    include_spool: bool = True,
) -> pl.DataFrame:
    """Predictions logged with `ts` in `[since, until)` (both optional, UTC-aware), oldest first.

    Records still waiting in the spool are included (unless `include_spool=False`), exactly
    once, so a prediction is visible as soon as `append` returned; torn spool lines are left
    out. Only day partitions that can hold the window are read.

    Args:
        directory: The log's table (a folder without one reads as empty).
        since: Inclusive lower bound on `ts`.
        until: Exclusive upper bound on `ts`.
        spool_dir: The writers' spool if not `<directory>/_spool`.
        include_spool: Whether to include records not committed yet.

    Returns:
        One row per prediction: the columns of `BASE_SCHEMA`, `unknown_entities` (list of
        str), then struct columns `request`, `inputs`, `entities`, `features` and
        `feature_timestamps` (unnest them with `.struct.unnest()`; a mapping a record lacks is
        null), and `extra` (record keys outside the schema) when any record had some. No rows:
        an empty frame of BASE_SCHEMA.

    Raises:
        ValueError: since or until is naive.
    """
    return _read(
        directory, spool_dir=spool_dir, include_spool=include_spool, since=since, until=until
    )


def lookup_prediction(
    directory: Path | str,
    request_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    spool_dir: Path | str | None = None,
) -> pl.DataFrame:
    """The logged rows of one request (one per role that scored it: champion, shadow, ...).

    The whole table is searched unless `since`/`until` bound the request's `ts`; spooled
    records are included.

    Returns:
        The frame `read_prediction_log` returns, restricted to `request_id` (empty if unknown).

    Raises:
        ValueError: since or until is naive, or request_id is empty.
    """
    if not request_id:
        raise ValueError("request_id: must be a non-empty string")
    return _read(
        directory,
        spool_dir=spool_dir,
        include_spool=True,
        since=since,
        until=until,
        request_id=request_id,
    )


def compact_prediction_log(directory: Path | str) -> dict[str, Any]:
    """Merge the small files of the frequent commits into larger ones (a new table version).

    Readers keep working during and after (older versions keep their files until a vacuum).

    Returns:
        Delta's optimize metrics (files added and removed, ...); empty if there is no table.
    """
    uri = str(directory)
    if not tables.exists(uri):
        return {}
    return tables.snapshot(uri).optimize.compact()

"""Feature tables as Delta tables: fast appends, exact replacement of a time range, lineage.

The windowed feature tables grow by increments. Each build writes its rows as Parquet files with
Polars (several times faster than the Delta writer here) and then commits them in one Delta
transaction, with the build's watermark and source versions in the commit metadata. Readers see
the previous version or the new one, never a half-written build; files of a build that died
before its commit are never referenced.

A build that must revise history (events arrived late, before the previous watermark) replaces
every row stamped after a given instant: files entirely after it are removed, files straddling
it are rewritten with their earlier rows, and the new rows are added, all in one commit.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction, RemoveAction

TIMESTAMP = "event_timestamp"
WATERMARK = "loopline.watermark"
FINGERPRINT = "loopline.fingerprint"
SOURCES = "loopline.sources"
SINCE = "loopline.since"
ROWS = "loopline.rows"


@dataclass(frozen=True)
class TableState:
    """What the newest commit of a feature table says about it."""

    version: int
    watermark: datetime | None
    fingerprint: str | None
    sources: dict[str, int] = field(default_factory=dict)
    rows: int | None = None


def exists(uri: str) -> bool:
    """Whether a Delta table exists at `uri`."""
    return DeltaTable.is_deltatable(uri)


def state(uri: str) -> TableState | None:
    """The newest version of the table and its build metadata; None if there is no table."""
    if not exists(uri):
        return None
    table = DeltaTable(uri)
    commit = table.history(1)[0]
    watermark = commit.get(WATERMARK)
    rows = commit.get(ROWS)
    return TableState(
        version=table.version(),
        watermark=datetime.fromisoformat(watermark) if watermark else None,
        fingerprint=commit.get(FINGERPRINT),
        sources={k: int(v) for k, v in json.loads(commit.get(SOURCES) or "{}").items()},
        rows=int(rows) if rows is not None else None,
    )


def added_min(uri: str, since_version: int, column: str) -> datetime | bool | None:
    """Earliest `column` value among rows added to a table after `since_version`.

    Returns:
        The earliest value; None when nothing was added; False when files present at
        `since_version` were removed since (an overwrite or compaction): the caller cannot tell
        what changed and must rebuild in full.
    """
    table = DeltaTable(uri)
    if since_version > table.version():
        return False
    now = set(table.file_uris())
    table.load_as_version(since_version)
    before = set(table.file_uris())
    if not before <= now:
        return False
    added = sorted(now - before)
    if not added:
        return None
    earliest = pl.scan_parquet(added).select(pl.col(column).min()).collect().item()
    return earliest


def write(
    uri: str,
    chunks: Iterable[pl.DataFrame],
    *,
    mode: str,
    after: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """Write feature rows as one Delta commit.

    Args:
        uri: Table folder (created on first write).
        chunks: Frames with the same schema, including event_timestamp (datetime[us, UTC]).
        mode: "overwrite" (replace everything), "append", or "replace_after" (replace every
            row with event_timestamp > `after`).
        after: The instant for "replace_after".
        metadata: Commit metadata (values are stored as strings).

    Returns:
        (version written, rows written).

    Raises:
        ValueError: unknown mode, a missing `after`, or chunks of different schemas.
    """
    if mode not in ("overwrite", "append", "replace_after"):
        raise ValueError(f"mode: must be overwrite, append or replace_after, got {mode!r}")
    if mode == "replace_after" and after is None:
        raise ValueError("after: required with mode='replace_after'")
    root = Path(uri)
    root.mkdir(parents=True, exist_ok=True)
    actions: list[AddAction | RemoveAction] = []
    schema: pl.Schema | None = None
    rows = 0
    # Files are written on a second thread while the next chunk is computed (Polars' Parquet
    # writer releases the GIL); at most two chunks wait, so memory stays bounded.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: list[Future[AddAction]] = []
        for chunk in chunks:
            if schema is None:
                schema = chunk.schema
            elif chunk.schema != schema:
                raise ValueError(f"feature rows: chunk schema {chunk.schema} differs from {schema}")
            if chunk.height:
                pending.append(writer.submit(_write_file, root, chunk))
                rows += chunk.height
            while len(pending) > 2:
                actions.append(pending.pop(0).result())
        actions.extend(future.result() for future in pending)
    table = DeltaTable(uri) if exists(uri) else None
    if schema is None:
        if table is None:
            raise ValueError("feature rows: nothing to write and no table to take a schema from")
        schema = pl.Schema(pl.DataFrame(table.to_pyarrow_dataset().schema.empty_table()).schema)
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
    if table is None:
        table = DeltaTable.create(uri, schema=arrow_schema, mode="error")
    if mode == "replace_after":
        assert after is not None
        actions.extend(_cut_after(table, root, after, schema))
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    values[ROWS] = str(_rows_after(table, actions, keep_existing=mode != "overwrite"))
    table.create_write_transaction(
        actions,
        "overwrite" if mode == "overwrite" else "append",
        arrow_schema,
        commit_properties=CommitProperties(custom_metadata=values),
    )
    return DeltaTable(uri).version(), rows


def read(uri: str, *, version: int | None = None, columns: list[str] | None = None) -> pl.DataFrame:
    """A version of a feature table (all of it, or some columns)."""
    table = DeltaTable(uri)
    if version is not None:
        table.load_as_version(version)
    files = table.file_uris()
    if not files:
        empty = pl.DataFrame(table.to_pyarrow_dataset().schema.empty_table())
        return empty.select(columns) if columns else empty
    return pl.read_parquet(files, columns=columns)


def _write_file(root: Path, frame: pl.DataFrame) -> AddAction:
    name = f"part-{uuid.uuid4().hex}.parquet"
    path = root / name
    frame.write_parquet(path, compression="snappy", statistics=True)
    stats: dict[str, Any] = {"numRecords": frame.height}
    if TIMESTAMP in frame.columns and frame.height:
        low, high = frame[TIMESTAMP].min(), frame[TIMESTAMP].max()
        assert isinstance(low, datetime) and isinstance(high, datetime)
        stats["minValues"] = {TIMESTAMP: _stat(low, up=False)}
        stats["maxValues"] = {TIMESTAMP: _stat(high, up=True)}
        stats["nullCount"] = {TIMESTAMP: 0}
    return AddAction(
        path=name,
        size=path.stat().st_size,
        partition_values={},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(stats),
    )


def _stat(value: datetime, *, up: bool) -> str:
    """A Delta timestamp statistic (milliseconds): rounded outwards so pruning stays safe."""
    value = value.astimezone(UTC)
    extra = value.microsecond % 1000
    value -= timedelta(microseconds=extra)
    if up and extra:
        value += timedelta(milliseconds=1)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}Z"


def _cut_after(
    table: DeltaTable, root: Path, after: datetime, schema: pl.Schema
) -> list[AddAction | RemoveAction]:
    """Actions that drop every row stamped after `after` from the current files."""
    actions: list[AddAction | RemoveAction] = []
    now = int(time.time() * 1000)
    for uri in table.file_uris():
        frame = pl.read_parquet(uri)
        keep = frame.filter(pl.col(TIMESTAMP) <= after)
        if keep.height == frame.height:
            continue
        name = Path(uri).name
        actions.append(RemoveAction(path=name, data_change=True, deletion_timestamp=now))
        if keep.height:
            actions.append(_write_file(root, keep.cast(dict(schema))))  # type: ignore[arg-type]
    return actions


def _rows_after(
    table: DeltaTable, actions: list[AddAction | RemoveAction], *, keep_existing: bool
) -> int:
    """Rows the table holds once `actions` are committed."""
    total = sum(int(json.loads(a.stats)["numRecords"]) for a in actions if isinstance(a, AddAction))
    if keep_existing:
        removed = [a.path for a in actions if isinstance(a, RemoveAction)]
        existing = pl.DataFrame(table.get_add_actions(flatten=True))
        if existing.height:
            total += int(existing.filter(~pl.col("path").is_in(removed))["num_records"].sum())
    return total

"""Versioned lake tables: Delta Lake written through `deltalake`, read by Polars and DuckDB.

Every write is a new table version, so a model can record exactly which versions it saw and any
past version can be read back. DuckDB reads tables through Arrow datasets (never through an
extension download).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class LakeError(ValueError):
    """A lake table name, version or write was invalid."""


def table_uri(lake_dir: Path, name: str) -> str:
    """Location of the table `name` under `lake_dir`.

    Raises:
        LakeError: the name is not a lowercase identifier (no paths, no dots).
    """
    if not _TABLE_NAME.match(name):
        raise LakeError(f"table name '{name}' must match {_TABLE_NAME.pattern}")
    return str(lake_dir / name)


def exists(uri: str) -> bool:
    """Whether a Delta table exists at `uri`."""
    return DeltaTable.is_deltatable(uri)


def current_version(uri: str) -> int | None:
    """The newest version of the table, or None if there is no table yet."""
    return DeltaTable(uri).version() if exists(uri) else None


def schema(uri: str) -> dict[str, pl.DataType]:
    """Column name -> Polars dtype of the newest table version."""
    arrow_schema = pa.schema(DeltaTable(uri).schema().to_arrow())
    return dict(pl.from_arrow(arrow_schema.empty_table()).schema)  # type: ignore[union-attr]


def breaking_changes(uri: str, frame: pl.DataFrame) -> list[str]:
    """Why appending `frame` would break the table's schema (empty when it is additive only).

    Deltalake would silently cast a changed type when values happen to parse, so the check is
    explicit: every existing column must keep its exact type; new columns may be added.
    """
    if not exists(uri):
        return []
    problems = []
    for name, dtype in schema(uri).items():
        if name not in frame.schema:
            problems.append(f"column '{name}' is missing (was {dtype})")
        elif frame.schema[name] != dtype:
            problems.append(f"column '{name}' changes type from {dtype} to {frame.schema[name]}")
    return problems


def transaction_version(uri: str, app_id: str) -> int | None:
    """The version the application `app_id` last committed with (its Delta `txn`), if any.

    Writers that must not commit the same data twice (the prediction log's spool) record how
    far they got as an application transaction in the same commit as the data, and read it
    back here after a crash.
    """
    return DeltaTable(uri).transaction_version(app_id) if exists(uri) else None


def snapshot(uri: str, version: int | None = None) -> DeltaTable:
    """The table at one version (newest by default): data and transaction state agree.

    Raises:
        LakeError: there is no table at `uri`, or no such version.
    """
    return _load(uri, version)


def append(
    uri: str,
    frame: pl.DataFrame,
    *,
    metadata: Mapping[str, str] | None = None,
    partition_by: Sequence[str] | None = None,
    transaction: tuple[str, int] | None = None,
) -> int:
    """Append `frame` as a new table version (creating the table on first write).

    Columns may be added over time (schema merge); a dropped column or a changed type is
    refused before anything is written.

    Args:
        uri: The table location.
        frame: The rows to append.
        metadata: Commit metadata (shown in the table's history).
        partition_by: Partition columns when the table is created (must match afterwards).
        transaction: (app id, version) recorded atomically with the data, read back with
            `transaction_version` (exactly-once writers).

    Returns:
        The version written.

    Raises:
        LakeError: the frame is empty or breaks the table's schema.
    """
    if frame.is_empty():
        raise LakeError("refusing to write an empty frame as a new table version")
    problems = breaking_changes(uri, frame)
    if problems:
        raise LakeError(f"breaking schema change for {uri}: " + "; ".join(problems))
    commit = CommitProperties(
        custom_metadata=dict(metadata or {}),
        app_transactions=[Transaction(*transaction)] if transaction else None,
    )
    write_deltalake(
        uri,
        frame.to_arrow(),
        mode="append",
        partition_by=list(partition_by) if partition_by else None,
        schema_mode="merge" if exists(uri) else None,
        commit_properties=commit,
    )
    version = current_version(uri)
    assert version is not None
    return version


def overwrite(uri: str, frame: pl.DataFrame, *, metadata: Mapping[str, str] | None = None) -> int:
    """Replace the table's content with `frame` as a new version (history is kept)."""
    commit = CommitProperties(custom_metadata=dict(metadata or {}))
    write_deltalake(
        uri, frame.to_arrow(), mode="overwrite", schema_mode="overwrite", commit_properties=commit
    )
    version = current_version(uri)
    assert version is not None
    return version


def _load(uri: str, version: int | None) -> DeltaTable:
    if not exists(uri):
        raise LakeError(f"no lake table at {uri}")
    table = DeltaTable(uri)
    if version is not None:
        if version < 0 or version > table.version():
            raise LakeError(f"table {uri} has no version {version} (newest: {table.version()})")
        table.load_as_version(version)
    return table


def read(uri: str, version: int | None = None) -> pl.DataFrame:
    """Read a table (optionally an exact past version) into Polars."""
    return pl.from_arrow(_load(uri, version).to_pyarrow_table())  # type: ignore[return-value]


def arrow_dataset(uri: str, version: int | None = None) -> ds.Dataset:
    """An Arrow dataset over a table version, for DuckDB's replacement scans."""
    return _load(uri, version).to_pyarrow_dataset()


def query(sql: str, tables: Mapping[str, tuple[str, int | None]]) -> pl.DataFrame:
    """Run DuckDB SQL over lake tables registered under the given view names.

    Args:
        sql: The query; it refers to tables by the keys of `tables`.
        tables: View name -> (table uri, version or None for newest).
    """
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        for name, (uri, version) in tables.items():
            con.register(name, arrow_dataset(uri, version))
        return con.sql(sql).pl()


def frame_hash(frame: pl.DataFrame) -> str:
    """A content hash of a frame (schema and values, in row order): 'sha256:<hex>'."""
    sink = io.BytesIO()
    table = frame.to_arrow()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return "sha256:" + hashlib.sha256(sink.getvalue()).hexdigest()

"""Dataset versions as the metadata store records them, and exact reads of them.

The store is the source of truth: a Delta version that no committed dataset version names does
not exist for loopline (an ingest that crashed after its lake write left it, and the next ingest
rolls it back). Readers therefore always go through a `DatasetVersion` and read exactly its
`table_version`, never "the newest Delta version".
"""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable
from sqlalchemy import select
from sqlalchemy.orm import Session

from loopline.store import Store
from loopline.store.tables import DataBatch, DatasetVersion


def latest_version(session: Session, dataset: str) -> DatasetVersion | None:
    """The newest recorded version of a dataset."""
    return session.scalar(
        select(DatasetVersion)
        .where(DatasetVersion.dataset == dataset)
        .order_by(DatasetVersion.table_version.desc())
        .limit(1)
    )


def get_version(session: Session, dataset: str, table_version: int) -> DatasetVersion | None:
    """The recorded version of a dataset at a given table version, if recorded."""
    return session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset == dataset, DatasetVersion.table_version == table_version
        )
    )


def history(session: Session, dataset: str) -> list[DatasetVersion]:
    """Every recorded version of a dataset, oldest first."""
    return list(
        session.scalars(
            select(DatasetVersion)
            .where(DatasetVersion.dataset == dataset)
            .order_by(DatasetVersion.table_version)
        )
    )


def seen_files(session: Session, dataset: str) -> dict[str, int | None]:
    """sha256 -> size in bytes (None if not recorded) of every source already ingested.

    Committed batches (including those whose rows were all quarantined) and, for stores
    written before batches were recorded, the dataset versions' sources.
    """
    batches = session.scalars(
        select(DataBatch.sources).where(
            DataBatch.dataset == dataset, DataBatch.status == "committed"
        )
    )
    versions = session.scalars(
        select(DatasetVersion.sources).where(DatasetVersion.dataset == dataset)
    )
    seen: dict[str, int | None] = {}
    for sources in [*versions, *batches]:
        for entry in sources.get("files", []):
            if entry.get("sha256"):
                seen[entry["sha256"]] = entry.get("bytes")
    return seen


def seen_hashes(session: Session, dataset: str) -> set[str]:
    """Content hashes of every source file already ingested into `dataset`."""
    return set(seen_files(session, dataset))


def committed_contract_version(session: Session, dataset: str) -> int | None:
    """The contract version the newest committed batch of a dataset was written with."""
    return session.scalar(
        select(DataBatch.contract_version)
        .where(DataBatch.dataset == dataset, DataBatch.status == "committed")
        .order_by(DataBatch.created_at.desc())
        .limit(1)
    )


def read_columns(uri: str, version: int, columns: list[str] | None = None) -> pl.DataFrame:
    """Some columns (all if None) of one exact Delta version."""
    table = DeltaTable(uri, version=version)
    return pl.from_arrow(table.to_pyarrow_table(columns=columns))  # type: ignore[return-value]


def read_version(
    store: Store, dataset: str, *, table_version: int | None = None
) -> tuple[DatasetVersion, pl.DataFrame]:
    """A recorded dataset version (the newest by default) and its exact content.

    Raises:
        LookupError: the dataset has no such recorded version.
    """
    with store.reader() as session:
        row = (
            latest_version(session, dataset)
            if table_version is None
            else get_version(session, dataset, table_version)
        )
    if row is None:
        which = "any version" if table_version is None else f"version {table_version}"
        raise LookupError(f"dataset '{dataset}' has no recorded {which}")
    return row, read_columns(row.uri, row.table_version)

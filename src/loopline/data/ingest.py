"""Ingest: raw files -> contract check -> a new version of a curated Delta table.

A batch is the set of files not ingested before (recognised by content hash, not name), so
re-running on the same input is a no-op. A batch with any violation writes nothing and reports
every failure. An accepted batch is appended as one table version and recorded as a dataset
version with its hash, row counts, schema, sources and parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from loopline.data.contracts import (
    READERS,
    ContractError,
    Violation,
    check_batch,
    read_batch,
)
from loopline.lake import tables
from loopline.lake.artifacts import file_sha256
from loopline.spec import TableSpec
from loopline.store import Store
from loopline.store.tables import DatasetVersion


@dataclass
class IngestResult:
    """What one ingest did to one table."""

    dataset: str
    files_new: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    rows: int = 0
    dataset_version_id: str | None = None
    table_version: int | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-able summary."""
        return {
            "dataset": self.dataset,
            "files_new": len(self.files_new),
            "files_skipped": len(self.files_skipped),
            "rows": self.rows,
            "dataset_version_id": self.dataset_version_id,
            "table_version": self.table_version,
        }


def discover(folder: Path) -> list[Path]:
    """Raw files of a supported type directly in `folder`, in name order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READERS)


def seen_hashes(session: Session, dataset: str) -> set[str]:
    """Content hashes of every source file already ingested into `dataset`."""
    rows = session.scalars(select(DatasetVersion.sources).where(DatasetVersion.dataset == dataset))
    return {f["sha256"] for sources in rows for f in sources.get("files", [])}


def latest_version(session: Session, dataset: str) -> DatasetVersion | None:
    """The newest recorded version of a dataset."""
    return session.scalar(
        select(DatasetVersion)
        .where(DatasetVersion.dataset == dataset)
        .order_by(DatasetVersion.table_version.desc())
        .limit(1)
    )


def _duplicate_ids(uri: str, batch: pl.DataFrame, id_column: str) -> list[Violation]:
    if not tables.exists(uri):
        return []
    existing = tables.read(uri).select(id_column)
    clash = batch.with_row_index("_row").join(existing, on=id_column, how="semi")
    return [
        Violation(id_column, "not already ingested", str(value), row)
        for row, value in clash.select("_row", id_column).head(20).iter_rows()
    ]


def ingest_files(
    store: Store,
    *,
    lake_dir: Path,
    table: TableSpec,
    use_case: str,
    paths: list[Path],
    run_id: str | None,
) -> IngestResult:
    """Validate the new files among `paths` and append them as one new table version.

    Raises:
        ContractError: any file breaks the contract; nothing is written.
        FileNotFoundError: a path does not exist.
    """
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    result = IngestResult(dataset=table.table)
    with store.reader() as session:
        seen = seen_hashes(session, table.table)
    new: list[tuple[Path, str]] = []
    for path in paths:
        digest = file_sha256(path)
        if digest in seen or digest in {d for _, d in new}:
            result.files_skipped.append(path.name)
        else:
            new.append((path, digest))
    if not new:
        return result

    frames, violations, files = [], [], []
    for path, digest in new:
        try:
            frame = read_batch(path, table)
        except ContractError as exc:
            violations += exc.violations
            continue
        frames.append(frame)
        files.append({"name": path.name, "sha256": digest, "rows": frame.height})
    batch = pl.concat(frames) if frames else pl.DataFrame()
    if frames:
        violations += check_batch(batch, table, source="batch")
    uri = tables.table_uri(lake_dir, table.table)
    if table.id and frames and not violations:
        violations += _duplicate_ids(uri, batch, table.id)
    if violations:
        raise ContractError(table.table, violations)
    if batch.is_empty():
        result.files_skipped += [p.name for p, _ in new]
        return result

    batch = batch.sort(table.timestamp)
    content_hash = tables.frame_hash(batch)
    version = tables.append(uri, batch, metadata={"run_id": run_id or "", "hash": content_hash})
    with store.session() as session:
        parent = latest_version(session, table.table)
        row = DatasetVersion(
            dataset=table.table,
            use_case=use_case,
            table_version=version,
            uri=uri,
            content_hash=content_hash,
            row_count=(parent.row_count if parent else 0) + batch.height,
            rows_in=batch.height,
            rows_accepted=batch.height,
            rows_quarantined=0,
            schema_={name: str(dtype) for name, dtype in batch.schema.items()},
            sources={"files": files},
            parent_id=parent.id if parent else None,
            run_id=run_id,
        )
        session.add(row)
    result.files_new = [p.name for p, _ in new]
    result.rows = batch.height
    result.dataset_version_id = row.id
    result.table_version = version
    return result

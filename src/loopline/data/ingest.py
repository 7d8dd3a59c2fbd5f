"""Ingest: raw sources -> contract -> a new version of a curated Delta table (+ quarantine).

A batch is the set of sources not ingested before (recognised by content hash, not by name), so
re-running on the same input is a no-op. Then:

1. Every source is read and typed (`sources.read_file`); the batch is checked against the
   contract with pandera (`contracts.validate`), references to other tables resolved against
   their recorded versions.
2. A broken hard rule rejects the batch: nothing is written to the lake, the batch is recorded
   as `rejected` with its report, and `ContractError` names every broken rule with examples.
3. Otherwise rows failing soft rules go to the table's quarantine Delta table with the rule and
   value per row; the rest is appended as one new version of the curated table.

Crash safety: the store is the commit point. The batch is recorded as `pending` (with its
source hashes) before the lake is touched, and becomes `committed` in the same transaction that
records its dataset version. Readers read only recorded versions. The next ingest of the table
(under a per-table lock) rolls back lake versions that no committed batch names and marks the
pending batch `rolled_back`; its files are then new again, so the rerun ingests them.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from deltalake import DeltaTable
from filelock import FileLock, Timeout
from sqlalchemy import select, text

from loopline.data.contracts import (
    ROW,
    SOURCE,
    CheckContext,
    ContractError,
    RuleResult,
    Violation,
    attach_references,
    polars_schema,
    referenced_columns,
    validate,
)
from loopline.data.sources import (
    FileRead,
    discover,
    frame_sha256,
    read_file,
    read_query,
    resolve,
)
from loopline.data.versions import (
    committed_contract_version,
    latest_version,
    read_columns,
    seen_files,
    seen_hashes,
)
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.spec import SourceFormat, TableSpec
from loopline.store import Store
from loopline.store.tables import (
    Artifact,
    DataBatch,
    DatasetVersion,
    RunArtifact,
    new_id,
    utcnow,
)

__all__ = [
    "IngestError",
    "IngestResult",
    "discover",
    "ingest_files",
    "latest_version",
    "quarantine_uri",
    "reconcile",
    "seen_hashes",
]

Progress = Callable[[str, int, int], None]
"""Progress callback: (phase, done, total)."""
PROFILE_ROWS = 50_000
"""Rows profiled with whylogs per batch (a seeded uniform sample above this)."""
REPORT_MEDIA_TYPE = "application/vnd.loopline.batch-report+json"
LOCK_TIMEOUT_S = 600.0


class IngestError(RuntimeError):
    """The ingest could not run (for example another ingest of the table holds its lock)."""


@dataclass
class IngestResult:
    """What one ingest did to one table."""

    dataset: str
    status: str = "noop"
    batch_id: str | None = None
    files_new: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows: int = 0
    rows_quarantined: int = 0
    rows_rejected: int = 0
    dataset_version_id: str | None = None
    table_version: int | None = None
    quarantine_version: int | None = None
    schema_changes: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    report_id: str | None = None
    profile_id: str | None = None
    repaired: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-able summary."""
        return {
            "dataset": self.dataset,
            "status": self.status,
            "batch_id": self.batch_id,
            "files_new": len(self.files_new),
            "files_skipped": len(self.files_skipped),
            "rows_in": self.rows_in,
            "rows": self.rows,
            "rows_accepted": self.rows,
            "rows_quarantined": self.rows_quarantined,
            "rows_rejected": self.rows_rejected,
            "dataset_version_id": self.dataset_version_id,
            "table_version": self.table_version,
            "quarantine_version": self.quarantine_version,
            "schema_changes": self.schema_changes,
            "warnings": self.warnings,
            "report_id": self.report_id,
            "repaired": self.repaired,
        }


def quarantine_uri(lake_dir: Path, table: TableSpec) -> str:
    """Where a table's quarantined rows go (one Delta table per contract version)."""
    return tables.table_uri(lake_dir / "quarantine", f"{table.table}_v{table.contract.version}")


# --- locking and repair -----------------------------------------------------------------------


@contextmanager
def table_lock(store: Store, lock_dir: Path, dataset: str) -> Iterator[None]:
    """One ingest of a table at a time, across processes.

    A PostgreSQL advisory lock when the store is PostgreSQL (works across machines), else a
    lock file. Both are released by the operating system when the holder dies, so whoever
    holds the lock knows that any pending batch it finds was left by a crash.

    Raises:
        IngestError: another ingest held the lock for `LOCK_TIMEOUT_S`.
    """
    if store.engine.dialect.name == "postgresql":
        key = zlib.crc32(f"loopline:ingest:{dataset}".encode()) - (1 << 31)
        with store.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_dir / f"ingest-{dataset}.lock"), timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout as exc:
        raise IngestError(
            f"another ingest of '{dataset}' is running (lock {exc.lock_file})"
        ) from exc


def _rollback_table(uri: str, recorded: int | None) -> str | None:
    """Undo Delta versions newer than `recorded` (all of them if None); what was done."""
    if not tables.exists(uri):
        return None
    table = DeltaTable(uri)
    current = table.version()
    if recorded is not None and current <= recorded:
        return None
    if recorded is None:
        if not table.file_uris():
            return None
        table.delete()
        return f"{uri}: unrecorded version(s) up to {current} emptied"
    table.restore(recorded)
    return f"{uri}: unrecorded version(s) {recorded + 1}..{current} rolled back to {recorded}"


def reconcile(store: Store, *, lake_dir: Path, table: TableSpec) -> list[str]:
    """Bring a table's lake state back to what the store recorded (call under `table_lock`).

    Lake versions that no committed batch names (left by an ingest that died between its lake
    write and its commit) are rolled back, and pending batches are marked `rolled_back`.

    Returns:
        What was repaired, one line each (empty when nothing was).
    """
    dataset = table.table
    with store.reader() as session:
        pending = list(
            session.scalars(
                select(DataBatch).where(DataBatch.dataset == dataset, DataBatch.status == "pending")
            )
        )
        latest = latest_version(session, dataset)
        committed = list(
            session.execute(
                select(DataBatch.sources, DataBatch.quarantine_version).where(
                    DataBatch.dataset == dataset, DataBatch.status == "committed"
                )
            )
        )
    recorded_quarantine: dict[str, int] = {}
    for sources, version in committed:
        uri = sources.get("quarantine_uri")
        if uri and version is not None:
            recorded_quarantine[uri] = max(version, recorded_quarantine.get(uri, -1))
    quarantine_uris = {quarantine_uri(lake_dir, table)} | {
        b.sources.get("quarantine_uri") for b in pending if b.sources.get("quarantine_uri")
    }
    actions = []
    done = _rollback_table(
        tables.table_uri(lake_dir, dataset), latest.table_version if latest else None
    )
    actions += [done] if done else []
    for uri in sorted(u for u in quarantine_uris if u):
        done = _rollback_table(uri, recorded_quarantine.get(uri))
        actions += [done] if done else []
    if pending:
        with store.session() as session:
            for batch in pending:
                row = session.get_one(DataBatch, batch.id)
                row.status = "rolled_back"
                row.finished_at = utcnow()
                row.message = "interrupted before its commit; lake writes undone: " + (
                    "; ".join(actions) or "none were made"
                )
        actions.append(f"batch(es) {', '.join(b.id for b in pending)} marked rolled_back")
    return actions


# --- building blocks --------------------------------------------------------------------------


def _references(
    store: Store, table: TableSpec
) -> tuple[dict[str, pl.DataFrame], list[RuleResult], dict[str, int]]:
    """Rows of every referenced table (at its recorded version) the contract needs."""
    targets, problems, versions = {}, [], {}
    for name, columns in referenced_columns(table).items():
        with store.reader() as session:
            row = latest_version(session, name)
        if row is None:
            ref = next(r for r in table.contract.references if r.table == name)
            rule = f"references {name}.{ref.target_key}"
            value = f"table '{name}' has no version yet: ingest it first"
            problems.append(
                RuleResult(ref.column, rule, "hard", 1, [Violation(ref.column, rule, value, None)])
            )
            continue
        targets[name] = read_columns(row.uri, row.table_version, columns)
        versions[name] = row.table_version
    return targets, problems, versions


def _existing_ids(store: Store, table: TableSpec) -> pl.Series | None:
    if table.id is None:
        return None
    with store.reader() as session:
        row = latest_version(session, table.table)
    if row is None:
        return None
    return read_columns(row.uri, row.table_version, [table.id]).get_column(table.id)


def _quarantine_frame(
    batch: pl.DataFrame,
    soft_rows: pl.DataFrame,
    table: TableSpec,
    batch_id: str,
    sources: list[str],
) -> pl.DataFrame:
    """Failing rows in their declared columns, with every broken rule and value per row."""
    reasons = (
        soft_rows.group_by("index")
        .agg(pl.struct("column", "rule", "value").alias("_violations"))
        .sort("index")
    )
    picked = batch.select(*table.columns, SOURCE, ROW)[reasons.get_column("index")].hstack(
        [reasons.get_column("_violations")]
    )
    names = {i: name for i, name in enumerate(sources)}
    return picked.select(
        *[pl.col(c) for c in table.columns],
        pl.lit(batch_id).alias("_batch_id"),
        pl.col(SOURCE).replace_strict(names, return_dtype=pl.Utf8).alias("_source"),
        pl.col(ROW).alias("_row"),
        pl.col("_violations"),
        pl.col("_violations")
        .list.eval(
            pl.format(
                "{}: {} ({})",
                pl.element().struct.field("column"),
                pl.element().struct.field("rule"),
                pl.element().struct.field("value").fill_null("null"),
            )
        )
        .list.join("; ")
        .alias("_reason"),
        pl.lit(utcnow()).dt.cast_time_unit("us").alias("_ingested_at"),
    )


def _column_stats(frame: pl.DataFrame) -> dict[str, dict[str, object]]:
    """Exact per-column statistics of the accepted rows (one Polars pass)."""
    if frame.is_empty():
        return {}
    exprs = []
    for name, dtype in frame.schema.items():
        exprs.append(pl.col(name).null_count().alias(f"{name}\x00nulls"))
        if dtype.is_numeric() or dtype.is_temporal():
            exprs += [
                pl.col(name).min().alias(f"{name}\x00min"),
                pl.col(name).max().alias(f"{name}\x00max"),
            ]
        if dtype.is_numeric():
            exprs.append(pl.col(name).mean().alias(f"{name}\x00mean"))
    row = frame.select(exprs).row(0, named=True)
    stats: dict[str, dict[str, object]] = {}
    for key, value in row.items():
        name, stat = key.split("\x00")
        stats.setdefault(name, {})[stat] = (
            value if isinstance(value, int | float) or value is None else str(value)
        )
    return stats


def _import_profiles() -> None:
    import loopline.monitoring.profiles  # noqa: F401


def _profile(frame: pl.DataFrame, key: str | None = None, seed: int = 0) -> tuple[bytes, int]:
    """A whylogs profile of the accepted rows (of a seeded sample above `PROFILE_ROWS`)."""
    from loopline.monitoring.profiles import profile_frame, serialize

    sample = frame.sample(PROFILE_ROWS, seed=seed) if frame.height > PROFILE_ROWS else frame
    if key is not None:  # a key's profile says nothing (every value distinct) and costs most
        sample = sample.drop(key)
    # whylogs 1.6 cannot type datetime columns under numpy 2 (it reaches the removed
    # `np.unicode_`): timestamps are profiled as epoch microseconds.
    sample = sample.with_columns(pl.col(pl.Datetime).dt.epoch("us"))
    return serialize(profile_frame(sample)), sample.height


@dataclass
class _Plan:
    """How the accepted rows reach the curated table."""

    mode: str  # "append" or "migrate"
    added: list[str]
    dropped: list[str]
    changed: dict[str, tuple[str, str]]
    problems: list[RuleResult]

    @property
    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.added:
            out["added"] = self.added
        if self.dropped:
            out["dropped"] = self.dropped
        if self.changed:
            out["changed"] = {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()}
        if self.mode == "migrate":
            out["migrated"] = True
        return out


def _plan(store: Store, table: TableSpec) -> _Plan:
    """Compare the contract's columns with the recorded table: additive, breaking, migration."""
    with store.reader() as session:
        latest = latest_version(session, table.table)
        stored_contract = committed_contract_version(session, table.table)
    if latest is None:
        return _Plan("append", [], [], {}, [])
    current = dict(read_columns(latest.uri, latest.table_version).head(0).schema)
    wanted = polars_schema(table)
    added = [c for c in wanted if c not in current]
    dropped = [c for c in current if c not in wanted]
    changed = {
        c: (str(current[c]), str(wanted[c]))
        for c in wanted
        if c in current and current[c] != wanted[c]
    }
    stored_contract = stored_contract or 1
    version = table.contract.version
    problems: list[RuleResult] = []
    if version < stored_contract:
        rule = f"contract version >= {stored_contract}"
        problems.append(
            RuleResult(
                "(contract)", rule, "hard", 1, [Violation("(contract)", rule, str(version), None)]
            )
        )
    if not (dropped or changed):
        return _Plan("append", added, [], {}, problems)
    if version > stored_contract:
        return _Plan("migrate", added, dropped, changed, problems)
    rule = (
        f"no breaking schema change without a new contract version (table is at {stored_contract})"
    )
    for name in dropped:
        problems.append(
            RuleResult(
                name,
                rule,
                "hard",
                1,
                [Violation(name, rule, f"column dropped (was {current[name]})", None)],
            )
        )
    for name, (old, new) in changed.items():
        problems.append(
            RuleResult(
                name,
                rule,
                "hard",
                1,
                [Violation(name, rule, f"type changes from {old} to {new}", None)],
            )
        )
    return _Plan("append", added, dropped, changed, problems)


def _migrated(store: Store, table: TableSpec) -> tuple[pl.DataFrame, list[RuleResult]]:
    """The recorded table in the new contract's columns and types (for a contract bump)."""
    with store.reader() as session:
        latest = latest_version(session, table.table)
    assert latest is not None
    old = read_columns(latest.uri, latest.table_version)
    wanted = polars_schema(table)
    problems = []
    for name, dtype in wanted.items():
        if name not in old.columns:
            continue
        cast = old.get_column(name).cast(dtype, strict=False)
        lost = old.get_column(name).is_not_null() & cast.is_null()
        if lost.any():
            value = str(old.get_column(name).filter(lost)[0])
            rule = f"stored rows convert to {dtype}"
            example = Violation(name, rule, value, None)
            problems.append(RuleResult(name, rule, "hard", int(lost.sum()), [example]))
    migrated = old.select(
        [
            pl.col(name).cast(dtype, strict=False)
            if name in old.columns
            else pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in wanted.items()
        ]
    )
    return migrated, problems


# --- the batch --------------------------------------------------------------------------------


def _report(
    *,
    batch_id: str,
    table: TableSpec,
    status: str,
    reads: Sequence[FileRead],
    results: Sequence[RuleResult],
    counts: dict[str, int],
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The batch report: sources, counts, every rule's result with examples, notes."""
    return {
        "batch_id": batch_id,
        "dataset": table.table,
        "status": status,
        "ingested_at": now.isoformat(),
        "contract_version": table.contract.version,
        "sources": [fr.as_dict() for fr in reads],
        "rows": counts,
        "rules": [r.as_dict() for r in results],
        "notes": [note for fr in reads for note in fr.notes],
        **(extra or {}),
    }


def _reject(
    store: Store,
    artifacts: ArtifactStore | None,
    *,
    table: TableSpec,
    use_case: str,
    run_id: str | None,
    reads: Sequence[FileRead],
    results: list[RuleResult],
    first: Sequence[Violation] = (),
    rows_in: int,
    now: datetime,
) -> ContractError:
    """Record a rejected batch (report and summary; nothing in the lake) and build its error."""
    ordered = sorted(results, key=lambda r: r.severity != "hard")
    examples = [*first, *(v for r in ordered for v in r.examples if v not in first)]
    error = ContractError(table.table, examples, results=ordered)
    batch_id = new_id()
    counts = {"in": rows_in, "accepted": 0, "quarantined": 0, "rejected": rows_in}
    report = _report(
        batch_id=batch_id,
        table=table,
        status="rejected",
        reads=reads,
        results=ordered,
        counts=counts,
        now=now,
        extra={"message": str(error)},
    )
    data = json.dumps(report, default=str, indent=1).encode()
    report_id = artifacts.put_bytes(data) if artifacts else None
    with store.session() as session:
        if report_id:
            _register(session, report_id, len(data), REPORT_MEDIA_TYPE)
        session.add(
            DataBatch(
                id=batch_id,
                dataset=table.table,
                use_case=use_case,
                status="rejected",
                run_id=run_id,
                contract_version=table.contract.version,
                sources={"files": [fr.as_dict() for fr in reads]},
                rows_in=rows_in,
                rules={"results": [r.as_dict() for r in ordered]},
                message=str(error),
                report_id=report_id,
                finished_at=utcnow(),
            )
        )
        if run_id and report_id:
            session.merge(
                RunArtifact(
                    run_id=run_id, name=f"ingest/{table.table}/report", artifact_id=report_id
                )
            )
    error.report = report
    return error


def _register(session: Any, artifact_id: str, size: int, media_type: str) -> None:
    if session.get(Artifact, artifact_id) is None:
        session.add(Artifact(id=artifact_id, size_bytes=size, media_type=media_type))
        session.flush()


def _read_all(
    files: Sequence[Path],
    queries: Sequence[str],
    table: TableSpec,
    fmt: SourceFormat | None,
    seen: dict[str, int | None],
    result: IngestResult,
    report: Progress,
) -> list[FileRead]:
    """Read the sources not ingested before (same content under any name is skipped)."""
    from loopline.lake.artifacts import file_sha256

    sizes = set(seen.values())
    reads: list[FileRead] = []
    taken: set[str] = set()
    total = len(files) + len(queries)
    for done, path in enumerate(files):
        report("read", done, total)
        digest = None
        if seen and (path.stat().st_size in sizes or None in sizes):
            digest = file_sha256(path)
            if digest in seen or digest in taken:
                result.files_skipped.append(path.name)
                continue
        read = read_file(path, table, fmt)
        if digest is not None and read.sha256 != digest and not read.problems:
            value = "content hash changed between hashing and parsing"
            rule = "unchanged while being read"
            read.problems.append(
                RuleResult(
                    "(file)", rule, "hard", 1, [Violation("(file)", rule, value, None, read.name)]
                )
            )
        if read.sha256 in seen or read.sha256 in taken:
            result.files_skipped.append(path.name)
            continue
        taken.add(read.sha256)
        reads.append(read)
    for offset, sql in enumerate(queries):
        report("read", len(files) + offset, total)
        read = read_query(sql, table)
        if read.sha256 and (read.sha256 in seen or read.sha256 in taken):
            result.files_skipped.append(read.name)
            continue
        taken.add(read.sha256)
        reads.append(read)
    report("read", total, total)
    return reads


def ingest_files(
    store: Store,
    *,
    lake_dir: Path,
    table: TableSpec,
    use_case: str,
    paths: Sequence[Path | str],
    run_id: str | None,
    queries: Sequence[str] = (),
    artifacts: ArtifactStore | None = None,
    fmt: SourceFormat | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    lock_dir: Path | None = None,
) -> IngestResult:
    """Validate the new sources among `paths` and `queries` and append them as one version.

    Args:
        store: The metadata store.
        lake_dir: Root of the Delta tables.
        table: The table's spec (its contract).
        use_case: Use case name (recorded).
        paths: Files, folders or globs.
        run_id: The run this ingest belongs to (recorded), if any.
        queries: DuckDB SQL queries, each one more source.
        artifacts: Where batch reports and profiles go (not stored when None).
        fmt: CSV dialect and encoding overriding the table's `source` block.
        progress: Called with (phase, done, total) as the ingest advances.
        now: Ingest time for timestamp and freshness rules (default: the clock).
        lock_dir: Folder of the per-table lock files (default: `<lake_dir>/../locks`).

    Raises:
        ContractError: a hard rule is broken; nothing was written to the lake, the batch is
            recorded as rejected with its report.
        SourceError: a path does not exist, is a link loop, or a folder or glob is empty.
        IngestError: another ingest of the table holds its lock.
    """
    files = resolve(paths) if paths else []
    if artifacts is not None:  # whylogs takes seconds to import: overlap it with the reading
        threading.Thread(target=_import_profiles, daemon=True).start()
    report = progress or (lambda phase, done, total: None)
    now = now or datetime.now(UTC)
    result = IngestResult(dataset=table.table)
    with table_lock(store, lock_dir or lake_dir.parent / "locks", table.table):
        result.repaired = reconcile(store, lake_dir=lake_dir, table=table)
        with store.reader() as session:
            seen = seen_files(session, table.table)
        reads = _read_all(files, queries, table, fmt, seen, result, report)
        if not reads:
            return result
        result.files_new = [fr.name for fr in reads]
        _ingest_batch(
            store,
            artifacts,
            lake_dir=lake_dir,
            table=table,
            use_case=use_case,
            run_id=run_id,
            reads=reads,
            now=now,
            result=result,
            report=report,
        )
    return result


def _ingest_batch(
    store: Store,
    artifacts: ArtifactStore | None,
    *,
    lake_dir: Path,
    table: TableSpec,
    use_case: str,
    run_id: str | None,
    reads: list[FileRead],
    now: datetime,
    result: IngestResult,
    report: Progress,
) -> None:
    rows_in = sum(fr.frame.height for fr in reads if not fr.problems)
    common = {"table": table, "use_case": use_case, "run_id": run_id, "reads": reads, "now": now}
    problems = [p for fr in reads for p in fr.problems]
    if problems:
        result.status, result.rows_rejected = "rejected", rows_in
        raise _reject(store, artifacts, results=problems, rows_in=rows_in, **common)
    names = [fr.name for fr in reads]
    batch = pl.concat(
        [
            fr.frame.with_columns(
                pl.lit(i, dtype=pl.UInt32).alias(SOURCE),
                pl.int_range(1, fr.frame.height + 1, dtype=pl.Int64).alias(ROW),
            )
            for i, fr in enumerate(reads)
        ]
    )
    result.rows_in = batch.height
    if batch.is_empty():
        result.status = "empty"
        return
    report("validate", 0, 1)
    targets, ref_problems, ref_versions = _references(store, table)
    if ref_problems:
        result.status, result.rows_rejected = "rejected", rows_in
        raise _reject(store, artifacts, results=ref_problems, rows_in=rows_in, **common)
    batch = attach_references(batch, table, targets)
    context = CheckContext(now=now, existing_ids=_existing_ids(store, table))
    validation, results = validate(batch, table, context=context, sources=names)
    plan = _plan(store, table)
    migrated = None
    if plan.mode == "migrate" and not plan.problems:
        migrated, migration_problems = _migrated(store, table)
        plan.problems += migration_problems
    results = [*plan.problems, *results]
    quarantined = validation.quarantined
    first: list[Violation] = []
    limit = table.contract.max_quarantine_fraction
    if quarantined and quarantined > limit * batch.height:
        rule = f"quarantined share <= {limit:g}"
        value = f"{quarantined} of {batch.height} rows fail soft rules"
        first.append(Violation("(batch)", rule, value, None))
        results.insert(0, RuleResult("(batch)", rule, "hard", 1, list(first)))
    hard_first = [*first, *validation.hard, *(v for p in plan.problems for v in p.examples)]
    if hard_first:
        result.status, result.rows_rejected = "rejected", rows_in
        raise _reject(
            store, artifacts, results=results, first=hard_first, rows_in=rows_in, **common
        )
    report("validate", 1, 1)

    columns = list(table.columns)
    batch_id = new_id()
    quarantine = None
    if quarantined:
        keep = np.ones(batch.height, dtype=bool)
        keep[validation.soft_rows.get_column("index").to_numpy()] = False
        quarantine = _quarantine_frame(batch, validation.soft_rows, table, batch_id, names)
        accepted = batch.select(columns).filter(pl.Series(keep))
    else:
        accepted = batch.select(columns)
    if not accepted.get_column(table.timestamp).is_sorted():
        accepted = accepted.sort(table.timestamp, maintain_order=True)
    uri = tables.table_uri(lake_dir, table.table)
    q_uri = quarantine_uri(lake_dir, table)
    with store.reader() as session:
        parent = latest_version(session, table.table)
    files = [fr.as_dict() for fr in reads]
    summary = {"results": [r.as_dict() for r in results]}
    with store.session() as session:
        session.add(
            DataBatch(
                id=batch_id,
                dataset=table.table,
                use_case=use_case,
                status="pending",
                run_id=run_id,
                contract_version=table.contract.version,
                sources={"files": files, "quarantine_uri": q_uri, "references": ref_versions},
                rows_in=batch.height,
                rows_accepted=accepted.height,
                rows_quarantined=quarantined,
                rules=summary,
                base_version=parent.table_version if parent else None,
                schema_changes=plan.changes,
            )
        )

    report("write", 0, 1)
    metadata = {
        "loopline.batch_id": batch_id,
        "loopline.contract_version": str(table.contract.version),
        "run_id": run_id or "",
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        content = pool.submit(frame_sha256, accepted)
        profile = pool.submit(_profile, accepted, table.id) if artifacts else None
        version: int | None
        if migrated is not None:
            version = tables.overwrite(uri, pl.concat([migrated, accepted]), metadata=metadata)
            row_count = migrated.height + accepted.height
        elif accepted.height:
            version = tables.append(uri, accepted, metadata=metadata)
            row_count = (parent.row_count if parent else 0) + accepted.height
        else:  # every row quarantined: no new version of the curated table
            version, row_count = None, parent.row_count if parent else 0
        q_version = (
            tables.append(q_uri, quarantine, metadata=metadata) if quarantine is not None else None
        )
        content_hash = "sha256:" + content.result()
        profile_bytes, profiled = profile.result() if profile else (b"", 0)
    report("write", 1, 1)

    report("commit", 0, 1)
    counts = {
        "in": batch.height,
        "accepted": accepted.height,
        "quarantined": quarantined,
        "rejected": 0,
    }
    document = _report(
        batch_id=batch_id,
        table=table,
        status="committed",
        reads=reads,
        results=results,
        counts=counts,
        now=now,
        extra={
            "table_version": version,
            "quarantine_version": q_version,
            "quarantine_uri": q_uri,
            "content_hash": content_hash,
            "schema_changes": plan.changes,
            "columns": _column_stats(accepted),
            "profiled_rows": profiled,
            "warnings": [v.as_dict() for v in validation.warnings],
            "references": ref_versions,
        },
    )
    report_bytes = json.dumps(document, default=str, indent=1).encode()
    report_id = artifacts.put_bytes(report_bytes) if artifacts else None
    profile_id = artifacts.put_bytes(profile_bytes) if artifacts and profile_bytes else None
    with store.session() as session:
        if report_id:
            _register(session, report_id, len(report_bytes), REPORT_MEDIA_TYPE)
        if profile_id:
            _register(session, profile_id, len(profile_bytes), "application/x-whylogs")
        row = None
        if version is not None:
            row = DatasetVersion(
                dataset=table.table,
                use_case=use_case,
                table_version=version,
                uri=uri,
                content_hash=content_hash,
                row_count=row_count,
                rows_in=batch.height,
                rows_accepted=accepted.height,
                rows_quarantined=quarantined,
                schema_={name: str(dtype) for name, dtype in accepted.schema.items()},
                sources={
                    "files": files,
                    "batch_id": batch_id,
                    "quarantine_uri": q_uri,
                    "quarantine_version": q_version,
                    "schema_changes": plan.changes,
                    "references": ref_versions,
                    "contract_version": table.contract.version,
                },
                parent_id=parent.id if parent else None,
                run_id=run_id,
            )
            session.add(row)
            session.flush()
        batch_row = session.get_one(DataBatch, batch_id)
        batch_row.status = "committed"
        batch_row.table_version = version
        batch_row.quarantine_version = q_version
        batch_row.dataset_version_id = row.id if row else None
        batch_row.report_id = report_id
        batch_row.profile_id = profile_id
        batch_row.finished_at = utcnow()
        if run_id:
            for name, artifact_id in (("report", report_id), ("profile", profile_id)):
                if artifact_id:
                    session.merge(
                        RunArtifact(
                            run_id=run_id,
                            name=f"ingest/{table.table}/{name}",
                            artifact_id=artifact_id,
                        )
                    )
    report("commit", 1, 1)
    result.status = "committed"
    result.batch_id = batch_id
    result.rows = accepted.height
    result.rows_quarantined = quarantined
    result.dataset_version_id = row.id if row else None
    result.table_version = version
    result.quarantine_version = q_version
    result.schema_changes = plan.changes
    result.warnings = [str(v) for v in validation.warnings] + [n for fr in reads for n in fr.notes]
    result.report_id = report_id
    result.profile_id = profile_id

"""Prediction log: every prediction in a versioned Delta table, through a write-ahead spool.

Layout: the log folder is a Delta table of the lake (`settings.prediction_log_dir`), partitioned
by `day` (the UTC date of `ts`), with its spool in `<folder>/_spool` (folders starting with `_`
are ignored by Delta readers and by vacuum; `spool_dir=` puts it elsewhere, e.g. on local disk
when the lake is on object storage).

Write path. `PredictionLog.append(record)` validates and encodes the record (`encode_record`)
and writes it as one line of the writer's current spool segment with a single `os.write` on a
file opened for appending, then returns: the line is in the operating system's page cache, so a
SIGKILL of the server loses nothing it acknowledged (`fsync=True` also survives a power loss,
at the price of a disk flush per record). A background thread commits spooled lines to the
table in batches, every `flush_interval_s` or as soon as `batch_rows` are waiting. Each batch is
one table version whose commit metadata names the segment and byte range it covers, and which
records, atomically with the data, a Delta application transaction (`txn`: app id
`loopline.prediction_log.<writer>`, version = segment sequence << 40 | end offset). A segment
is deleted once all of its lines are committed.

Replay. Every writer holds an exclusive `flock` on its segments, which the kernel drops when
the process dies. Opening a `PredictionLog` adopts the segments no live writer holds, reads from
the table's transaction state how far each was committed, and commits the rest before
returning (if the table cannot be written then, the background thread keeps retrying). So a
crash between a commit and the deletion of its segment never writes a record twice, and a
SIGKILL never loses one. A torn last line (a machine crash mid-write) is skipped with a
warning; the lines before it are committed.

Backpressure. At most `max_spool_bytes` of uncommitted lines are spooled. When the table cannot
keep up or cannot be written (disk full, object store gone), `append` raises
`PredictionLogFull`: the caller must not acknowledge the request (the API answers 503). A
failed commit is counted in `stats()` and retried with backoff; no record is ever dropped.

Read path. `read_prediction_log` and `lookup_prediction` read the table and, unless told not
to, the lines still waiting in the spool (those the table's transaction state does not cover),
so a prediction is visible as soon as `append` returned.

This module is the writer and the public face of the log; the record schema, its validation
and the spool format are in `prediction_records`, the readers in `prediction_read` (all
re-exported here).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from loopline.lake import tables
from loopline.serving.prediction_read import (
    compact_prediction_log,
    lookup_prediction,
    read_prediction_log,
)
from loopline.serving.prediction_records import (
    BASE_SCHEMA,
    JSON_COLUMNS,
    PARTITION_BY,
    ROLES,
    SPOOL_DIR_NAME,
    TABLE_SCHEMA,
    PredictionLogClosed,
    PredictionLogError,
    PredictionLogFlushError,
    PredictionLogFull,
    PredictionLogUnavailable,
    PredictionRecordError,
    app_id,
    committed_offset,
    decode_line,
    encode_record,
    normalize_record,
    pack_offset,
    rows_to_frame,
    segments_in,
    spool_lines,
)

if TYPE_CHECKING:
    from loopline.settings import Settings

__all__ = [
    "BASE_SCHEMA",
    "JSON_COLUMNS",
    "ROLES",
    "TABLE_SCHEMA",
    "PredictionLog",
    "PredictionLogClosed",
    "PredictionLogError",
    "PredictionLogFlushError",
    "PredictionLogFull",
    "PredictionLogStats",
    "PredictionLogUnavailable",
    "PredictionRecordError",
    "compact_prediction_log",
    "encode_record",
    "lookup_prediction",
    "normalize_record",
    "read_prediction_log",
]

log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass(frozen=True)
class PredictionLogStats:
    """Counters of one `PredictionLog` since it was opened.

    Attributes:
        appended: Records acknowledged by `append`.
        flushed: Records committed to the table (replayed ones included).
        replayed: Records of earlier writers' segments committed by this one.
        pending: Spooled lines not committed yet.
        spool_bytes: Bytes of those lines (bounded by `max_spool_bytes`).
        rejected_full: Appends refused because the spool was full.
        flush_errors: Failed commits (each retried).
        skipped_lines: Torn or unreadable spool lines skipped on replay.
        last_flush_at: When the last commit succeeded (UTC), None before the first.
        last_error: The last commit failure, None if there was none.
    """

    appended: int
    flushed: int
    replayed: int
    pending: int
    spool_bytes: int
    rejected_full: int
    flush_errors: int
    skipped_lines: int
    last_flush_at: datetime | None
    last_error: str | None


@dataclass
class _Segment:
    """One spool file: lines [0, committed) are in the table, [committed, size) are waiting."""

    path: Path
    writer: str
    seq: int
    fd: int
    size: int
    committed: int = 0
    lines: int = 0  # uncommitted lines
    sealed: bool = False  # no more appends
    adopted: bool = False  # left by an earlier writer (its tail may be torn)
    uncertain: bool = False  # a commit failed: check the table before committing again

    @property
    def app_id(self) -> str:
        return app_id(self.writer)

    def release(self, *, delete: bool) -> None:
        """Delete the file if asked (while still locked), then close it and drop the lock."""
        if delete:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class PredictionLog:
    """Thread-safe, lossless, bounded writer of prediction records (see the module docstring).

    Use one per process (several processes may share a log folder: each writes its own
    segments). `close()` (or leaving a `with` block) commits everything and stops the thread.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        spool_dir: Path | str | None = None,
        flush_interval_s: float = 1.0,
        batch_rows: int = 5000,
        max_spool_bytes: int = 256 * MIB,
        segment_bytes: int = 16 * MIB,
        max_record_bytes: int = MIB,
        fsync: bool = False,
        autoflush: bool = True,
    ) -> None:
        """Open the log: adopt and commit what earlier writers left, then start flushing.

        Args:
            directory: The log's Delta table (created on the first commit).
            spool_dir: The spool folder (default `<directory>/_spool`); must be a local disk.
            flush_interval_s: Longest time a record waits in the spool.
            batch_rows: Waiting records that trigger a commit at once; also the batch size.
            max_spool_bytes: Uncommitted spool bytes above which `append` raises
                `PredictionLogFull`.
            segment_bytes: Size at which a spool segment is sealed and a new one started.
            max_record_bytes: Largest encoded record accepted.
            fsync: Flush each record to the disk before `append` returns.
            autoflush: Run the background flusher (False: only `flush()` and `close()` commit).

        Raises:
            ValueError: a size or interval is not positive.
            OSError: the spool folder cannot be created or written.
        """
        for name, value in (
            ("flush_interval_s", flush_interval_s),
            ("batch_rows", batch_rows),
            ("max_spool_bytes", max_spool_bytes),
            ("segment_bytes", segment_bytes),
            ("max_record_bytes", max_record_bytes),
        ):
            if value <= 0:
                raise ValueError(f"{name}: must be > 0, got {value}")
        self.directory = Path(directory)
        self.uri = str(self.directory)
        self.spool_dir = Path(spool_dir) if spool_dir else self.directory / SPOOL_DIR_NAME
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.max_spool_bytes = max_spool_bytes
        self.segment_bytes = segment_bytes
        self.max_record_bytes = max_record_bytes
        self._read_bytes = max(8 * MIB, 2 * max_record_bytes)
        self._fsync = fsync
        self._writer = uuid.uuid4().hex[:16]
        self._lock = threading.Lock()  # spool state and counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._segments: list[_Segment] = []
        self._pending_bytes = self._pending_lines = 0
        self._appended = self._flushed = self._replayed = self._rejected = 0
        self._flush_errors = self._skipped = 0
        self._last_flush_at: datetime | None = None
        self._last_error: str | None = None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._adopt_orphans()
        self._active = self._new_segment(0)
        if self._pending_lines:
            try:
                self.flush()
            except PredictionLogFlushError:
                log.warning("replaying the prediction log spool failed; retrying in background")
        self._thread: threading.Thread | None = None
        if autoflush:
            self._thread = threading.Thread(
                target=self._run, name=f"prediction-log-{self._writer}", daemon=True
            )
            self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PredictionLog:
        """The log of an installation, configured by its `prediction_*` settings."""
        options: dict[str, Any] = {
            "spool_dir": settings.prediction_spool_dir,
            "flush_interval_s": settings.prediction_flush_s,
            "batch_rows": settings.prediction_batch_rows,
            "max_spool_bytes": settings.prediction_spool_max_bytes,
            "fsync": settings.prediction_fsync,
        }
        return cls(settings.prediction_log_dir, **(options | overrides))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ appending

    def append(self, record: Mapping[str, Any]) -> None:
        """Spool one record; returns once the operating system holds it (no table write).

        Raises:
            PredictionRecordError: the record is malformed (nothing is written).
            PredictionLogFull: the spool is full; the record was not logged.
            PredictionLogClosed: the log was closed.
            PredictionLogUnavailable: the spool file could not be written (an OSError).
        """
        self.append_many([record])

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Spool several records (a batch request) all or none, with one write.

        Raises:
            PredictionRecordError: a record is malformed (nothing is written); the message
                starts with its index when there are several.
            PredictionLogFull: the spool has no room for all of them (none was logged).
            PredictionLogClosed: the log was closed.
            PredictionLogUnavailable: the spool file could not be written (an OSError).
        """
        lines = []
        for i, record in enumerate(records):
            try:
                line = encode_record(record)
                if len(line) > self.max_record_bytes:
                    raise PredictionRecordError(
                        f"record is {len(line)} bytes encoded; at most {self.max_record_bytes} "
                        "are logged"
                    )
            except PredictionRecordError as exc:
                if len(records) == 1:
                    raise
                raise PredictionRecordError(f"record {i}: {exc}") from exc
            lines.append(line)
        if not lines:
            return
        data = b"".join(lines)
        with self._lock:
            if self._closed:
                raise PredictionLogClosed("the prediction log is closed")
            if self._pending_bytes + len(data) > self.max_spool_bytes:
                self._rejected += len(lines)
                raise PredictionLogFull(
                    f"prediction log spool full: {self._pending_bytes} bytes wait for the table, "
                    f"{len(data)} more do not fit in {self.max_spool_bytes}; "
                    f"last commit error: {self._last_error}"
                )
            segment = self._active
            self._write(segment, data)
            segment.size += len(data)
            segment.lines += len(lines)
            self._pending_bytes += len(data)
            self._pending_lines += len(lines)
            self._appended += len(lines)
            if segment.size >= self.segment_bytes:
                self._rotate()
            wake = self._pending_lines >= self.batch_rows
        if wake:
            self._wake.set()

    def _write(self, segment: _Segment, line: bytes) -> None:
        try:
            _write_all(segment.fd, line)
            if self._fsync:
                os.fdatasync(segment.fd)
        except OSError as exc:
            # Cut a partial line off so the next one starts clean; if even that fails, start a
            # new segment (this one is committed up to its last whole line).
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError:
                with contextlib.suppress(OSError):
                    self._rotate()
            raise PredictionLogUnavailable(f"prediction log spool write failed: {exc}") from exc

    def _new_segment(self, seq: int) -> _Segment:
        path = self.spool_dir / f"{self._writer}-{seq:08d}.spool"
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if self._fsync:
                dir_fd = os.open(self.spool_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError:
            os.close(fd)
            raise
        segment = _Segment(path=path, writer=self._writer, seq=seq, fd=fd, size=0)
        self._segments.append(segment)
        return segment

    def _rotate(self) -> None:
        """Seal the active segment and start the next one (caller holds the lock)."""
        old = self._active
        self._active = self._new_segment(old.seq + 1)
        old.sealed = True
        self._drop_done()

    def _drop_done(self) -> None:
        """Delete sealed segments whose lines are all committed (caller holds the lock)."""
        keep = []
        for segment in self._segments:
            if segment.sealed and segment.committed >= segment.size:
                segment.release(delete=True)
            else:
                keep.append(segment)
        self._segments = keep

    # ------------------------------------------------------------------ replay

    def _adopt_orphans(self) -> None:
        """Take over the segments of writers that are gone, as far as the table lacks them."""
        lock_fd = os.open(self.spool_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one adopter at a time
            locked: list[_Segment] = []
            for writer, seq, path in segments_in(self.spool_dir):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live writer's
                    os.close(fd)
                    continue
                size = os.fstat(fd).st_size
                locked.append(_Segment(path, writer, seq, fd, size, sealed=True, adopted=True))
            self._take(locked)
        finally:
            os.close(lock_fd)

    def _take(self, locked: list[_Segment]) -> None:
        """Keep the locked segments that still hold uncommitted lines; delete the others."""
        txns: dict[str, int | None] = {}
        try:
            for segment in locked:
                if segment.writer not in txns:
                    txns[segment.writer] = tables.transaction_version(self.uri, segment.app_id)
        except Exception:
            for segment in locked:
                segment.release(delete=False)
            raise
        for segment in locked:
            done = committed_offset(segment.seq, txns[segment.writer])
            if done is None or done >= segment.size:
                segment.release(delete=True)
                continue
            segment.committed = done
            tail = os.pread(segment.fd, segment.size - done, done)
            segment.lines = tail.count(b"\n") + (not tail.endswith(b"\n"))
            self._segments.append(segment)
            self._pending_bytes += segment.size - done
            self._pending_lines += segment.lines
            log.info(
                "prediction log: replaying %s from byte %d (%d bytes)",
                segment.path.name,
                done,
                segment.size - done,
            )

    # ------------------------------------------------------------------ flushing

    def flush(self) -> int:
        """Commit every spooled record now (one table version per batch).

        Returns:
            The number of records committed.

        Raises:
            PredictionLogFlushError: a commit failed; the records stay spooled (and counted).
        """
        with self._flush_lock:
            total = 0
            while (batch := self._next_batch()) is not None:
                total += self._commit(*batch)
            return total

    def _next_batch(self) -> tuple[_Segment, int, int] | None:
        """(segment, start, stop) of the oldest uncommitted bytes, or None."""
        with self._lock:
            self._drop_done()
            for segment in self._segments:
                if segment.committed < segment.size:
                    return segment, segment.committed, segment.size
        return None

    def _read_batch(
        self, segment: _Segment, start: int, stop: int
    ) -> tuple[list[dict[str, Any]], int, int]:
        """Up to `batch_rows` records from [start, stop): (rows, end offset, lines consumed)."""
        data = os.pread(segment.fd, min(stop - start, self._read_bytes), start)
        if b"\n" not in data and start + len(data) < stop:
            data = os.pread(segment.fd, stop - start, start)  # one very long line
        rows: list[dict[str, Any]] = []
        end, consumed = start, 0
        for offset, line_end, line in spool_lines(data, start):
            row = decode_line(line)
            if row is None:
                self._skip(segment, offset, "unreadable line")
            else:
                rows.append(row)
            end, consumed = line_end, consumed + 1
            if consumed >= self.batch_rows:
                return rows, end, consumed
        if end < stop and start + len(data) >= stop:
            # A last line without its newline: torn by a crash mid-write (only possible in a
            # segment left by an earlier writer; this one's lines are always whole).
            self._skip(segment, end, f"torn last line ({stop - end} bytes)")
            end, consumed = stop, consumed + 1
        return rows, end, consumed

    def _skip(self, segment: _Segment, offset: int, what: str) -> None:
        log.warning("prediction log spool %s at byte %d: skipped %s", segment.path, offset, what)
        with self._lock:
            self._skipped += 1

    def _commit(self, segment: _Segment, start: int, stop: int) -> int:
        if segment.uncertain:  # the last attempt may have landed before it failed
            txn = tables.transaction_version(self.uri, segment.app_id)
            done = committed_offset(segment.seq, txn)
            done = segment.size if done is None else done
            if done > start:
                self._committed(segment, start, done, consumed=None, rows=0)
                return 0
        rows, end, consumed = self._read_batch(segment, start, stop)
        if rows:
            frame = rows_to_frame(rows)
            metadata = {
                "loopline.prediction_log.segment": segment.path.name,
                "loopline.prediction_log.start": str(start),
                "loopline.prediction_log.end": str(end),
                "loopline.prediction_log.rows": str(len(rows)),
            }
            try:
                tables.append(
                    self.uri,
                    frame,
                    metadata=metadata,
                    partition_by=PARTITION_BY,
                    transaction=(segment.app_id, pack_offset(segment.seq, end)),
                )
            except Exception as exc:
                segment.uncertain = True
                with self._lock:
                    self._flush_errors += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                raise PredictionLogFlushError(
                    f"committing {len(rows)} prediction(s) to {self.uri} failed: {exc}"
                ) from exc
        self._committed(segment, start, end, consumed=consumed, rows=len(rows))
        return len(rows)

    def _committed(
        self, segment: _Segment, start: int, end: int, *, consumed: int | None, rows: int
    ) -> None:
        with self._lock:
            if consumed is None:  # found committed by an earlier attempt: count its lines
                consumed = os.pread(segment.fd, end - start, start).count(b"\n")
            segment.committed, segment.uncertain = end, False
            consumed = min(consumed, segment.lines)
            segment.lines -= consumed
            self._pending_lines -= consumed
            self._pending_bytes -= end - start
            self._flushed += rows
            if segment.adopted:
                self._replayed += rows
            self._last_flush_at = datetime.now(UTC)
            self._drop_done()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(min(self.flush_interval_s * 2**failures, 30.0))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
                failures = 0
            except PredictionLogFlushError as exc:
                failures = min(failures + 1, 10)
                log.warning("%s; retrying", exc)
            except Exception:  # the flusher must never die
                failures = min(failures + 1, 10)
                log.exception("prediction log flush failed; retrying")

    # ------------------------------------------------------------------ state

    def stats(self) -> PredictionLogStats:
        """The counters since this log was opened."""
        with self._lock:
            return PredictionLogStats(
                appended=self._appended,
                flushed=self._flushed,
                replayed=self._replayed,
                pending=self._pending_lines,
                spool_bytes=self._pending_bytes,
                rejected_full=self._rejected,
                flush_errors=self._flush_errors,
                skipped_lines=self._skipped,
                last_flush_at=self._last_flush_at,
                last_error=self._last_error,
            )

    def close(self) -> PredictionLogStats:
        """Refuse new records, commit the spooled ones and stop the flusher (idempotent).

        A commit that fails here is logged, not raised: its records stay in the spool and the
        next `PredictionLog` opened on this folder commits them.

        Returns:
            The final counters.
        """
        with self._lock:
            already, self._closed = self._closed, True
        if already:
            return self.stats()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        except PredictionLogFlushError as exc:
            log.error("%s; the records stay in %s for the next writer", exc, self.spool_dir)
        with self._lock:
            for segment in self._segments:
                segment.release(delete=segment.committed >= segment.size)
            self._segments = []
        return self.stats()

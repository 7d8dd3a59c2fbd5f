"""Raw sources: files (CSV, Parquet, JSON Lines, JSON), folders, globs, and DuckDB queries.

Everything here turns a source into a `FileRead`: the content hash of exactly the bytes that
were parsed, the typed frame in the contract's columns, and every hard problem found on the way
(unreadable file, wrong encoding, a byte-order mark of another encoding, an empty file, a file
that changed while it was read, values that do not parse). Nothing here writes anywhere.

Reading is built for large files: a CSV is parsed straight into the declared types by Polars'
multi-threaded reader while another thread hashes the file; only when that fast path fails is
the file read as text and typed value by value to say precisely which values are wrong.
"""

from __future__ import annotations

import codecs
import csv
import errno
import glob
import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loopline.data.contracts import (
    EXAMPLES,
    READERS,
    RuleResult,
    Violation,
    cast_frame,
    shown,
)
from loopline.spec import SourceFormat, TableSpec

_CHUNK = 1 << 22
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_GLOB_CHARS = frozenset("*?[")


class SourceError(ValueError):
    """A path cannot be used as a source: missing, a link loop, an empty folder, no match."""


@dataclass
class FileRead:
    """One source, read and typed.

    Attributes:
        name: What messages call it (file name, or `query:<hash>`).
        path: Full path (or the query text).
        sha256: Hex sha256 of the bytes parsed (of the result, for a query).
        size: Bytes read.
        format: csv, parquet, ndjson, json or query.
        frame: The declared columns in their types (empty when a hard problem was found).
        problems: Hard rules broken while reading and typing, with counts and examples.
        notes: Things worth knowing that did not stop the read (ignored columns, BOM removed).
    """

    name: str
    path: str
    sha256: str
    size: int
    format: str
    frame: pl.DataFrame
    problems: list[RuleResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        """Example violations of every problem."""
        return [v for r in self.problems for v in r.examples]

    def as_dict(self) -> dict[str, object]:
        """JSON-able description (for reports and the store)."""
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.size,
            "format": self.format,
            "rows": self.frame.height if not self.problems else None,
        }


def _problem(
    column: str, rule: str, value: object, source: str, row: int | None = None
) -> RuleResult:
    violation = Violation(column, rule, shown(value), row, source)
    return RuleResult(column, rule, "hard", 1, [violation])


# --- finding sources --------------------------------------------------------------------------


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError(f"input path is a symbolic link loop: {path}") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise SourceError(f"input file not found: {path}") from exc
        raise SourceError(f"input path cannot be read: {path} ({exc.strerror})") from exc


def _folder_files(folder: Path) -> list[Path]:
    files = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child.suffix.lower() not in READERS:
            continue
        try:
            if stat.S_ISREG(child.stat().st_mode):
                files.append(child)
        except OSError:
            continue  # a dangling link or a loop inside a folder is not a source
    return files


def resolve(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (their supported files, not recursive) and globs into files.

    Hidden files (a leading dot, as temporary files of atomic writers have) are skipped in
    folders and globs. Each file appears once, in the order given.

    Raises:
        SourceError: a path does not exist, is a link loop or not a regular file or folder, a
            folder holds no supported file, or a glob matches none.
    """
    found: list[Path] = []
    for item in paths:
        text = str(item)
        path = Path(item)
        if _GLOB_CHARS & set(text) and not path.exists():
            matches = [
                Path(m)
                for m in sorted(glob.glob(text, recursive=True))
                if not Path(m).name.startswith(".")
                and Path(m).suffix.lower() in READERS
                and Path(m).is_file()
            ]
            if not matches:
                raise SourceError(
                    f"no {'/'.join(sorted(set(READERS.values())))} file matches {text}"
                )
            found += matches
            continue
        mode = _stat(path).st_mode
        if stat.S_ISDIR(mode):
            files = _folder_files(path)
            if not files:
                kinds = ", ".join(sorted(READERS))
                raise SourceError(f"folder {path} holds no file of a supported type ({kinds})")
            found += files
        elif stat.S_ISREG(mode):
            found.append(path)
        else:
            raise SourceError(f"input path is not a regular file or folder: {path}")
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def discover(folder: Path) -> list[Path]:
    """Raw files of a supported type directly in `folder`, in name order (none if no folder)."""
    return _folder_files(folder) if folder.is_dir() else []


# --- hashing ----------------------------------------------------------------------------------


class _HashingFile:
    """A write-only file object that only hashes what is written (for Arrow IPC streams)."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def frame_sha256(frame: pl.DataFrame) -> str:
    """sha256 of a frame's Arrow IPC stream (schema and values in row order), streamed.

    Same value as `loopline.lake.tables.frame_hash` (without its prefix), without holding the
    serialized bytes in memory.
    """
    sink = _HashingFile()
    table = frame.to_arrow()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table)
    return sink.hasher.hexdigest()


class _FileHasher(threading.Thread):
    """Hash a file in a background thread (hashlib releases the GIL on large chunks)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.digest = ""
        self.size = 0
        self.error: OSError | None = None

    def run(self) -> None:
        hasher = hashlib.sha256()
        try:
            with open(self.path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
                    self.size += len(chunk)
        except OSError as exc:
            self.error = exc
        self.digest = hasher.hexdigest()


# --- reading ----------------------------------------------------------------------------------


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _header(path: Path, fmt: SourceFormat) -> list[str] | None:
    """Column names of a UTF-8 CSV's first line, or None if it cannot be read cheaply."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            line = handle.readline(1 << 20)
    except (OSError, UnicodeDecodeError):
        return None
    if not line.endswith(("\n", "\r")) and len(line) >= 1 << 20:
        return None
    try:
        return next(csv.reader([line], delimiter=fmt.delimiter, quotechar=fmt.quote_char or '"'))
    except (csv.Error, StopIteration):
        return None


def _delimiter_hint(columns: list[str], fmt: SourceFormat) -> str:
    if len(columns) == 1:
        for candidate in (",", ";", "\t", "|"):
            if candidate != fmt.delimiter and candidate in columns[0]:
                return (
                    f"the header is one column: is the delimiter {candidate!r} "
                    f"(the contract says {fmt.delimiter!r})?"
                )
    return ""


def read_csv_typed(path: Path, table: TableSpec, fmt: SourceFormat) -> pl.DataFrame:
    """Polars' reader straight into the declared types (raises on the first bad value).

    Timestamps are read as text and parsed by Arrow's ISO-8601 cast, about ten times faster
    than Polars' per-value parser: first as offset-aware values (converted to UTC), else as
    all-naive values (read as UTC). A mix, or anything else, raises, and the caller falls
    back to the slow path that names each bad value.
    """
    from loopline.data.contracts import polars_schema

    schema = polars_schema(table)
    stamps = [name for name, dtype in schema.items() if isinstance(dtype, pl.Datetime)]
    frame = pl.read_csv(
        path,
        schema_overrides={**schema, **dict.fromkeys(stamps, pl.Utf8)},
        columns=list(table.columns),
        separator=fmt.delimiter,
        quote_char=fmt.quote_char,
        encoding="utf8",
    )
    columns = []
    for name in stamps:
        text = frame.get_column(name).to_arrow()
        try:
            parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
        except pa.ArrowInvalid:
            parsed = pc.cast(pc.cast(text, pa.timestamp("us")), pa.timestamp("us", tz="UTC"))
        columns.append(pl.Series(name, parsed))
    return frame.with_columns(columns)


def read_csv_text(data: bytes, fmt: SourceFormat) -> pl.DataFrame:
    """Every column as text (the slow path that finds each bad value)."""
    return pl.read_csv(data, infer_schema=False, separator=fmt.delimiter, quote_char=fmt.quote_char)


def _decode(
    data: bytes, fmt: SourceFormat, name: str
) -> tuple[bytes | None, list[str], RuleResult | None]:
    """The bytes as UTF-8 (converted from the declared encoding), or the problem found."""
    notes = []
    declared = codecs.lookup(fmt.encoding).name
    for bom, encoding in _BOMS:
        if not data.startswith(bom):
            continue
        if encoding == "utf-8-sig" and declared in ("utf-8", "utf-8-sig"):
            notes.append(f"{name}: UTF-8 byte-order mark removed")
            data = data[len(bom) :]
        elif not declared.startswith(encoding.split("-sig")[0].rsplit("-", 1)[0]):
            value = (
                f"file starts with a {encoding.removesuffix('-sig').upper()} byte-order mark, "
                f"the table's source.encoding is {fmt.encoding}"
            )
            return None, notes, _problem("(file)", f"encoding {fmt.encoding}", value, name)
        break
    if declared != "utf-8":
        try:
            text = data.decode(fmt.encoding)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            rule = f"encoding {fmt.encoding}"
            return None, notes, _problem("(file)", rule, data[exc.start : exc.end + 8], name, line)
        return text.lstrip("\ufeff").encode("utf-8"), notes, None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        before = data[max(line_start, exc.start - 24) : exc.start].decode("utf-8", "replace")
        value = (
            f"byte 0x{data[exc.start]:02x} after {before!r} on line {line} "
            "(set the table's source.encoding, e.g. latin-1)"
        )
        return None, notes, _problem("(file)", "encoding utf-8", value, name, line)
    return data, notes, None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def _read_csv(path: Path, table: TableSpec, fmt: SourceFormat, result: FileRead) -> None:
    header = _header(path, fmt) if codecs.lookup(fmt.encoding).name == "utf-8" else None
    if header is not None and all(name in header for name in table.columns):
        with open(path, "rb") as handle:
            if handle.read(3) == codecs.BOM_UTF8:
                result.notes.append(f"{result.name}: UTF-8 byte-order mark removed")
        hasher = _FileHasher(path)
        hasher.start()
        try:
            frame = read_csv_typed(path, table, fmt)
        except (pl.exceptions.PolarsError, pa.ArrowInvalid, OSError):
            frame = None
        hasher.join()
        if frame is not None and hasher.error is None:
            result.sha256, result.size = hasher.digest, hasher.size
            extra = [name for name in header if name not in table.columns]
            if extra and table.contract.extra_columns == "reject":
                result.problems += [_problem(n, "column declared", n, result.name) for n in extra]
            elif extra:
                result.notes.append(f"{result.name}: undeclared column(s) ignored: {extra}")
            result.frame = frame
            return
    data = path.read_bytes()
    result.sha256, result.size = hashlib.sha256(data).hexdigest(), len(data)
    text, notes, problem = _decode(data, fmt, result.name)
    result.notes += notes
    if problem is not None:
        result.problems.append(problem)
        return
    assert text is not None
    try:
        raw = read_csv_text(text, fmt)
    except pl.exceptions.PolarsError as exc:
        result.problems.append(
            _problem("(file)", "readable csv", _first_line(str(exc)), result.name)
        )
        return
    hint = _delimiter_hint(raw.columns, fmt)
    typed, problems, notes = cast_frame(raw, table, source=result.name, hint=hint)
    result.notes += notes
    result.problems += problems
    result.frame = typed


def _read_typed(path: Path, table: TableSpec, fmt_name: str, result: FileRead) -> None:
    hasher = _FileHasher(path)
    hasher.start()
    try:
        if fmt_name == "parquet":
            names = pl.read_parquet_schema(path)
            wanted = [c for c in names if c in table.columns] or None
            raw = pl.read_parquet(path, columns=wanted)
            extra = [c for c in names if c not in table.columns]
        elif fmt_name == "ndjson":
            raw = pl.read_ndjson(path, infer_schema_length=None)
            extra = []
        else:
            raw = pl.read_json(path, infer_schema_length=None)
            extra = []
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        hasher.join()
        result.sha256, result.size = hasher.digest, hasher.size
        rule = f"readable {fmt_name}"
        result.problems.append(_problem("(file)", rule, _first_line(str(exc)), result.name))
        return
    hasher.join()
    result.sha256, result.size = hasher.digest, hasher.size
    typed, problems, notes = cast_frame(raw, table, source=result.name)
    if extra and table.contract.extra_columns == "reject":
        problems += [_problem(n, "column declared", n, result.name) for n in extra]
    elif extra:
        notes.append(f"{result.name}: undeclared column(s) ignored: {extra}")
    result.notes += notes
    result.problems += problems
    result.frame = typed


def _json_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        start = handle.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    return "json" if start.startswith(b"[") else "ndjson"


def read_file(path: Path, table: TableSpec, fmt: SourceFormat | None = None) -> FileRead:
    """Read one raw file into the table's declared columns and types.

    Never raises for bad content: every problem is in `FileRead.problems` (a hard rule, with
    the column, the rule and an example value).

    Args:
        path: The file.
        table: The table it belongs to.
        fmt: CSV dialect and encoding; default: the table's `source` block.

    Raises:
        SourceError: the path does not exist, is a link loop, or is not a regular file.
    """
    fmt = fmt or table.source
    path = Path(path)
    before = _stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise SourceError(f"input path is not a regular file: {path}")
    kind = READERS.get(path.suffix.lower())
    empty = pl.DataFrame()
    result = FileRead(path.name, str(path), "", before.st_size, kind or "?", empty)
    if kind is None:
        rule = f"file type one of {sorted(READERS)}"
        result.problems.append(_problem("(file)", rule, path.suffix or path.name, path.name))
        return result
    if before.st_size == 0:
        result.sha256 = hashlib.sha256(b"").hexdigest()
        result.problems.append(_problem("(file)", "not empty", "0 bytes", path.name))
        return result
    if kind == "json":
        kind = result.format = _json_kind(path)
    if kind == "csv":
        _read_csv(path, table, fmt, result)
    else:
        _read_typed(path, table, kind, result)
    after = _stat(path)
    if _identity(after) != _identity(before) or result.size != before.st_size:
        value = f"{before.st_size} bytes when opened, {after.st_size} bytes after reading"
        result.problems.append(_problem("(file)", "unchanged while being read", value, path.name))
    if not result.problems and result.frame.height == 0 and not table.contract.allow_empty:
        result.problems.append(_problem("(file)", "has rows", "header only, 0 rows", path.name))
    if result.problems:
        result.frame = empty
    return result


def read_query(sql: str, table: TableSpec) -> FileRead:
    """Run a DuckDB query (for example over `read_csv('raw/*.csv')`) as one source.

    The source's hash is the hash of the query's result, so running the same query over the
    same files again is recognised as already ingested.
    """
    import duckdb

    name = "query:" + hashlib.sha256(sql.encode()).hexdigest()[:12]
    result = FileRead(name, sql, "", 0, "query", pl.DataFrame())
    try:
        with duckdb.connect() as con:
            con.execute("SET enable_progress_bar = false")
            raw = con.sql(sql).pl()
    except duckdb.Error as exc:
        result.problems.append(_problem("(query)", "runs in DuckDB", _first_line(str(exc)), name))
        return result
    result.sha256 = frame_sha256(raw)
    typed, problems, notes = cast_frame(raw, table, source=name)
    result.problems += problems
    result.notes += notes
    if not problems and typed.height == 0 and not table.contract.allow_empty:
        result.problems.append(_problem("(query)", "has rows", "0 rows", name))
    result.frame = typed if not result.problems else pl.DataFrame()
    return result


def examples(results: Sequence[RuleResult]) -> list[Violation]:
    """The example violations of some rule results, at most `EXAMPLES` each, in order."""
    return [v for r in results for v in r.examples[:EXAMPLES]]


__all__ = [
    "FileRead",
    "SourceError",
    "discover",
    "examples",
    "frame_sha256",
    "read_csv_text",
    "read_csv_typed",
    "read_file",
    "read_query",
    "resolve",
    "shown",
]

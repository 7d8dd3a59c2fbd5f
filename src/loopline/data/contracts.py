"""Data contracts: type a raw frame into the declared columns, then check it with pandera.

The contract of a table is its `TableSpec`: the `columns` block (type, nulls, uniqueness,
range, categories, finiteness, length, each with a severity) and the `contract` block (timestamp
sanity, freshness, cross-field row rules, references to other tables, the share of failing rows
that still counts as a healthy batch).

Two steps, both pure functions over frames:

- `cast_frame` turns what a reader produced into the declared columns and types. A value that
  does not parse, a missing column, or a column of an incompatible type in a typed file breaks
  the contract hard: no half-typed batch goes further.
- `validate` runs pandera's Polars API on the typed data itself, once with the hard rules and
  once with the soft ones, and returns the hard failures (the batch is rejected), the failing
  rows of soft rules (quarantined with the rule and value), and warnings.

Every failure names the column, the rule, an example value, and the file and row it came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from loopline.spec import ColumnRule, Operand, TableSpec

_DTYPES: dict[str, pl.DataType] = {
    "string": pl.Utf8(),
    "category": pl.Utf8(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us", "UTC"),
}
READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
    ".json": "json",
}
EXAMPLES = 5
"""Example failures kept per rule (every failure is counted)."""

ROW = "__row"
"""Helper column: 1-based data row of a value within its source file."""
SOURCE = "__source"
"""Helper column: index of the source file within the batch."""
MAX_SHOWN = 120
"""Longest example value shown in messages (longer ones are cut, with their size)."""
_AWARE = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$")


def shown(value: object) -> str | None:
    """A value as messages show it: text, cut to `MAX_SHOWN` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_SHOWN:
        return f"{text[:MAX_SHOWN]}... ({len(text.encode())} bytes)"
    return text


@dataclass(frozen=True)
class Violation:
    """One broken rule: which column, which rule, which value, which row (1-based) of which file."""

    column: str
    rule: str
    value: str | None
    row: int | None
    source: str = ""
    severity: str = "hard"

    def __str__(self) -> str:
        where = f"{self.source} " if self.source else ""
        row = f"row {self.row}" if self.row is not None else "batch"
        return f"{where}{row}: column '{self.column}' breaks '{self.rule}' (value {self.value!r})"

    def as_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return {
            "column": self.column,
            "rule": self.rule,
            "value": self.value,
            "row": self.row,
            "source": self.source,
            "severity": self.severity,
        }


@dataclass
class RuleResult:
    """How often one rule failed in a batch, with a few examples."""

    column: str
    rule: str
    severity: str
    failures: int
    examples: list[Violation] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return {
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity,
            "failures": self.failures,
            "examples": [v.as_dict() for v in self.examples],
        }


def summarize(violations: Sequence[Violation]) -> list[RuleResult]:
    """Group single violations by (column, rule, severity), keeping the first examples."""
    results: dict[tuple[str, str, str], RuleResult] = {}
    for v in violations:
        key = (v.column, v.rule, v.severity)
        result = results.setdefault(key, RuleResult(v.column, v.rule, v.severity, 0))
        result.failures += 1
        if len(result.examples) < EXAMPLES:
            result.examples.append(v)
    return list(results.values())


class ContractError(ValueError):
    """A batch broke its contract; nothing was written.

    Attributes:
        table: The table the batch was for.
        violations: Example failures, the most important first.
        results: Every broken rule with its failure count and examples.
        report: The batch report, when one was stored.
    """

    def __init__(
        self,
        table: str,
        violations: list[Violation],
        *,
        results: list[RuleResult] | None = None,
    ) -> None:
        self.table = table
        self.violations = violations
        self.results = results if results is not None else summarize(violations)
        self.report: dict[str, object] | None = None
        total = sum(r.failures for r in self.results) or len(violations)
        listed = "; ".join(str(v) for v in violations[:5])
        more = f" (+{total - min(5, len(violations))} more)" if total > 5 else ""
        super().__init__(f"batch for '{table}' rejected, {total} violation(s): {listed}{more}")


def polars_schema(table: TableSpec) -> dict[str, pl.DataType]:
    """Declared column -> Polars dtype, in declaration order."""
    return {name: _DTYPES[rule.type] for name, rule in table.columns.items()}


# --- typing -----------------------------------------------------------------------------------


_MIX_RULE = "timezone offset on every value (no naive/aware mix)"


def _parse_text(column: pl.Series, rule: ColumnRule) -> tuple[pl.Series, pl.Series | None]:
    """Strings -> the declared type.

    Returns:
        The parsed column and, for timestamps that mix naive and aware values, the mask of the
        naive ones (the minority is what a reader wants to see), else None.
    """
    if rule.type in ("string", "category"):
        return column, None
    text = column.str.strip_chars()
    if rule.type == "int":
        return text.cast(pl.Int64, strict=False), None
    if rule.type == "float":
        return text.cast(pl.Float64, strict=False), None
    if rule.type == "bool":
        mapping = {"true": True, "false": False, "1": True, "0": False, "t": True, "f": False}
        return text.str.to_lowercase().replace_strict(mapping, default=None), None
    dated = text.str.contains(r"^\d{4}-\d{2}-\d{2}").fill_null(False)
    offset = text.str.contains(_AWARE.pattern).fill_null(False)
    n_aware = int((dated & offset).sum())
    naive = dated & ~offset
    if n_aware:
        parsed = text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    elif naive.any():  # every value naive: read as UTC
        parsed = text.str.to_datetime(strict=False, time_unit="us").dt.replace_time_zone("UTC")
    else:  # no value looks like a date: none parses (Polars cannot even infer a format)
        parsed = pl.Series(text.name, [None] * text.len(), pl.Datetime("us", "UTC"))
    mixed = naive if n_aware and naive.any() else None
    return parsed, mixed


def _rule_result(
    column: str, rule: str, mask: pl.Series, values: pl.Series, source: str
) -> RuleResult:
    """Count the rows where `mask` holds and keep the first few as examples."""
    rows = pl.int_range(1, mask.len() + 1, eager=True).filter(mask).head(EXAMPLES)
    first = values.filter(mask).head(EXAMPLES).cast(pl.Utf8, strict=False)
    examples = [
        Violation(column, rule, shown(value), row, source)
        for value, row in zip(first.to_list(), rows.to_list(), strict=True)
    ]
    return RuleResult(column, rule, "hard", int(mask.sum()), examples)


def _convert_typed(column: pl.Series, rule: ColumnRule) -> pl.Series | None:
    """A typed column (Parquet, JSON, a query) -> the declared type; None if not compatible."""
    dtype = column.dtype
    target = _DTYPES[rule.type]
    if dtype == target or dtype == pl.Null:
        return column.cast(target)
    if rule.type in ("string", "category"):
        return column.cast(pl.Utf8) if dtype in (pl.Categorical, pl.Enum) else None
    if rule.type == "int":
        if dtype.is_integer():
            return column.cast(pl.Int64, strict=False)
        if dtype.is_float():
            as_int = column.cast(pl.Int64, strict=False)
            exact = (as_int.cast(pl.Float64) == column) | column.is_null()
            return as_int.set(~exact.fill_null(False), None)  # type: ignore[arg-type]
        return None
    if rule.type == "float":
        return column.cast(pl.Float64) if dtype.is_numeric() else None
    if rule.type == "bool":
        return None
    if isinstance(dtype, pl.Datetime):
        moved = (
            column.dt.convert_time_zone("UTC")
            if dtype.time_zone
            else column.dt.replace_time_zone("UTC")
        )
        return moved.cast(pl.Datetime("us", "UTC"))
    if dtype == pl.Date:
        return column.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return None


def cast_frame(
    raw: pl.DataFrame, table: TableSpec, *, source: str = "", hint: str = ""
) -> tuple[pl.DataFrame, list[RuleResult], list[str]]:
    """Select the declared columns of a raw frame and give them their declared types.

    Args:
        raw: What a reader produced: all strings (CSV) or typed columns (Parquet, JSON, SQL).
        table: The table's spec.
        source: Name of the file, for messages.
        hint: Appended to a missing-column message (e.g. a likely delimiter).

    Returns:
        The typed frame (declared columns only, in declared order), the hard rules it broke
        (missing columns, incompatible column types, values that do not parse, naive and aware
        timestamps mixed) with counts and examples, and notes (ignored extra columns, naive
        timestamps read as UTC).
    """
    notes: list[str] = []
    missing = [name for name in table.columns if name not in raw.columns]
    if missing:
        value = shown(hint or f"columns found: {raw.columns[:12]}")
        return (
            raw,
            [
                RuleResult(
                    n,
                    "column present",
                    "hard",
                    1,
                    [Violation(n, "column present", value, None, source)],
                )
                for n in missing
            ],
            notes,
        )
    extra = [name for name in raw.columns if name not in table.columns]
    results: list[RuleResult] = []
    if extra and table.contract.extra_columns == "reject":
        results += [
            RuleResult(
                n, "column declared", "hard", 1, [Violation(n, "column declared", n, None, source)]
            )
            for n in extra
        ]
    elif extra:
        notes.append(f"{source}: undeclared column(s) ignored: {extra}")
    typed: dict[str, pl.Series] = {}
    for name, rule in table.columns.items():
        column = raw.get_column(name)
        target = _DTYPES[rule.type]
        if column.dtype == pl.Utf8 and rule.type not in ("string", "category"):
            converted, mixed = _parse_text(column, rule)
            if mixed is not None:
                results.append(_rule_result(name, _MIX_RULE, mixed, column, source))
                typed[name] = converted.alias(name)
                continue
        else:
            maybe = _convert_typed(column, rule)
            if maybe is None:
                example = column.drop_nulls().head(1).cast(pl.Utf8, strict=False).to_list()
                rule_name = f"type {rule.type} (file has {column.dtype})"
                value = example[0] if example else None
                results.append(
                    RuleResult(
                        name,
                        rule_name,
                        "hard",
                        1,
                        [Violation(name, rule_name, value, None, source)],
                    )
                )
                typed[name] = pl.Series(name, [None] * raw.height, dtype=target)
                continue
            converted = maybe
            if isinstance(column.dtype, pl.Datetime) and not column.dtype.time_zone:
                notes.append(f"{source}: column '{name}' has no time zone; read as UTC")
        lost = column.is_not_null() & converted.is_null()
        if lost.any():
            results.append(_rule_result(name, f"parses as {rule.type}", lost, column, source))
        typed[name] = converted.alias(name)
    return pl.DataFrame(list(typed.values())), results, notes


def read_batch(path: Path, table: TableSpec) -> pl.DataFrame:
    """Read one raw file into the declared columns and types.

    Raises:
        ContractError: the file cannot be read, declared columns are missing, or values do
            not parse as their declared type.
    """
    from loopline.data.sources import read_file

    result = read_file(Path(path), table)
    if result.problems:
        raise ContractError(
            table.table, [v for r in result.problems for v in r.examples], results=result.problems
        )
    return result.frame


# --- checks -----------------------------------------------------------------------------------


def duration_text(value: timedelta) -> str:
    """A duration as the spec writes it: '1d', '12h', '90s'."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


def _label(rule: ColumnRule, what: str) -> str:
    if what == "min":
        return f"min {rule.min:g}"
    if what == "max":
        return f"max {rule.max:g}"
    assert rule.values is not None
    names = ", ".join(rule.values[:12]) + (", ..." if len(rule.values) > 12 else "")
    return f"one of [{names}]"


def _unique_check(key: str) -> Callable[[object], pl.LazyFrame]:
    def check(data: object) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe  # type: ignore[attr-defined]
        # Fast path: as many distinct hashes as rows means no duplicate at all (equal values
        # hash equal); only a batch with a duplicate (or a collision) takes the exact path.
        counts = frame.select(
            pl.col(key).hash().n_unique().alias("n"), pl.len().alias("len")
        ).collect()
        if counts["n"][0] == counts["len"][0]:
            return frame.select(pl.repeat(True, pl.len()).alias(key))
        return frame.select((~pl.col(key).is_duplicated()) | pl.col(key).is_null())

    return check


def _expr_check(expr: pl.Expr, name: str) -> Callable[[object], pl.LazyFrame]:
    def check(data: object) -> pl.LazyFrame:
        frame: pl.LazyFrame = data.lazyframe  # type: ignore[attr-defined]
        return frame.select(expr.fill_null(True).alias(name))

    return check


def _operand_expr(operand: Operand) -> pl.Expr:
    if operand.column is None:
        return pl.lit(operand.number)
    expr = pl.col(operand.name)
    match operand.func:
        case "hour":
            return expr.dt.hour().cast(pl.Int64)
        case "day":
            return expr.dt.day().cast(pl.Int64)
        case "weekday":
            return expr.dt.weekday().cast(pl.Int64)
        case "date":
            return expr.dt.date()
        case "abs":
            return expr.abs()
    return expr


_OPS: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def reference_column(table: str) -> str:
    """Helper column that is true where a row's reference into `table` was found."""
    return f"__found.{table}"


@dataclass
class CheckContext:
    """What the checks need beyond the batch: the ingest time and the keys already stored."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    existing_ids: pl.Series | None = None


def _column_checks(
    name: str, rule: ColumnRule, table: TableSpec, ctx: CheckContext
) -> dict[str, list[pa.Check]]:
    """Value checks of one column, by severity."""
    value: list[pa.Check] = []
    if rule.min is not None:
        value.append(pa.Check.ge(rule.min, error=_label(rule, "min")))
    if rule.max is not None:
        value.append(pa.Check.le(rule.max, error=_label(rule, "max")))
    if rule.values is not None:
        value.append(pa.Check.isin(rule.values, error=_label(rule, "values")))
    if rule.type == "float" and rule.finite:
        value.append(pa.Check(_expr_check(pl.col(name).is_finite(), name), error="finite"))
    if rule.type in ("string", "category"):
        too_long = pl.col(name).str.len_bytes() <= rule.max_length
        value.append(pa.Check(_expr_check(too_long, name), error=f"length <= {rule.max_length}"))
    if rule.unique or name == table.id:
        value.append(pa.Check(_unique_check(name), error="unique"))
    if name == table.id and ctx.existing_ids is not None and ctx.existing_ids.len():
        seen = ctx.existing_ids
        value.append(
            pa.Check(_expr_check(~pl.col(name).is_in(seen), name), error="not already ingested")
        )
    checks: dict[str, list[pa.Check]] = {"hard": [], "soft": []}
    checks[rule.severity] += value
    if rule.type == "datetime":
        bounds = table.contract.timestamps
        latest = ctx.now + bounds.max_future
        checks[bounds.severity] += [
            pa.Check.ge(bounds.min, error=f"not before {bounds.min.isoformat()}"),
            pa.Check.le(
                latest, error=f"not after ingest time + {duration_text(bounds.max_future)}"
            ),
        ]
    return checks


def pandera_schemas(
    table: TableSpec, ctx: CheckContext | None = None
) -> dict[str, pa.DataFrameSchema]:
    """The table's contract as two pandera (Polars) schemas: `hard` and `soft` rules.

    The hard schema also checks every declared column's dtype. Row rules and reference checks
    read helper columns (`<table>.<column>`, `__found.<table>`) that `attach_references` adds.
    """
    ctx = ctx or CheckContext()
    columns: dict[str, dict[str, pa.Column]] = {"hard": {}, "soft": {}}
    for name, rule in table.columns.items():
        checks = _column_checks(name, rule, table, ctx)
        # The null check has the column's severity, except that a key is never null.
        null_severity = "hard" if name == table.id else rule.severity
        columns["hard"][name] = pa.Column(
            _DTYPES[rule.type],
            checks=checks["hard"],
            nullable=rule.nullable or null_severity == "soft",
        )
        soft_null_check = null_severity == "soft" and not rule.nullable
        if checks["soft"] or soft_null_check:
            columns["soft"][name] = pa.Column(
                None, checks=checks["soft"], nullable=not soft_null_check
            )
    for ref in table.contract.references:
        found = pl.col(reference_column(ref.table))
        check = pa.Check(
            _expr_check(found, ref.column), error=f"references {ref.table}.{ref.target_key}"
        )
        _add(columns[ref.severity], ref.column, check)
    for row_rule in table.contract.rules:
        left, op, right = row_rule.operands
        expr = _OPS[op](_operand_expr(left), _operand_expr(right))
        check = pa.Check(_expr_check(expr, left.name), error=f"{row_rule.name}: {row_rule.check}")
        _add(columns[row_rule.severity], left.name, check)
    return {
        severity: pa.DataFrameSchema(cols, strict=False, name=f"{table.table}:{severity}")
        for severity, cols in columns.items()
    }


def _add(columns: dict[str, pa.Column], name: str, check: pa.Check) -> None:
    if name in columns:
        columns[name] = columns[name].set_checks([*columns[name].checks, check])
    else:
        columns[name] = pa.Column(None, checks=[check], nullable=True)


def attach_references(
    frame: pl.DataFrame, table: TableSpec, targets: Mapping[str, pl.DataFrame]
) -> pl.DataFrame:
    """Add, per reference, the referenced table's columns (`<table>.<column>`) and a found flag.

    Args:
        frame: The typed batch.
        table: Its spec.
        targets: Referenced table name -> its rows (the key and the columns rules need).
    """
    for ref in table.contract.references:
        target = targets[ref.table]
        renamed = target.unique(ref.target_key, keep="first").rename(
            {c: f"{ref.table}.{c}" for c in target.columns if c != ref.target_key}
        )
        renamed = renamed.with_columns(pl.lit(True).alias(reference_column(ref.table)))
        frame = frame.join(
            renamed, left_on=ref.column, right_on=ref.target_key, how="left",
            maintain_order="left", coalesce=True,
        ).with_columns(pl.col(reference_column(ref.table)).fill_null(False))  # fmt: skip
    return frame


def referenced_columns(table: TableSpec) -> dict[str, list[str]]:
    """Referenced table -> the columns of it the contract needs (its key first)."""
    needed: dict[str, list[str]] = {
        ref.table: [ref.target_key] for ref in table.contract.references
    }
    for rule in table.contract.rules:
        for operand in rule.operands[::2]:
            if operand.table and operand.column not in needed[operand.table]:
                needed[operand.table].append(operand.column)
    return needed


@dataclass
class ValidationResult:
    """What the contract said about a typed batch.

    Attributes:
        hard: Failures of hard rules (the batch must be rejected if any).
        soft_rows: One row per (failing row, soft rule): `index` (position in the batch),
            `column`, `rule`, `value`.
        warnings: Batch-level findings that do not stop the batch (e.g. staleness).
    """

    hard: list[Violation]
    soft_rows: pl.DataFrame
    warnings: list[Violation] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        """Number of distinct rows failing a soft rule."""
        return self.soft_rows.get_column("index").n_unique() if self.soft_rows.height else 0


_EMPTY_FAILURES = pl.DataFrame(
    schema={"index": pl.Int64, "column": pl.Utf8, "rule": pl.Utf8, "value": pl.Utf8}
)
_PANDERA_RULES = {"not_nullable": "not null", "field_uniqueness": "unique"}


def _failures(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame:
    """pandera failure cases as (index, column, rule, value); index null for column-level."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    except SchemaError as exc:  # pragma: no cover - lazy=True collects into SchemaErrors
        cases = exc.failure_cases  # type: ignore[assignment]
    else:
        return _EMPTY_FAILURES
    rule = pl.col("check").replace(_PANDERA_RULES)
    rule = (
        pl.when(pl.col("check").str.starts_with("dtype("))
        .then(pl.lit("type ") + pl.col("check"))
        .otherwise(rule)
    )
    return cases.select(
        pl.col("index").cast(pl.Int64),
        pl.col("column").fill_null("(row)"),
        rule.alias("rule"),
        pl.col("failure_case").cast(pl.Utf8).alias("value"),
    )


def _violations(
    failures: pl.DataFrame, frame: pl.DataFrame, sources: Sequence[str], severity: str, limit: int
) -> list[Violation]:
    """Example violations (at most `limit` per rule) with their file and row."""
    if failures.is_empty():
        return []
    examples = failures.filter(pl.int_range(pl.len()).over("column", "rule") < limit)
    has_origin = ROW in frame.columns and SOURCE in frame.columns
    result = []
    for index, column, rule, value in examples.iter_rows():
        source, row = "", None
        if index is not None and has_origin:
            src_index, row = frame.get_column(SOURCE)[index], frame.get_column(ROW)[index]
            source = sources[src_index] if src_index is not None else ""
        elif index is not None:
            row = index + 1
        result.append(Violation(column, rule, shown(value), row, source, severity))
    return result


def count_by_rule(failures: pl.DataFrame) -> dict[tuple[str, str], int]:
    """(column, rule) -> number of failing rows."""
    if failures.is_empty():
        return {}
    grouped = failures.group_by("column", "rule").len()
    return {(c, r): n for c, r, n in grouped.iter_rows()}


def validate(
    frame: pl.DataFrame,
    table: TableSpec,
    *,
    context: CheckContext | None = None,
    sources: Sequence[str] = (),
) -> tuple[ValidationResult, list[RuleResult]]:
    """Check a typed batch (with reference columns attached) against its contract.

    Args:
        frame: The typed batch; may carry `__source`/`__row` helper columns for messages.
        table: Its spec.
        context: Ingest time and keys already stored.
        sources: File names by `__source` index.

    Returns:
        The validation result and a per-rule summary (failures counted, examples kept).
    """
    ctx = context or CheckContext()
    schemas = pandera_schemas(table, ctx)
    with ThreadPoolExecutor(max_workers=2) as pool:  # Polars releases the GIL
        hard_future = pool.submit(_failures, schemas["hard"], frame)
        soft_cases = _failures(schemas["soft"], frame)
        hard_cases = hard_future.result()
    # A soft check that fails on a whole column (no row index) cannot quarantine rows.
    column_level = soft_cases.filter(pl.col("index").is_null())
    hard_cases = pl.concat([hard_cases, column_level])
    soft_cases = soft_cases.filter(pl.col("index").is_not_null())
    hard = _violations(hard_cases, frame, sources, "hard", EXAMPLES)
    results = [
        RuleResult(c, r, "hard", n, [v for v in hard if (v.column, v.rule) == (c, r)])
        for (c, r), n in count_by_rule(hard_cases).items()
    ]
    soft_examples = _violations(soft_cases, frame, sources, "soft", EXAMPLES)
    results += [
        RuleResult(c, r, "soft", n, [v for v in soft_examples if (v.column, v.rule) == (c, r)])
        for (c, r), n in count_by_rule(soft_cases).items()
    ]
    warnings = []
    freshness = table.contract.freshness
    if freshness is not None and frame.height:
        newest = frame.get_column(table.timestamp).max()
        if newest is None or newest < ctx.now - freshness.max_age:  # type: ignore[operator]
            stale = Violation(
                table.timestamp,
                f"fresh: newest within {duration_text(freshness.max_age)} of ingest time",
                None if newest is None else str(newest),
                None,
                severity="hard" if freshness.severity == "hard" else "warn",
            )
            if freshness.severity == "hard":
                hard.insert(0, stale)
            else:
                warnings.append(stale)
            results.append(RuleResult(stale.column, stale.rule, stale.severity, 1, [stale]))
    return ValidationResult(hard, soft_cases, warnings), results


def check_batch(frame: pl.DataFrame, table: TableSpec, *, source: str = "") -> list[Violation]:
    """Every contract violation of one typed file, hard and soft (empty list when clean).

    References to other tables (and the row rules that use them) need the stores and are only
    checked by the ingest.
    """
    contract = table.contract
    local_rules = [r for r in contract.rules if not any(o.table for o in r.operands[::2])]
    local = table.model_copy(
        update={"contract": contract.model_copy(update={"references": [], "rules": local_rules})}
    )
    result, _ = validate(frame, local)
    soft = _violations(result.soft_rows, frame, [], "soft", frame.height or 1)
    return [
        Violation(v.column, v.rule, v.value, v.row, source, v.severity)
        for v in [*result.hard, *soft]
    ]

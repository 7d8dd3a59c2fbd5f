"""Data contracts: read a raw batch into the declared types and check it against the spec.

The contract of a table is the `columns` block of its `TableSpec`. Reading casts every declared
column to its type and reports values that do not parse; checking runs pandera's Polars API on
the data itself (types, nulls, ranges, categories, uniqueness). Every failure names the column,
the rule, the offending value and the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from loopline.spec import ColumnRule, TableSpec

_DTYPES: dict[str, pl.DataType] = {
    "string": pl.Utf8(),
    "category": pl.Utf8(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us", "UTC"),
}
READERS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "ndjson", ".json": "ndjson"}


@dataclass(frozen=True)
class Violation:
    """One broken rule: which column, which rule, which value, which row (or None)."""

    column: str
    rule: str
    value: str | None
    row: int | None
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source} " if self.source else ""
        row = f"row {self.row}" if self.row is not None else "batch"
        return f"{where}{row}: column '{self.column}' breaks '{self.rule}' (value {self.value!r})"


class ContractError(ValueError):
    """A batch broke its contract; nothing was written. `violations` lists every failure."""

    def __init__(self, table: str, violations: list[Violation]) -> None:
        self.table = table
        self.violations = violations
        shown = "; ".join(str(v) for v in violations[:5])
        more = f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(
            f"batch for '{table}' rejected, {len(violations)} violation(s): {shown}{more}"
        )


def polars_schema(table: TableSpec) -> dict[str, pl.DataType]:
    """Declared column -> Polars dtype, in declaration order."""
    return {name: _DTYPES[rule.type] for name, rule in table.columns.items()}


def _cast(frame: pl.DataFrame, name: str, rule: ColumnRule) -> pl.Expr:
    column = pl.col(name)
    if rule.type == "datetime":
        if frame.schema[name] == pl.Utf8:
            return column.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
        return column.cast(pl.Datetime("us", "UTC"), strict=False)
    if rule.type == "bool" and frame.schema[name] == pl.Utf8:
        return column.str.to_lowercase().replace_strict(
            {"true": True, "false": False, "1": True, "0": False}, default=None
        )
    return column.cast(_DTYPES[rule.type], strict=False)


def read_batch(path: Path, table: TableSpec) -> pl.DataFrame:
    """Read one raw file into the declared columns and types.

    Raises:
        ContractError: the format is unknown, declared columns are missing, or values do
            not parse as their declared type.
    """
    fmt = READERS.get(path.suffix.lower())
    if fmt is None:
        rule = f"file type one of {sorted(READERS)}"
        raise ContractError(table.table, [Violation("(file)", rule, path.suffix, None, path.name)])
    try:
        if fmt == "csv":
            raw = pl.read_csv(path, infer_schema=False)
        elif fmt == "parquet":
            raw = pl.read_parquet(path)
        else:
            raw = pl.read_ndjson(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ContractError(
            table.table, [Violation("(file)", f"readable {fmt}", str(exc)[:200], None, path.name)]
        ) from exc
    missing = [name for name in table.columns if name not in raw.columns]
    if missing:
        raise ContractError(
            table.table,
            [Violation(name, "column present", None, None, path.name) for name in missing],
        )
    typed = raw.select([_cast(raw, name, rule).alias(name) for name, rule in table.columns.items()])
    violations = []
    for name, rule in table.columns.items():
        bad = raw.with_row_index("_row").filter(
            pl.col(name).is_not_null() & typed.get_column(name).is_null()
        )
        violations += [
            Violation(name, f"parses as {rule.type}", str(value), row, path.name)
            for row, value in bad.select("_row", name).head(20).iter_rows()
        ]
    if violations:
        raise ContractError(table.table, violations)
    return typed


def pandera_schema(table: TableSpec) -> pa.DataFrameSchema:
    """The pandera (Polars) schema equivalent to a table's contract."""
    columns = {}
    for name, rule in table.columns.items():
        checks = []
        if rule.min is not None:
            checks.append(pa.Check.ge(rule.min))
        if rule.max is not None:
            checks.append(pa.Check.le(rule.max))
        if rule.values is not None:
            checks.append(pa.Check.isin(rule.values))
        columns[name] = pa.Column(
            _DTYPES[rule.type], checks=checks, nullable=rule.nullable, unique=rule.unique
        )
    return pa.DataFrameSchema(columns, strict=False, name=table.table)


def check_batch(frame: pl.DataFrame, table: TableSpec, *, source: str = "") -> list[Violation]:
    """Every contract violation of a typed batch (empty list when it is clean)."""
    try:
        pandera_schema(table).validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        return [
            Violation(
                column=str(case["column"]),
                rule=str(case["check"]),
                value=None if case["failure_case"] is None else str(case["failure_case"]),
                row=case["index"],
                source=source,
            )
            for case in cases.iter_rows(named=True)
        ]
    return []

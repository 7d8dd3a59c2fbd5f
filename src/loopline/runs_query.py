"""Search and compare runs: a small query language over params, metrics, tags and run fields.

    metrics.roc_auc > 0.9 and params.num_leaves = 63 and tags.use_case = 'fraud'
      and status = 'succeeded' and kind in ('train', 'tune-trial') and started_at >= '2026-11-01'

The query is tokenized and parsed by recursive descent into a small tree, checked against the
fields it names (with the position of the offending token in every error), and translated into
SQLAlchemy expressions whose values are all bound parameters: no user text is ever pasted into
SQL. Metric, param and tag conditions are semi-joins on (key, value) indexes, and a metric,
param or tag sort reads runs in that key's index order, so a search stays fast with 100,000
runs in the store (bench/runs_query.py).

Grammar (keywords are case-insensitive)::

    query      := [or_expr]
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | condition
    condition  := field op value
                | field ["not"] "in" "(" value ("," value)* ")"
                | field ["not"] ("like" | "ilike") string
                | field "is" ["not"] "null"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    field      := metrics.KEY | params.KEY | tags.KEY | a run field (see RUN_FIELDS)
    value      := 'text' | "text" | number | true | false

Keys are dotted names (`params.training.num_leaves`); a segment with other characters goes in
backticks (params.`max-depth`). `metrics.KEY` is a run's final value of that metric (for a key
logged at several final steps, the highest step's). `params.KEY` compares numerically against a
number and as text against a string. Conditions on metrics, params and tags hold only for runs
that have the key (`metrics.auc != 0.5` skips runs without `auc`); `is null` selects runs
without it. In `like` patterns `%` matches any text and `_` one character (`\\%`, `\\_` match
them literally); `like` is case-sensitive, `ilike` is not. Time fields take ISO 8601 text
('2026-11-01', '2026-11-01T08:00:00+01:00'; no zone means UTC) or a relative age such as
'-7d', '-12h', '-30m'.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import polars as pl
from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased
from sqlalchemy.sql.expression import ScalarSelect

from loopline.store import Store
from loopline.store.tables import (
    Artifact,
    DatasetVersion,
    ModelVersion,
    ModelVersionDataset,
    Run,
    RunArtifact,
    RunMetric,
    RunParam,
    RunTag,
)
from loopline.tracking import RUN_STATUSES, flatten_params, reap_runs

MAX_QUERY_CHARS = 4000
MAX_CONDITIONS = 64
MAX_DEPTH = 16
MAX_IN_VALUES = 500
MAX_PAGE = 1000
MAX_COMPARE = 50


class QueryError(ValueError):
    """A run query, sort order or page token that cannot be used, with where it went wrong."""

    def __init__(self, message: str, *, position: int | None = None, token: str | None = None):
        self.reason = message
        self.position = position
        self.token = token
        where = ""
        if position is not None:
            near = f" near {token!r}" if token else ""
            where = f" at position {position + 1}{near}"
        super().__init__(f"invalid run query{where}: {message}")


class RunNotFoundError(LookupError):
    """No run has this id (or id prefix), or the prefix matches several runs."""


# --- tokens ------------------------------------------------------------------------------------

TokenKind = Literal["field", "string", "number", "op", "lparen", "rparen", "comma", "kw", "end"]
KEYWORDS = frozenset({"and", "or", "not", "in", "like", "ilike", "is", "null", "true", "false"})
_OPERATORS = ("==", "!=", "<>", "<=", ">=", "=", "<", ">")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SEGMENT = re.compile(r"[A-Za-z0-9_]+")
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*([smhdw])$")


@dataclass(frozen=True)
class Token:
    """One lexical token: its kind, value (key segments for fields) and offset in the query."""

    kind: TokenKind
    text: str
    position: int
    value: Any = None


def _string(query: str, start: int) -> tuple[str, int]:
    quote = query[start]
    out: list[str] = []
    i = start + 1
    while i < len(query):
        char = query[i]
        if char == quote:
            if query[i + 1 : i + 2] == quote:  # a doubled quote is one quote character
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise QueryError(
        f"text starting with {quote} is never closed", position=start, token=query[start:][:20]
    )


def _field(query: str, start: int) -> tuple[list[str], bool, int]:
    """Read a dotted name; returns (segments, any_backticked, end)."""
    segments: list[str] = []
    quoted = False
    i = start
    while True:
        if i < len(query) and query[i] == "`":
            end = query.find("`", i + 1)
            if end < 0:
                raise QueryError(
                    "backticked name is never closed", position=i, token=query[i:][:20]
                )
            if end == i + 1:
                raise QueryError("empty backticked name", position=i, token="``")
            segments.append(query[i + 1 : end])
            quoted = True
            i = end + 1
        else:
            match = _SEGMENT.match(query, i)
            if match is None:
                bad = query[i] if i < len(query) else "end of query"
                raise QueryError("expected a name after '.'", position=i, token=bad)
            segments.append(match.group())
            i = match.end()
        if i < len(query) and query[i] == ".":
            i += 1  # a dot always continues the name
            continue
        return segments, quoted, i


def _scan(query: str) -> Iterator[Token]:
    """Tokens of a query, one at a time (so errors come in reading order), then `end`."""
    i = 0
    while True:
        while i < len(query) and query[i].isspace():
            i += 1
        if i >= len(query):
            yield Token("end", "", i)
            return
        char = query[i]
        if char == "(":
            yield Token("lparen", char, i)
            i += 1
        elif char == ")":
            yield Token("rparen", char, i)
            i += 1
        elif char == ",":
            yield Token("comma", char, i)
            i += 1
        elif char in "=!<>":
            op = next((o for o in _OPERATORS if query.startswith(o, i)), None)
            if op is None:
                raise QueryError(f"unknown operator {char!r}", position=i, token=char)
            yield Token("op", op, i, {"==": "=", "<>": "!="}.get(op, op))
            i += len(op)
        elif char in "'\"":
            value, end = _string(query, i)
            yield Token("string", query[i:end], i, value)
            i = end
        elif char.isdigit() or (char in "+-." and _NUMBER.match(query, i)):
            match = _NUMBER.match(query, i)
            if match is None:  # pragma: no cover - guarded by the condition above
                raise QueryError("bad number", position=i, token=char)
            end = match.end()
            if end < len(query) and (query[end].isalnum() or query[end] in "_`."):
                raise QueryError(
                    "a name cannot start with a digit", position=i, token=query[i : end + 1]
                )
            text = match.group()
            number = float(text) if any(c in text for c in ".eE") else int(text)
            if not math.isfinite(number):
                raise QueryError("number out of range", position=i, token=text)
            yield Token("number", text, i, number)
            i = end
        elif (char.isascii() and char.isalpha()) or char in "_`":
            segments, quoted, end = _field(query, i)
            text = query[i:end]
            if len(segments) == 1 and not quoted and text.lower() in KEYWORDS:
                yield Token("kw", text, i, text.lower())
            else:
                yield Token("field", text, i, tuple(segments))
            i = end
        else:
            hint = " (statements cannot be chained)" if char == ";" else ""
            raise QueryError(f"unexpected character {char!r}{hint}", position=i, token=char)


def tokenize(query: str) -> list[Token]:
    """Split a query into tokens, ending with an `end` token.

    Raises:
        QueryError: On a character no token starts with (';', '-', '*', ...), an unclosed
            quote or backtick, or a number glued to a name.
    """
    return list(_scan(query))


# --- syntax tree -------------------------------------------------------------------------------

FieldKind = Literal["column", "metric", "param", "tag"]


@dataclass(frozen=True)
class FieldRef:
    """A field a condition or sort names: a run column, or a metric, param or tag key."""

    kind: FieldKind
    name: str
    position: int
    text: str


@dataclass(frozen=True)
class Value:
    """A literal: text, a number or a boolean."""

    value: str | int | float | bool
    position: int
    text: str

    @property
    def is_text(self) -> bool:
        return isinstance(self.value, str)

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, int | float) and not isinstance(self.value, bool)


@dataclass(frozen=True)
class Condition:
    """`field op value(s)`; op is one of = != < <= > >= in, not in, like, not like, ilike,
    not ilike, is null, is not null."""

    field: FieldRef
    op: str
    values: tuple[Value, ...]
    position: int


@dataclass(frozen=True)
class BoolOp:
    """`and` / `or` over two or more parts."""

    op: Literal["and", "or"]
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Negation:
    """`not part`."""

    part: Node


Node = Condition | BoolOp | Negation

_PREFIXES: dict[str, FieldKind] = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "tags": "tag",
    "tag": "tag",
}
_ATTRIBUTE_PREFIXES = ("attributes", "attribute", "run")

ColumnType = Literal["text", "status", "time", "number", "bool"]
RUN_FIELDS: dict[str, tuple[InstrumentedAttribute[Any], ColumnType]] = {
    "id": (Run.id, "text"),
    "name": (Run.name, "text"),
    "kind": (Run.kind, "text"),
    "status": (Run.status, "status"),
    "use_case": (Run.use_case, "text"),
    "started_at": (Run.started_at, "time"),
    "ended_at": (Run.ended_at, "time"),
    "heartbeat_at": (Run.heartbeat_at, "time"),
    "duration_s": (Run.duration_s, "number"),
    "peak_memory_mb": (Run.peak_memory_mb, "number"),
    "parent_run_id": (Run.parent_run_id, "text"),
    "prefect_flow_run_id": (Run.prefect_flow_run_id, "text"),
    "git_commit": (Run.git_commit, "text"),
    "git_dirty": (Run.git_dirty, "bool"),
    "lock_hash": (Run.lock_hash, "text"),
    "host": (Run.host, "text"),
    "pid": (Run.pid, "number"),
    "notes": (Run.notes, "text"),
    "error": (Run.error, "text"),
}
"""The run fields a query can name, with their value type."""
_FIELD_ALIASES = {"parent": "parent_run_id", "flow_run_id": "prefect_flow_run_id"}
_EXAMPLE_FIELDS = "metrics.roc_auc, params.num_leaves, tags.use_case, status, kind, started_at"


def _field_ref(token: Token) -> FieldRef:
    segments: tuple[str, ...] = token.value
    head = segments[0]
    if head in _PREFIXES:
        if len(segments) == 1:
            example = {"metric": "roc_auc", "param": "num_leaves", "tag": "team"}[_PREFIXES[head]]
            raise QueryError(
                f"'{head}' needs a key, e.g. {head}.{example}",
                position=token.position,
                token=token.text,
            )
        return FieldRef(_PREFIXES[head], ".".join(segments[1:]), token.position, token.text)
    if head in _ATTRIBUTE_PREFIXES and len(segments) == 2:
        segments = segments[1:]
    name = ".".join(segments)
    name = _FIELD_ALIASES.get(name, name)
    if name not in RUN_FIELDS:
        raise QueryError(
            f"unknown field '{token.text}' (run fields: {', '.join(RUN_FIELDS)}; "
            "or metrics.KEY, params.KEY, tags.KEY)",
            position=token.position,
            token=token.text,
        )
    return FieldRef("column", name, token.position, token.text)


class _Parser:
    """Recursive descent with one token of lookahead, pulled lazily from the scanner: the
    first problem in reading order is the one reported."""

    def __init__(self, query: str) -> None:
        self.stream = _scan(query)
        self.current = next(self.stream)
        self.conditions = 0
        self.depth = 0

    @property
    def peek(self) -> Token:
        return self.current

    def take(self) -> Token:
        token = self.current
        if token.kind != "end":
            self.current = next(self.stream)
        return token

    def is_kw(self, *words: str) -> bool:
        return self.peek.kind == "kw" and self.peek.value in words

    def fail(self, expected: str, token: Token | None = None) -> QueryError:
        token = token or self.peek
        got = "the end of the query" if token.kind == "end" else f"{token.kind} {token.text!r}"
        return QueryError(
            f"expected {expected}, got {got}",
            position=token.position,
            token=token.text or None,
        )

    def parse(self) -> Node | None:
        if self.peek.kind == "end":
            return None
        node = self.or_expr()
        if self.peek.kind != "end":
            raise self.fail("'and', 'or' or the end of the query")
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.is_kw("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_expr(self) -> Node:
        parts = [self.not_expr()]
        while self.is_kw("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def not_expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(
                f"nested deeper than {MAX_DEPTH} levels",
                position=self.peek.position,
                token=self.peek.text or None,
            )
        try:
            if self.is_kw("not"):
                self.take()
                return Negation(self.not_expr())
            if self.peek.kind == "lparen":
                self.take()
                node = self.or_expr()
                if self.peek.kind != "rparen":
                    raise self.fail("')'")
                self.take()
                return node
            return self.condition()
        finally:
            self.depth -= 1

    def value(self) -> Value:
        token = self.take()
        if token.kind in ("string", "number"):
            return Value(token.value, token.position, token.text)
        if token.kind == "kw" and token.value in ("true", "false"):
            return Value(token.value == "true", token.position, token.text)
        if token.kind == "kw" and token.value == "null":
            raise QueryError(
                "compare with null using 'is null' or 'is not null'",
                position=token.position,
                token=token.text,
            )
        raise self.fail("a value ('text', a number, true or false)", token)

    def condition(self) -> Condition:
        token = self.peek
        if token.kind != "field":
            raise self.fail(f"a field such as {_EXAMPLE_FIELDS}")
        self.take()
        ref = _field_ref(token)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise QueryError(
                f"more than {MAX_CONDITIONS} conditions",
                position=token.position,
                token=token.text,
            )
        if self.peek.kind == "op":
            op = self.take().value
            return Condition(ref, op, (self.value(),), token.position)
        negated = False
        if self.is_kw("is"):
            self.take()
            if self.is_kw("not"):
                self.take()
                negated = True
            if not self.is_kw("null"):
                raise self.fail("'null' after 'is'")
            self.take()
            return Condition(ref, "is not null" if negated else "is null", (), token.position)
        if self.is_kw("not"):
            self.take()
            negated = True
            if not self.is_kw("in", "like", "ilike"):
                raise self.fail("'in', 'like' or 'ilike' after 'not'")
        if self.is_kw("in"):
            self.take()
            if self.peek.kind != "lparen":
                raise self.fail("'(' after 'in'")
            self.take()
            values = [self.value()]
            while self.peek.kind == "comma":
                self.take()
                values.append(self.value())
                if len(values) > MAX_IN_VALUES:
                    raise QueryError(
                        f"more than {MAX_IN_VALUES} values in one 'in' list",
                        position=values[-1].position,
                        token=values[-1].text,
                    )
            if self.peek.kind != "rparen":
                raise self.fail("',' or ')' in the 'in' list")
            self.take()
            return Condition(ref, "not in" if negated else "in", tuple(values), token.position)
        if self.is_kw("like", "ilike"):
            word = self.take().value
            pattern = self.value()
            if not pattern.is_text:
                raise QueryError(
                    f"'{word}' needs a quoted pattern, e.g. name {word} 'lgbm-%'",
                    position=pattern.position,
                    token=pattern.text,
                )
            op = f"not {word}" if negated else word
            return Condition(ref, op, (pattern,), token.position)
        raise self.fail("an operator (=, !=, <, <=, >, >=, in, like, ilike, is null)")


def parse_query(query: str) -> Node | None:
    """Parse a run query into its syntax tree (None for an empty query).

    Raises:
        QueryError: Naming the offending token and its position.
    """
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    return _Parser(query).parse()


# --- translation to SQL ------------------------------------------------------------------------

_ORDERING = ("<", "<=", ">", ">=")


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (UTC when no zone is given), or a relative age like '-7d'."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    parsed = datetime.fromisoformat(text.strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _bad(value: Value | FieldRef, message: str) -> QueryError:
    return QueryError(message, position=value.position, token=value.text)


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    match op:
        case "=":
            return column == value
        case "!=":
            return column != value
        case "<":
            return column < value
        case "<=":
            return column <= value
        case ">":
            return column > value
        case ">=":
            return column >= value
    raise AssertionError(op)  # pragma: no cover


def _like_to_glob(pattern: str) -> str:
    out = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            literal = next(chars, "\\")
            out.append({"*": "[*]", "?": "[?]", "[": "[[]"}.get(literal, literal))
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append({"*": "[*]", "?": "[?]", "[": "[[]"}.get(char, char))
    return "".join(out)


@dataclass
class _Compiler:
    dialect: str
    now: datetime

    def has(self, run_id: Any, *conditions: Any) -> ColumnElement[bool]:
        """Runs with a row in a key/value table (metrics, params, tags) meeting conditions.

        Written `runs.id IN (SELECT run_id ... WHERE key = :k AND value <op> :v)`: the matching
        range of a (key, value) index is read once. A correlated EXISTS is the same semi-join,
        and PostgreSQL plans both alike, but SQLite runs EXISTS once per candidate run.
        Measured on 100,000 runs (bench/runs_query.py): EXISTS took 400-500 ms where IN took
        2-7 ms (a selective param, an `or`), and won only where many runs match and the page
        fills early (25 ms against 120 ms). IN has no such cliff, with or without ANALYZE.
        """
        return Run.id.in_(select(run_id).where(*conditions))

    def like(self, column: Any, op: str, pattern: str) -> ColumnElement[bool]:
        if op.endswith("ilike"):
            return column.ilike(pattern, escape="\\")
        if self.dialect == "sqlite":  # SQLite's LIKE ignores case; GLOB does not
            return column.op("GLOB", is_comparison=True)(_like_to_glob(pattern))
        return column.like(pattern, escape="\\")

    def node(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, BoolOp):
            parts = [self.node(part) for part in node.parts]
            return and_(*parts) if node.op == "and" else or_(*parts)
        if isinstance(node, Negation):
            return not_(self.node(node.part))
        return self.condition(node)

    def condition(self, cond: Condition) -> ColumnElement[bool]:
        kind = cond.field.kind
        if kind == "column":
            return self.column(cond)
        if kind == "metric":
            return self.metric(cond)
        if kind == "param":
            return self.param(cond)
        return self.tag(cond)

    # run columns

    def column(self, cond: Condition) -> ColumnElement[bool]:
        column, ctype = RUN_FIELDS[cond.field.name]
        name = cond.field.name
        if cond.op == "is null":
            return column.is_(None)
        if cond.op == "is not null":
            return column.is_not(None)
        if cond.op.endswith("like"):
            if ctype not in ("text", "status"):
                raise _bad(cond.field, f"'{cond.op}' works on text fields, not on {name}")
            like = self.like(column, cond.op, str(cond.values[0].value))
            return not_(like) if cond.op.startswith("not") else like
        values = [self.column_value(name, ctype, v, cond.op) for v in cond.values]
        if cond.op in ("in", "not in"):
            expr = column.in_(values)
            return column.not_in(values) if cond.op == "not in" else expr
        return _compare(column, cond.op, values[0])

    def column_value(self, name: str, ctype: ColumnType, value: Value, op: str) -> Any:
        if ctype in ("text", "status"):
            if op in _ORDERING:
                raise _bad(value, f"'{op}' does not apply to the text field {name}; use = or in")
            if not value.is_text:
                raise _bad(value, f"{name} is text: quote the value, e.g. {name} = 'train'")
            if ctype == "status" and value.value not in RUN_STATUSES:
                raise _bad(
                    value,
                    f"unknown status {value.value!r} (one of: {', '.join(RUN_STATUSES)})",
                )
            return value.value
        if ctype == "time":
            if not value.is_text:
                raise _bad(value, f"{name} takes a quoted time, e.g. {name} >= '2026-11-01'")
            try:
                return parse_time(str(value.value), now=self.now)
            except ValueError:
                raise _bad(
                    value,
                    f"{value.text} is not a time: use ISO 8601 ('2026-11-01', "
                    "'2026-11-01T08:00:00Z') or an age such as '-7d'",
                ) from None
        if ctype == "number":
            if not value.is_number:
                raise _bad(value, f"{name} is a number, e.g. {name} > 10")
            return value.value
        if not isinstance(value.value, bool):
            raise _bad(value, f"{name} is true or false, e.g. {name} = true")
        if op not in ("=", "!=", "in", "not in"):
            raise _bad(value, f"'{op}' does not apply to the true/false field {name}")
        return value.value

    # metrics: the final value of a key (the highest final step)

    def metric(self, cond: Condition) -> ColumnElement[bool]:
        key = cond.field.name
        m = aliased(RunMetric)
        later = aliased(RunMetric)
        superseded = (
            select(later.id)
            .where(
                later.run_id == m.run_id,
                later.key == m.key,
                later.is_final == True,  # noqa: E712 (an index-friendly '= true')
                later.step > m.step,
            )
            .exists()
        )
        base = [m.key == key, m.is_final == True, ~superseded]  # noqa: E712
        if cond.op == "is null":
            return ~self.has(m.run_id, *base)
        if cond.op == "is not null":
            return self.has(m.run_id, *base)
        if cond.op.endswith("like"):
            raise _bad(cond.field, f"metrics are numbers: '{cond.op}' does not apply to {key}")
        numbers = []
        for value in cond.values:
            if not value.is_number:
                raise _bad(value, f"metrics are numbers: compare {cond.field.text} with one")
            numbers.append(value.value)
        if cond.op == "in":
            match = m.value.in_(numbers)
        elif cond.op == "not in":
            match = m.value.not_in(numbers)
        else:
            match = _compare(m.value, cond.op, numbers[0])
        return self.has(m.run_id, *base, match)

    # params: numbers against value_num, text against value_text

    def param(self, cond: Condition) -> ColumnElement[bool]:
        p = aliased(RunParam)
        base = [p.key == cond.field.name]
        if cond.op == "is null":
            return ~self.has(p.run_id, *base, p.value_text.is_not(None))
        if cond.op == "is not null":
            return self.has(p.run_id, *base, p.value_text.is_not(None))
        if cond.op.endswith("like"):
            like = self.like(p.value_text, cond.op, str(cond.values[0].value))
            if cond.op.startswith("not"):
                like = and_(p.value_text.is_not(None), not_(like))
            return self.has(p.run_id, *base, like)
        matches = []
        for value in cond.values:
            if cond.op in _ORDERING and not value.is_number:
                raise _bad(value, f"'{cond.op}' compares numbers: {value.text} is not one")
            if value.is_number:
                matches.append((p.value_num, value.value))
            elif isinstance(value.value, bool):
                matches.append((p.value_text, "true" if value.value else "false"))
            else:
                matches.append((p.value_text, value.value))
        if cond.op in ("in", "not in"):
            nums = [v for col, v in matches if col is p.value_num]
            texts = [v for col, v in matches if col is p.value_text]
            if cond.op == "in":
                found = or_(
                    p.value_num.in_(nums) if nums else false(),
                    p.value_text.in_(texts) if texts else false(),
                )
            else:
                found = and_(
                    p.value_text.is_not(None),
                    or_(p.value_num.is_(None), p.value_num.not_in(nums)) if nums else true(),
                    p.value_text.not_in(texts) if texts else true(),
                )
            return self.has(p.run_id, *base, found)
        column, value = matches[0]
        return self.has(p.run_id, *base, _compare(column, cond.op, value))

    # tags: text

    def tag(self, cond: Condition) -> ColumnElement[bool]:
        t = aliased(RunTag)
        base = [t.key == cond.field.name]
        if cond.op == "is null":
            return ~self.has(t.run_id, *base)
        if cond.op == "is not null":
            return self.has(t.run_id, *base)
        if cond.op.endswith("like"):
            like = self.like(t.value, cond.op, str(cond.values[0].value))
            return self.has(t.run_id, *base, not_(like) if cond.op.startswith("not") else like)
        texts = []
        for value in cond.values:
            if cond.op in _ORDERING:
                raise _bad(value, f"tags are text: '{cond.op}' does not apply; use = or in")
            if isinstance(value.value, bool):
                texts.append("true" if value.value else "false")
            else:
                texts.append(value.value if value.is_text else value.text)
        if cond.op == "in":
            match = t.value.in_(texts)
        elif cond.op == "not in":
            match = t.value.not_in(texts)
        else:
            match = _compare(t.value, cond.op, texts[0])
        return self.has(t.run_id, *base, match)


def compile_query(
    query: str | Node | None, *, dialect: str = "sqlite", now: datetime | None = None
) -> ColumnElement[bool]:
    """The SQLAlchemy WHERE clause over `Run` for a query (true() for an empty one).

    Args:
        query: Query text or an already parsed tree.
        dialect: 'sqlite' or 'postgresql' (case-sensitive `like` differs between them).
        now: The time relative ages ('-7d') count back from (default: now).

    Raises:
        QueryError: Naming the offending token and its position.
    """
    node = parse_query(query or "") if query is None or isinstance(query, str) else query
    if node is None:
        return true()
    return _Compiler(dialect, now or datetime.now(UTC)).node(node)


# --- sorting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SortKey:
    """One key of a sort order: a field and a direction."""

    field: FieldRef
    descending: bool


def parse_order_by(order_by: str) -> list[SortKey]:
    """Parse 'started_at desc', 'metrics.roc_auc desc, duration_s' (at most 3 keys).

    Raises:
        QueryError: On an unknown field or direction.
    """
    tokens = tokenize(order_by)
    keys: list[SortKey] = []
    i = 0
    while True:
        token = tokens[i]
        if token.kind != "field":
            got = "the end" if token.kind == "end" else repr(token.text)
            raise QueryError(
                f"expected a field to sort by (e.g. started_at desc, metrics.roc_auc), got {got}",
                position=token.position,
                token=token.text or None,
            )
        ref = _field_ref(token)
        i += 1
        descending = False
        following = tokens[i]
        if following.kind == "field" and following.text.lower() in ("asc", "desc"):
            descending = following.text.lower() == "desc"
            i += 1
        keys.append(SortKey(ref, descending))
        if tokens[i].kind == "end":
            break
        if tokens[i].kind != "comma":
            raise QueryError(
                "expected 'asc', 'desc', ',' or the end of the sort order",
                position=tokens[i].position,
                token=tokens[i].text,
            )
        i += 1
        if len(keys) == 3:
            raise QueryError(
                "at most 3 sort keys", position=tokens[i].position, token=tokens[i].text
            )
    return keys


# --- page tokens -------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"dt"}:
        return datetime.fromisoformat(value["dt"])
    return value


def _fingerprint(query: str, order_by: str) -> str:
    return hashlib.sha256(f"{query}\x00{order_by}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Cursor:
    """Where a page ended: the phase ('a': runs with the first sort key's value, 'b': runs
    without it), the last run's sort values and its id."""

    phase: str
    values: list[Any]
    run_id: str


def _page_token(query: str, order_by: str, cursor: _Cursor) -> str:
    body = {
        "q": _fingerprint(query, order_by),
        "p": cursor.phase,
        "v": [_encode(v) for v in cursor.values],
        "id": cursor.run_id,
    }
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def _read_page_token(token: str, query: str, order_by: str, width: int) -> _Cursor:
    invalid = QueryError("the page token is not one this API issued")
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = _Cursor(body["p"], [_decode(v) for v in body["v"]], body["id"])
        fingerprint = body["q"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise invalid from None
    if fingerprint != _fingerprint(query, order_by):
        raise QueryError("the page token belongs to another query or sort order")
    if cursor.phase not in ("a", "b") or len(cursor.values) != width:
        raise invalid
    if not isinstance(cursor.run_id, str):
        raise invalid
    for value in cursor.values:
        if not (value is None or isinstance(value, str | int | float | datetime)):
            raise invalid
    return cursor


# --- search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One run in a search result: its fields, final metrics and tags."""

    id: str
    kind: str
    name: str
    status: str
    use_case: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    peak_memory_mb: float | None
    parent_run_id: str | None
    prefect_flow_run_id: str | None
    git_commit: str | None
    git_dirty: bool | None
    notes: str
    error: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as ISO 8601)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["started_at"] = self.started_at.isoformat()
        out["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return out


@dataclass(frozen=True)
class RunPage:
    """One page of a search: the runs and the token for the next page (None on the last)."""

    runs: list[RunRecord]
    next_page_token: str | None

    def to_frame(self) -> pl.DataFrame:
        """The page as a frame: run fields, then one Float64 column per metric key."""
        schema = {
            "id": pl.String,
            "kind": pl.String,
            "name": pl.String,
            "status": pl.String,
            "use_case": pl.String,
            "started_at": pl.Datetime("us", "UTC"),
            "ended_at": pl.Datetime("us", "UTC"),
            "duration_s": pl.Float64,
            "parent_run_id": pl.String,
            "prefect_flow_run_id": pl.String,
        }
        rows = [{name: getattr(r, name) for name in schema} for r in self.runs]
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        keys = sorted({k for r in self.runs for k in r.metrics})
        return frame.with_columns(
            pl.Series(f"metrics.{k}", [r.metrics.get(k) for r in self.runs], pl.Float64)
            for k in keys
        )


_LIST_COLUMNS = (
    Run.id, Run.kind, Run.name, Run.status, Run.use_case, Run.started_at, Run.ended_at,
    Run.duration_s, Run.peak_memory_mb, Run.parent_run_id, Run.prefect_flow_run_id,
    Run.git_commit, Run.git_dirty, Run.notes, Run.error, Run.tags,
)  # fmt: skip


@dataclass(frozen=True)
class _Col:
    """One expression of a sort order."""

    expr: Any
    descending: bool
    nullable: bool = True

    def order(self) -> Any:
        ordered = self.expr.desc() if self.descending else self.expr.asc()
        return ordered.nulls_last() if self.nullable else ordered


def _sort_columns(key: SortKey) -> list[_Col]:
    """Per-run expressions a sort key orders by (params: number, then text)."""
    ref, desc = key.field, key.descending
    if ref.kind == "column":
        column = RUN_FIELDS[ref.name][0]
        return [_Col(column, desc, nullable=bool(column.nullable))]
    if ref.kind == "metric":
        m = aliased(RunMetric)
        value = (
            select(m.value)
            .where(m.run_id == Run.id, m.key == ref.name, m.is_final == True)  # noqa: E712
            .order_by(m.step.desc())
            .limit(1)
            .scalar_subquery()
        )
        return [_Col(value, desc)]
    if ref.kind == "param":
        p = aliased(RunParam)
        where = (p.run_id == Run.id, p.key == ref.name)
        return [
            _Col(select(p.value_num).where(*where).scalar_subquery(), desc),
            _Col(select(p.value_text).where(*where).scalar_subquery(), desc),
        ]
    t = aliased(RunTag)
    value = select(t.value).where(t.run_id == Run.id, t.key == ref.name).scalar_subquery()
    return [_Col(value, desc)]


@dataclass(frozen=True)
class _Keyed:
    """Runs joined with the row holding their value of a metric, param or tag sort key, so
    the database reads runs in that key's index order: the first page of a leaderboard costs
    a few index probes, not a sort of every matching run."""

    target: Any
    onclause: ColumnElement[bool]
    run_id: Any
    columns: list[_Col]
    missing: ColumnElement[bool]


def _keyed(key: SortKey, compiler: _Compiler) -> _Keyed | None:
    ref, desc = key.field, key.descending
    if ref.kind == "metric":
        m = aliased(RunMetric)
        later = aliased(RunMetric)
        superseded = (
            select(later.id)
            .where(
                later.run_id == m.run_id,
                later.key == m.key,
                later.is_final == True,  # noqa: E712
                later.step > m.step,
            )
            .exists()
        )
        final = [m.key == ref.name, m.is_final == True, ~superseded]  # noqa: E712
        return _Keyed(
            m,
            and_(m.run_id == Run.id, *final),
            m.run_id,
            [_Col(m.value, desc, nullable=False)],
            ~compiler.has(m.run_id, *final),
        )
    if ref.kind == "param":
        p = aliased(RunParam)
        return _Keyed(
            p,
            and_(p.run_id == Run.id, p.key == ref.name),
            p.run_id,
            [_Col(p.value_num, desc), _Col(p.value_text, desc)],
            ~compiler.has(p.run_id, p.key == ref.name),
        )
    if ref.kind == "tag":
        t = aliased(RunTag)
        return _Keyed(
            t,
            and_(t.run_id == Run.id, t.key == ref.name),
            t.run_id,
            [_Col(t.value, desc, nullable=False)],
            ~compiler.has(t.run_id, t.key == ref.name),
        )
    return None


def _after(columns: Sequence[_Col], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `columns` (each with NULLs last)."""
    alternatives = []
    for i, col in enumerate(columns):
        ties = [
            prev.expr.is_(None) if prev_value is None else prev.expr == prev_value
            for prev, prev_value in zip(columns[:i], values[:i], strict=True)
        ]
        value = values[i]
        if value is None:
            continue  # nothing sorts after NULL on this key but ties on later keys
        beyond = col.expr < value if col.descending else col.expr > value
        alternatives.append(
            and_(*ties, or_(beyond, col.expr.is_(None)) if col.nullable else beyond)
        )
    return or_(*alternatives) if alternatives else false()


@dataclass
class _Search:
    """A checked search: filter, sort keys and the compiler that built the filter."""

    where: ColumnElement[bool]
    keys: list[SortKey]
    compiler: _Compiler

    @property
    def width(self) -> int:
        return sum(len(_sort_columns(k)) for k in self.keys)

    def _read(
        self,
        session: Session,
        *,
        columns: list[_Col],
        run_id: Any,
        keyed: _Keyed | None,
        extra: Sequence[ColumnElement[bool]],
        limit: int,
        offset: int,
        after: list[Any] | None,
    ) -> list[tuple[str, list[Any]]]:
        # Subquery keys are selected under a label and ordered by it (computed once per row).
        labelled = [
            _Col(c.expr.label(f"sort_{i}"), c.descending, c.nullable)
            if isinstance(c.expr, ScalarSelect)
            else c
            for i, c in enumerate(columns)
        ]
        statement = select(run_id, *(c.expr for c in labelled)).select_from(Run)
        if keyed is not None:
            statement = statement.join(keyed.target, keyed.onclause)
        statement = statement.where(self.where, *extra)
        tie = _Col(run_id, self.keys[0].descending, nullable=False)
        if after is not None:
            statement = statement.where(_after([*columns, tie], after))
        statement = statement.order_by(*(c.order() for c in labelled), tie.order()).limit(limit)
        if offset:
            statement = statement.offset(offset)
        return [(row[0], list(row[1:])) for row in session.execute(statement)]

    def scan(
        self, session: Session, *, limit: int, offset: int, cursor: _Cursor | None
    ) -> list[tuple[str, _Cursor]]:
        """Up to `limit` runs in sort order after `cursor` (or `offset` rows), with the cursor
        that ends on each."""
        first = self.keys[0]
        rest = [c for k in self.keys[1:] for c in _sort_columns(k)]
        keyed = _keyed(first, self.compiler)
        after = None if cursor is None else [*cursor.values, cursor.run_id]
        if keyed is None:
            columns = _sort_columns(first) + rest
            rows = self._read(
                session, columns=columns, run_id=Run.id, keyed=None, extra=(), limit=limit,
                offset=offset, after=after,
            )  # fmt: skip
            return [(run_id, _Cursor("a", values, run_id)) for run_id, values in rows]
        head = keyed.columns
        found: list[tuple[str, _Cursor]] = []
        if cursor is None or cursor.phase == "a":
            rows = self._read(
                session, columns=head + rest, run_id=keyed.run_id, keyed=keyed, extra=(),
                limit=limit, offset=offset, after=after,
            )  # fmt: skip
            found = [(run_id, _Cursor("a", values, run_id)) for run_id, values in rows]
            if len(found) >= limit:
                return found
        # Then the runs without a value for the first key, in the order of the other keys.
        skip = 0
        if offset and not found:
            skip = max(0, offset - self._count_keyed(session, keyed))
        b_after = None
        if cursor is not None and cursor.phase == "b":
            b_after = [*cursor.values[len(head) :], cursor.run_id]
        rows = self._read(
            session, columns=rest, run_id=Run.id, keyed=None, extra=(keyed.missing,),
            limit=limit - len(found), offset=skip, after=b_after,
        )  # fmt: skip
        blanks = [None] * len(head)
        return found + [(run_id, _Cursor("b", blanks + values, run_id)) for run_id, values in rows]

    def _count_keyed(self, session: Session, keyed: _Keyed) -> int:
        statement = (
            select(func.count())
            .select_from(Run)
            .join(keyed.target, keyed.onclause)
            .where(self.where)
        )
        return int(session.scalar(statement) or 0)


def _prepare(query: str, order_by: str, *, dialect: str, now: datetime | None) -> _Search:
    compiler = _Compiler(dialect, now or datetime.now(UTC))
    node = parse_query(query)
    where = true() if node is None else compiler.node(node)
    return _Search(where, parse_order_by(order_by), compiler)


def search_runs(
    store: Store,
    query: str = "",
    *,
    order_by: str = "started_at desc",
    limit: int = 50,
    page_token: str | None = None,
    offset: int | None = None,
    reap: bool = True,
    now: datetime | None = None,
) -> RunPage:
    """Runs matching a query, sorted, one page at a time.

    Args:
        store: The metadata store.
        query: A run query (see the module docstring); empty matches every run.
        order_by: Up to 3 sort keys, e.g. 'metrics.roc_auc desc, started_at desc'. Runs
            without a sort key's value come last; the run id breaks ties.
        limit: Page size (1 to 1,000).
        page_token: The `next_page_token` of the previous page (keyset pagination: stable
            while runs are added).
        offset: Rows to skip instead of a page token (simpler, slower on deep pages).
        reap: Close crashed runs (dead process or stale heartbeat) first, so none shows as
            running forever.
        now: The time relative ages in the query count back from (default: now).

    Raises:
        QueryError: On a bad query, sort order, page token, limit or offset.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise QueryError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if offset is not None and (offset < 0 or page_token is not None):
        raise QueryError("offset must be >= 0 and cannot be combined with a page token")
    search = _prepare(query, order_by, dialect=store.engine.dialect.name, now=now)
    cursor = None
    if page_token is not None:
        cursor = _read_page_token(page_token, query, order_by, search.width)
    if reap:  # after the request is known to be valid: a bad one changes nothing
        reap_runs(store)
    with store.reader() as session:
        found = search.scan(session, limit=limit + 1, offset=offset or 0, cursor=cursor)
        page = found[:limit]
        ids = [run_id for run_id, _ in page]
        rows = {r.id: r for r in session.execute(select(*_LIST_COLUMNS).where(Run.id.in_(ids)))}
        metrics = _final_metrics(session, ids)
    runs = [
        RunRecord(
            **{c.key: rows[i][n] for n, c in enumerate(_LIST_COLUMNS) if c.key != "tags"},
            tags=dict(rows[i].tags or {}),
            metrics=metrics.get(i, {}),
        )
        for i in ids
        if i in rows
    ]
    token = None
    if len(found) > limit:
        token = _page_token(query, order_by, page[-1][1])
    return RunPage(runs=runs, next_page_token=token)


def count_runs(store: Store, query: str = "", *, now: datetime | None = None) -> int:
    """How many runs match a query."""
    search = _prepare(query, "id", dialect=store.engine.dialect.name, now=now)
    with store.reader() as session:
        statement = select(func.count()).select_from(Run).where(search.where)
        return int(session.scalar(statement) or 0)


def _final_metrics(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if not run_ids:
        return out
    for run_id, key, value in session.execute(
        select(RunMetric.run_id, RunMetric.key, RunMetric.value)
        .where(RunMetric.run_id.in_(list(run_ids)), RunMetric.is_final == True)  # noqa: E712
        .order_by(RunMetric.step)
    ):
        out.setdefault(run_id, {})[key] = value  # the highest final step wins
    return out


# --- one run, and comparisons -------------------------------------------------------------------

_HEX = re.compile(r"^[0-9a-f]{4,32}$")


def resolve_run_id(session: Session, run_id: str) -> str:
    """The full id of a run given its id or a unique prefix of at least 4 hex characters.

    Raises:
        RunNotFoundError: If no run or several runs match.
    """
    if session.get(Run, run_id) is not None:
        return run_id
    if not _HEX.match(run_id):
        raise RunNotFoundError(f"no run '{run_id}' (run ids are 32 hex characters)")
    found = list(session.scalars(select(Run.id).where(Run.id.startswith(run_id)).limit(3)))
    if not found:
        raise RunNotFoundError(f"no run '{run_id}'")
    if len(found) > 1:
        raise RunNotFoundError(f"run id prefix '{run_id}' matches several runs: give more of it")
    return found[0]


def _curve_rows(session: Session, run_ids: Sequence[str]) -> pl.DataFrame:
    rows = session.execute(
        select(RunMetric.run_id, RunMetric.key, RunMetric.step, RunMetric.value, RunMetric.is_final)
        .where(RunMetric.run_id.in_(list(run_ids)))
        .order_by(RunMetric.run_id, RunMetric.key, RunMetric.step)
    ).all()
    frame = pl.DataFrame(
        [tuple(r) for r in rows],
        schema={
            "run_id": pl.String,
            "key": pl.String,
            "step": pl.Int64,
            "value": pl.Float64,
            "is_final": pl.Boolean,
        },
        orient="row",
    )
    # A key's curve is its non-final rows; a key logged only as final values at several
    # steps is its own curve.
    with_history = frame.filter(~pl.col("is_final")).select("run_id", "key").unique()
    curves = pl.concat(
        [
            frame.filter(~pl.col("is_final")),
            frame.filter(pl.col("is_final"))
            .join(with_history, on=["run_id", "key"], how="anti")
            .filter(pl.len().over("run_id", "key") > 1),
        ]
    )
    return curves.select("run_id", "key", "step", "value").sort("run_id", "key", "step")


def curve_summary(curves: pl.DataFrame) -> pl.DataFrame:
    """Per run and key: steps, first, last, min (and its step), max (and its step)."""
    return (
        curves.sort("run_id", "key", "step")
        .group_by("run_id", "key", maintain_order=True)
        .agg(
            steps=pl.len(),
            first=pl.col("value").first(),
            last=pl.col("value").last(),
            min=pl.col("value").min(),
            min_step=pl.col("step").get(pl.col("value").arg_min()),
            max=pl.col("value").max(),
            max_step=pl.col("step").get(pl.col("value").arg_max()),
        )
    )


def _display(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class RunComparison:
    """N runs side by side.

    `runs`: one row per run (id, label, kind, name, status, started_at, duration_s,
    git_commit). `params`: key, differs, then one String column per run label (flattened
    params; null where a run lacks the key). `metrics`: key, differs, then one Float64
    column per run label (final values). `curves`: run_id, label, key, step, value.
    """

    runs: pl.DataFrame
    params: pl.DataFrame
    metrics: pl.DataFrame
    curves: pl.DataFrame

    @property
    def labels(self) -> list[str]:
        """The column name of each run in `params` and `metrics`, in the order given."""
        return self.runs.get_column("label").to_list()


def _labels(run_ids: Sequence[str]) -> list[str]:
    for width in (8, 12, 16, 32):
        labels = [r[:width] for r in run_ids]
        if len(set(labels)) == len(labels):
            return labels
    return list(run_ids)  # pragma: no cover - full ids are unique


def compare_runs(store: Store, run_ids: Sequence[str]) -> RunComparison:
    """Compare 2 to 50 runs: param differences, final-metric table, learning curves.

    Args:
        store: The metadata store.
        run_ids: Run ids or unique prefixes (duplicates are dropped, order kept).

    Raises:
        QueryError: With fewer than 2 or more than 50 distinct runs.
        RunNotFoundError: If an id matches no run or several.
    """
    with store.reader() as session:
        ids = list(dict.fromkeys(resolve_run_id(session, r) for r in run_ids))
        if not 2 <= len(ids) <= MAX_COMPARE:
            raise QueryError(f"compare needs 2 to {MAX_COMPARE} distinct runs, got {len(ids)}")
        found = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))}
        runs = [found[i] for i in ids]
        metrics = _final_metrics(session, ids)
        curves = _curve_rows(session, ids)
    labels = _labels(ids)
    run_frame = pl.DataFrame(
        {
            "id": ids,
            "label": labels,
            "kind": [r.kind for r in runs],
            "name": [r.name for r in runs],
            "status": [r.status for r in runs],
            "started_at": [r.started_at for r in runs],
            "duration_s": [r.duration_s for r in runs],
            "git_commit": [r.git_commit for r in runs],
        },
        schema_overrides={"started_at": pl.Datetime("us", "UTC"), "duration_s": pl.Float64},
    )
    flat = [flatten_params(r.params) for r in runs]
    param_keys = sorted({k for f in flat for k in f})
    param_values = [[_display(f.get(k)) if k in f else None for f in flat] for k in param_keys]
    params = pl.DataFrame(
        {
            "key": param_keys,
            "differs": [len({(v is None, v) for v in vals}) > 1 for vals in param_values],
            **{
                label: pl.Series([vals[i] for vals in param_values], dtype=pl.String)
                for i, label in enumerate(labels)
            },
        },
        schema_overrides={"key": pl.String, "differs": pl.Boolean},
    )
    metric_keys = sorted({k for m in metrics.values() for k in m})
    metric_values = [[metrics.get(i, {}).get(k) for i in ids] for k in metric_keys]
    metric_frame = pl.DataFrame(
        {
            "key": metric_keys,
            "differs": [len(set(vals)) > 1 for vals in metric_values],
            **{
                label: pl.Series([vals[i] for vals in metric_values], dtype=pl.Float64)
                for i, label in enumerate(labels)
            },
        },
        schema_overrides={"key": pl.String, "differs": pl.Boolean},
    )
    label_of = pl.DataFrame({"run_id": ids, "label": labels})
    curves = curves.join(label_of, on="run_id", how="left").select(
        "run_id", "label", "key", "step", "value"
    )
    return RunComparison(run_frame, params, metric_frame, curves)


def describe_run(store: Store, run_id: str) -> dict[str, Any]:
    """Everything about one run, JSON-ready: fields, params, final metrics, curve summary,
    artifacts, lineage (parent, children, datasets written, model versions and their training
    data) and environment.

    Raises:
        RunNotFoundError: If the id matches no run or several.
    """
    with store.reader() as session:
        run_id = resolve_run_id(session, run_id)
        run = session.get_one(Run, run_id)
        metrics = _final_metrics(session, [run_id]).get(run_id, {})
        curves = curve_summary(_curve_rows(session, [run_id])).drop("run_id")
        artifacts = [
            {"name": name, "id": artifact_id, "size_bytes": size, "media_type": media}
            for name, artifact_id, size, media in session.execute(
                select(RunArtifact.name, Artifact.id, Artifact.size_bytes, Artifact.media_type)
                .join(Artifact, Artifact.id == RunArtifact.artifact_id)
                .where(RunArtifact.run_id == run_id)
                .order_by(RunArtifact.name)
            )
        ]
        parent = session.get(Run, run.parent_run_id) if run.parent_run_id else None
        children_count = session.scalar(
            select(func.count()).select_from(Run).where(Run.parent_run_id == run_id)
        )
        children = session.execute(
            select(Run.id, Run.kind, Run.name, Run.status)
            .where(Run.parent_run_id == run_id)
            .order_by(Run.started_at, Run.id)
            .limit(100)
        ).all()
        written = session.execute(
            select(DatasetVersion.id, DatasetVersion.dataset, DatasetVersion.table_version)
            .where(DatasetVersion.run_id == run_id)
            .order_by(DatasetVersion.dataset)
        ).all()
        versions = []
        for version in session.scalars(
            select(ModelVersion).where(ModelVersion.run_id == run_id).order_by(ModelVersion.version)
        ):
            inputs = session.execute(
                select(
                    ModelVersionDataset.role, DatasetVersion.dataset, DatasetVersion.table_version
                )
                .join(DatasetVersion, DatasetVersion.id == ModelVersionDataset.dataset_version_id)
                .where(ModelVersionDataset.model_version_id == version.id)
                .order_by(ModelVersionDataset.role)
            ).all()
            versions.append(
                {
                    "id": version.id,
                    "model_name": version.model_name,
                    "version": version.version,
                    "datasets": [
                        {"role": role, "dataset": dataset, "table_version": tv}
                        for role, dataset, tv in inputs
                    ],
                }
            )
        return {
            "id": run.id,
            "kind": run.kind,
            "name": run.name,
            "status": run.status,
            "use_case": run.use_case,
            "started_at": run.started_at.isoformat(),
            "ended_at": run.ended_at.isoformat() if run.ended_at else None,
            "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
            "duration_s": run.duration_s,
            "peak_memory_mb": run.peak_memory_mb,
            "error": run.error,
            "notes": run.notes,
            "tags": dict(run.tags),
            "params": flatten_params(run.params),
            "metrics": metrics,
            "curves": curves.to_dicts(),
            "summary": dict(run.summary),
            "artifacts": artifacts,
            "lineage": {
                "parent": (
                    {"id": parent.id, "kind": parent.kind, "name": parent.name} if parent else None
                ),
                "children_count": int(children_count or 0),
                "children": [
                    {"id": i, "kind": k, "name": n, "status": s} for i, k, n, s in children
                ],
                "datasets_written": [
                    {"id": i, "dataset": d, "table_version": v} for i, d, v in written
                ],
                "model_versions": versions,
            },
            "process": {
                "host": run.host,
                "pid": run.pid,
                "prefect_flow_run_id": run.prefect_flow_run_id,
            },
            "code": {
                "git_commit": run.git_commit,
                "git_dirty": run.git_dirty,
                "lock_hash": run.lock_hash,
            },
            "environment": dict(run.environment),
        }


def iter_all(
    store: Store,
    query: str = "",
    *,
    order_by: str = "started_at desc",
    page_size: int = 500,
    reap: bool = True,
) -> Iterator[RunRecord]:
    """Every run matching a query, page by page (keyset pagination; reaps once, first)."""
    token: str | None = None
    first = True
    while True:
        page = search_runs(
            store, query, order_by=order_by, limit=page_size, page_token=token,
            reap=reap and first,
        )  # fmt: skip
        first = False
        yield from page.runs
        token = page.next_page_token
        if token is None:
            return


def known_keys(store: Store, *, limit: int = 200) -> Mapping[str, list[str]]:
    """The metric, param and tag keys in the store (for completion and help)."""
    with store.reader() as session:
        return {
            "metrics": list(
                session.scalars(
                    select(RunMetric.key).distinct().order_by(RunMetric.key).limit(limit)
                )
            ),
            "params": list(
                session.scalars(select(RunParam.key).distinct().order_by(RunParam.key).limit(limit))
            ),
            "tags": list(
                session.scalars(select(RunTag.key).distinct().order_by(RunTag.key).limit(limit))
            ),
        }

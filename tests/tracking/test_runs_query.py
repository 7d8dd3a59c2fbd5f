"""Run search: the query language (valid, invalid, injection), sorting, pagination, compare."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select
from tracking_fixtures import SPECS, T0, Populated, Spec

from loopline.runs_query import (
    QueryError,
    RunNotFoundError,
    compare_runs,
    compile_query,
    count_runs,
    describe_run,
    iter_all,
    known_keys,
    parse_order_by,
    parse_query,
    search_runs,
)
from loopline.store.tables import Run, RunMetric

ALL = [s.name for s in SPECS]

# (query, expected run names); {rN} is replaced by that run's id.
VALID: list[tuple[str, set[str]]] = [
    ("", set(ALL)),
    ("   ", set(ALL)),
    ("metrics.roc_auc > 0.9", {"r1", "r4"}),
    ("metrics.roc_auc >= 0.9", {"r1", "r4", "r8"}),
    ("metrics.roc_auc = 0.95", set()),  # r4 logged 0.95 at step 0, then 0.91: 0.91 is final
    ("metrics.roc_auc = 0.91", {"r4"}),
    ("metrics.roc_auc != 0.93", {"r3", "r4", "r8"}),  # only runs that have the metric
    ("metrics.roc_auc is null", {"r2", "r5", "r6", "r7"}),
    ("metrics.roc_auc is not null", {"r1", "r3", "r4", "r8"}),
    ("metrics.valid_auc is not null", set()),  # a learning curve is not a final value
    ("metrics.log_loss < 0.25", {"r1"}),
    ("metrics.log_loss in (0.2, 0.3)", {"r1", "r3"}),
    ("metrics.rows == 100", {"r6"}),
    ("metrics.roc_auc > 9e-1", {"r1", "r4"}),
    ("params.num_leaves = 63", {"r1", "r3"}),
    ("params.num_leaves = '63'", {"r1", "r3"}),
    ("params.num_leaves >= 127", {"r4", "r8"}),  # r4 stored '127' as text: it reads as 127
    ("params.num_leaves in (31, 255)", {"r2", "r8"}),
    ("params.num_leaves not in (63)", {"r2", "r4", "r8"}),
    ("params.num_leaves <> 63", {"r2", "r4", "r8"}),
    ("params.learning_rate < 0.05", {"r4"}),
    ("params.learning_rate = -0.05", set()),
    ("params.training.seed = 7", {"r1", "r3"}),
    ("params.`training.seed` = 7", {"r1", "r3"}),
    ("params.training.`seed` = 8", {"r2"}),
    ("params.training.early_stopping = true", {"r1"}),
    ("params.training.early_stopping = false", set()),
    ("params.objective = 'binary'", {"r1", "r2"}),
    ('params.objective = "binary"', {"r1", "r2"}),
    ("params.objective like 'binary%'", {"r1", "r2", "r8"}),
    ("params.objective not like 'binary%'", {"r3"}),
    ("params.objective like 'BINARY'", set()),  # like is case-sensitive
    ("params.objective ilike 'BINARY'", {"r1", "r2"}),
    ("params.objective in ('binary', 'regression')", {"r1", "r2", "r3"}),
    ("params.objective is null", {"r4", "r5", "r6", "r7"}),
    ("params.name_pattern like 'a\\_b\\%c'", {"r8"}),
    ("params.name_pattern like 'a_b%'", {"r8"}),
    ("params.name_pattern like 'a\\_c%'", set()),
    ("params.note = 'O''Brien'", {"r6"}),
    ('params.paths = \'["a.csv", "b.csv"]\'', {"r6"}),
    ("params.paths like '%b.csv%'", {"r6"}),
    ("tags.use_case = 'fraud'", {"r1", "r2", "r4", "r5", "r6", "r8"}),
    ("tags.team in ('risk', 'Growth')", {"r1", "r3"}),
    ("tags.team = 'growth'", set()),
    ("tags.team ilike 'growth'", {"r3"}),
    ("tags.team is null", {"r2", "r4", "r5", "r6", "r7", "r8"}),
    ("tags.team != 'risk'", {"r3"}),
    ("status = 'succeeded' and kind = 'train'", {"r1", "r8"}),
    ("status = 'succeeded' AND kind = 'train'", {"r1", "r8"}),
    ("kind in ('train', 'tune-trial') and status != 'failed'", {"r1", "r3", "r4", "r8"}),
    ("kind not in ('train', 'tune-trial')", {"r5", "r6", "r7"}),
    ("kind like 'tune%'", {"r3", "r4", "r5"}),
    ("started_at >= '2026-11-13'", {"r4", "r5", "r6", "r7"}),
    ("started_at >= '2026-11-13T12:00:00Z'", {"r4", "r6", "r7"}),
    ("started_at >= '2026-11-13T13:00:00+01:00'", {"r4", "r6", "r7"}),
    ("started_at < '2026-11-11T00:00:00+00:00'", {"r1", "r8"}),
    ("started_at >= '-2d'", {"r6", "r7"}),
    ("started_at >= '-25h' and started_at < '-1h'", {"r6"}),
    ("duration_s > 10", {"r1", "r5", "r8"}),
    ("not duration_s > 10", {"r2", "r3", "r6"}),  # unknown durations match neither
    ("duration_s is null", {"r4", "r7"}),
    ("ended_at is null", {"r7"}),
    ("parent = '{r5}'", {"r3", "r4"}),
    ("parent_run_id is null and kind like 'tune%'", {"r5"}),
    ("git_dirty = true", {"r8"}),
    ("git_commit is null", {"r7"}),
    ("notes like '%load%'", {"r6"}),
    ("error like 'ValueError%'", {"r2"}),
    ("id = '{r1}'", {"r1"}),
    ("attributes.kind = 'ingest'", {"r6"}),
    ("name = 'r1' or name = 'r2'", {"r1", "r2"}),
    ("(kind = 'train' or kind = 'ingest') and not status = 'failed'", {"r1", "r6", "r8"}),
    ("not (tags.use_case = 'fraud')", {"r3", "r7"}),
    ("not not kind = 'ingest'", {"r6"}),
    ("kind = 'train' and (metrics.roc_auc > 0.92 or params.num_leaves = 31)", {"r1", "r2"}),
    (
        "metrics.roc_auc > 0.85 and params.num_leaves = 63 and tags.use_case = 'fraud' "
        "and status = 'succeeded' and kind in ('train', 'tune-trial') "
        "and started_at >= '2026-11-01'",
        {"r1"},
    ),
]


def _fill(query: str, populated: Populated) -> str:
    for name, rid in populated.ids.items():
        query = query.replace("{" + name + "}", rid)
    return query


def _names(populated: Populated, query: str, **kwargs: Any) -> list[str]:
    page = search_runs(
        populated.store, _fill(query, populated), limit=100, reap=False, now=T0, **kwargs
    )
    return populated.names([r.id for r in page.runs])


@pytest.mark.parametrize(("query", "expected"), VALID)
def test_valid_queries_select_the_expected_runs(
    populated: Populated, query: str, expected: set[str]
) -> None:
    assert set(_names(populated, query)) == expected
    assert count_runs(populated.store, _fill(query, populated), now=T0) == len(expected)


# (query, what the message says, 1-based position or None)
INVALID: list[tuple[str, str, int | None]] = [
    ("metrics.x > 0; DROP TABLE runs", "unexpected character ';'", 14),
    ("params.a = '' or 1=1 --", "expected a field such as metrics.roc_auc", 18),
    ("kind = 'a' or 1=1", "got number '1'", 15),
    ("kind = 'a'; --", "unexpected character ';'", 11),
    ("kind = 'a' union select * from runs", "expected 'and', 'or' or the end of the query", 12),
    ("kind = 'a' /* comment */", "unexpected character '/'", 12),
    ("kind = 'a' -- comment", "unexpected character '-'", 12),
    ("kind = 'a\\' or 'x'='x'", "expected a field such as", 16),
    ("name = 'x' || 'y'", "unexpected character '|'", 12),
    ("runs.id = 1", "unknown field 'runs.id'", 1),
    ("foo = 1", "unknown field 'foo'", 1),
    ("METRICS.auc > 1", "unknown field 'METRICS.auc'", 1),
    ("metrics > 1", "'metrics' needs a key", 1),
    ("metrics.auc > 'high'", "metrics are numbers", 15),
    ("metrics.auc like '1%'", "metrics are numbers", 1),
    ("metrics.auc = null", "'is null'", 15),
    ("status = 'done'", "unknown status 'done' (one of: running, succeeded, failed, crashed)", 10),
    ("kind = train", "expected a value", 8),
    ("kind = 'train' and", "got the end of the query", 19),
    ("kind = 'train' status = 'x'", "expected 'and', 'or' or the end of the query", 16),
    ("(kind = 'train'", "expected ')'", 16),
    ("kind = 'train')", "got rparen ')'", 15),
    ("started_at > 'yesterday'", "is not a time", 14),
    ("started_at > 5", "takes a quoted time", 14),
    ("duration_s > '5'", "duration_s is a number", 14),
    ("kind > 'a'", "'>' does not apply to the text field kind", 8),
    ("kind = 3", "kind is text: quote the value", 8),
    ("git_dirty = 'yes'", "git_dirty is true or false", 13),
    ("params.x > 'a'", "'>' compares numbers", 12),
    ("tags.team > 'a'", "tags are text", 13),
    ("kind = 'unterminated", "never closed", 8),
    ("kind ! 'a'", "unknown operator '!'", 6),
    ("kind in 'a'", "'(' after 'in'", 9),
    ("kind in ()", "expected a value", 10),
    ("kind in ('a' 'b')", "expected ',' or ')'", 14),
    ("kind not 'a'", "'in', 'like' or 'ilike' after 'not'", 10),
    ("kind is 'x'", "'null' after 'is'", 9),
    ("name like 5", "needs a quoted pattern", 11),
    ("1abc = 2", "a name cannot start with a digit", 1),
    ("params.`a = 1", "backticked name is never closed", 8),
    ("params.`` = 1", "empty backticked name", 8),
    ("params. = 1", "expected a name after '.'", 8),
    ("params", "'params' needs a key, e.g. params.num_leaves", 1),
    ("metrics.auc > 1e999", "number out of range", 15),
    ("kind = 'a' and and kind = 'b'", "expected a field", 16),
    ("é = 1", "unexpected character 'é'", 1),
    ("x" * 4001, "longer than 4000 characters", None),
    ("(" * 17 + "kind = 'a'" + ")" * 17, "nested deeper than 16 levels", 17),
    (" and ".join(["kind = 'a'"] * 65), "more than 64 conditions", None),
]


@pytest.mark.parametrize(("query", "message", "position"), INVALID)
def test_invalid_queries_are_rejected_naming_token_and_position(
    populated: Populated, query: str, message: str, position: int | None
) -> None:
    with pytest.raises(QueryError) as raised:
        search_runs(populated.store, query, reap=False)
    assert message in str(raised.value)
    assert str(raised.value).startswith("invalid run query")
    if position is not None:
        assert raised.value.position == position - 1
        assert f"at position {position}" in str(raised.value)
    # Nothing ran: the tables are intact and hold the same rows.
    with populated.store.reader() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == len(SPECS)
    assert "runs" in inspect(populated.store.engine).get_table_names()


@pytest.mark.parametrize(
    "value",
    [
        "'; DROP TABLE runs; --",
        "x' OR '1'='1",
        "\\'; SELECT 1; --",
        "%' OR 1=1 --",
        "r1\x00",
        "Robert'); DROP TABLE run_params;--",
    ],
)
def test_hostile_values_are_bound_not_executed(populated: Populated, value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    for query in (
        f"name = {quoted}",
        f"tags.team = {quoted}",
        f"params.objective like {quoted}",
        f"params.`{value.replace('`', '')}` = 1",
    ):
        assert _names(populated, query) == []
    with populated.store.reader() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == len(SPECS)


def test_parser_builds_a_tree_with_precedence() -> None:
    tree = parse_query("name = 'x' or not kind = 'y' and name = 'z'")
    assert tree is not None
    assert type(tree).__name__ == "BoolOp" and tree.op == "or"  # type: ignore[union-attr]
    assert tree.parts[1].op == "and"  # type: ignore[union-attr]
    assert parse_query("") is None
    where = str(compile_query("tags.team = 'x' and kind = 'train'"))
    assert "run_tags" in where and "'x'" not in where and ":value" in where  # bound, not pasted


# --- sorting and pagination --------------------------------------------------------------------

ORDERS: list[tuple[str, list[str]]] = [
    ("metrics.roc_auc desc", ["r1", "r4", "r8", "r3"]),
    ("metrics.roc_auc asc", ["r3", "r8", "r4", "r1"]),
    ("metrics.roc_auc", ["r3", "r8", "r4", "r1"]),
    ("params.learning_rate desc, metrics.roc_auc desc", ["r3", "r2", "r1", "r8", "r4"]),
    ("params.num_leaves asc, name desc", ["r2", "r3", "r1", "r4", "r8"]),
    ("tags.team asc", ["r3", "r1"]),
    ("started_at", ["r8", "r1", "r2", "r3", "r5", "r4", "r6", "r7"]),
    ("started_at desc", ["r7", "r6", "r4", "r5", "r3", "r2", "r1", "r8"]),
    ("duration_s desc", ["r5", "r8", "r1", "r3", "r2", "r6"]),
    ("name desc", ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]),
]


@pytest.mark.parametrize(("order_by", "first"), ORDERS)
def test_sorting_puts_missing_values_last(
    populated: Populated, order_by: str, first: list[str]
) -> None:
    names = _names(populated, "", order_by=order_by)
    assert names[: len(first)] == first
    assert sorted(names) == sorted(ALL)


@pytest.mark.parametrize("order_by", [o for o, _ in ORDERS])
@pytest.mark.parametrize("query", ["", "tags.use_case = 'fraud'", "metrics.roc_auc > 0"])
@pytest.mark.parametrize("size", [1, 3])
def test_keyset_and_offset_pages_cover_the_listing_exactly_once(
    populated: Populated, order_by: str, query: str, size: int
) -> None:
    whole = _names(populated, query, order_by=order_by)
    paged: list[str] = []
    token = None
    while True:
        page = search_runs(
            populated.store, query, order_by=order_by, limit=size, page_token=token, reap=False
        )
        paged += populated.names([r.id for r in page.runs])
        token = page.next_page_token
        if token is None:
            break
    assert paged == whole
    by_offset: list[str] = []
    for offset in range(0, len(whole) + size, size):
        page = search_runs(
            populated.store, query, order_by=order_by, limit=size, offset=offset, reap=False
        )
        by_offset += populated.names([r.id for r in page.runs])
    assert by_offset == whole


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be between 1 and 1000"),
        ({"limit": 1001}, "limit must be between 1 and 1000"),
        ({"offset": -1}, "offset must be >= 0"),
        ({"order_by": "colour desc"}, "unknown field 'colour'"),
        ({"order_by": "started_at sideways"}, "expected 'asc', 'desc'"),
        ({"order_by": "name, kind, colour"}, "unknown field 'colour'"),
        ({"order_by": "name, kind, status, id"}, "at most 3 sort keys"),
        ({"order_by": ""}, "expected a field to sort by"),
        ({"order_by": "started_at; DROP TABLE runs"}, "unexpected character ';'"),
        ({"page_token": "garbage"}, "the page token is not one this API issued"),
        ({"page_token": "eyJxIjogMX0"}, "the page token is not one this API issued"),
    ],
)
def test_bad_sort_page_and_limit_are_rejected(
    populated: Populated, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        search_runs(populated.store, "", reap=False, **kwargs)


def test_a_page_token_only_fits_its_own_query(populated: Populated) -> None:
    page = search_runs(populated.store, "kind = 'train'", limit=1, reap=False)
    assert page.next_page_token
    with pytest.raises(QueryError, match="belongs to another query"):
        search_runs(populated.store, "kind = 'tune'", page_token=page.next_page_token, reap=False)
    with pytest.raises(QueryError, match="cannot be combined"):
        search_runs(populated.store, "kind = 'train'", page_token=page.next_page_token, offset=1)


def test_parse_order_by_reads_directions() -> None:
    keys = parse_order_by("metrics.auc DESC, name")
    assert [(k.field.kind, k.field.name, k.descending) for k in keys] == [
        ("metric", "auc", True),
        ("column", "name", False),
    ]


def test_records_carry_metrics_tags_and_frame(populated: Populated) -> None:
    page = search_runs(populated.store, "name = 'r1'", reap=False)
    (run,) = page.runs
    assert run.metrics == {"roc_auc": 0.93, "log_loss": 0.2}
    assert run.tags == {"use_case": "fraud", "team": "risk"}
    assert run.as_dict()["started_at"].startswith("2026-11-10T12:00:00")
    frame = page.to_frame()
    assert frame.get_column("metrics.roc_auc").to_list() == [0.93]


# --- a reference evaluator: random queries agree with SQL --------------------------------------


def _known(spec: Spec) -> dict[str, Any]:
    finals = {}
    for key, value in spec.metrics.items():
        finals[key] = value[-1][1] if isinstance(value, list) else value
    leaves = spec.params.get("num_leaves")
    return {
        "metrics": finals,
        "num_leaves": float(leaves) if leaves is not None else None,
        "objective": spec.params.get("objective"),
        "tags": spec.tags,
    }


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
}


@st.composite
def conditions(draw: st.DrawFn) -> tuple[str, Callable[[Spec], bool | None]]:
    kind = draw(st.sampled_from(["metric", "leaves", "objective", "tag", "status", "duration"]))
    op = draw(st.sampled_from(list(OPS)))
    if kind == "metric":
        key = draw(st.sampled_from(["roc_auc", "log_loss"]))
        value = draw(st.sampled_from([0.2, 0.25, 0.88, 0.9, 0.91, 0.93, 0.95]))
        if draw(st.booleans()):
            return f"metrics.{key} is null", lambda s: key not in _known(s)["metrics"]
        return (
            f"metrics.{key} {op} {value}",
            lambda s: key in _known(s)["metrics"] and OPS[op](_known(s)["metrics"][key], value),
        )
    if kind == "leaves":
        value = draw(st.sampled_from([31, 63, 127, 255]))
        return (
            f"params.num_leaves {op} {value}",
            lambda s: (
                _known(s)["num_leaves"] is not None and OPS[op](_known(s)["num_leaves"], value)
            ),
        )
    if kind == "objective":
        value = draw(st.sampled_from(["binary", "regression", "binary_v2"]))
        eq = op in ("=", ">=")
        sign = "=" if eq else "!="
        return (
            f"params.objective {sign} '{value}'",
            lambda s: (
                _known(s)["objective"] is not None and (_known(s)["objective"] == value) == eq
            ),
        )
    if kind == "tag":
        value = draw(st.sampled_from(["fraud", "churn"]))
        return f"tags.use_case = '{value}'", lambda s: s.tags.get("use_case") == value
    if kind == "status":
        value = draw(st.sampled_from(["succeeded", "failed", "crashed", "running"]))
        sign = "=" if op in ("=", "<") else "!="
        return f"status {sign} '{value}'", lambda s: (s.status == value) == (sign == "=")
    value = draw(st.sampled_from([1.0, 5.0, 12.0, 50.0]))
    return (
        f"duration_s {op} {value}",
        lambda s: None if s.duration_s is None else OPS[op](s.duration_s, value),
    )


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _not(a: bool | None) -> bool | None:
    return None if a is None else not a


queries = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(
            lambda p: (f"({p[0][0]}) and ({p[1][0]})", lambda s: _and(p[0][1](s), p[1][1](s)))
        ),
        st.tuples(inner, inner).map(
            lambda p: (f"({p[0][0]}) or ({p[1][0]})", lambda s: _or(p[0][1](s), p[1][1](s)))
        ),
        inner.map(lambda q: (f"not ({q[0]})", lambda s: _not(q[1](s)))),
    ),
    max_leaves=5,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(query=queries)
def test_random_queries_agree_with_a_reference_evaluator(
    populated: Populated, query: tuple[str, Callable[[Spec], bool | None]]
) -> None:
    text, reference = query
    expected = {s.name for s in SPECS if reference(s) is True}
    assert set(_names(populated, text)) == expected, text


# --- one run, comparisons ----------------------------------------------------------------------


def test_compare_lines_up_params_metrics_and_curves(populated: Populated) -> None:
    ids = populated.ids
    comparison = compare_runs(populated.store, [ids["r1"], ids["r3"][:8], ids["r1"]])
    assert comparison.labels == [ids["r1"][:8], ids["r3"][:8]]
    a, b = comparison.labels
    params = {r["key"]: r for r in comparison.params.iter_rows(named=True)}
    assert params["num_leaves"]["differs"] is False and params["num_leaves"][a] == "63"
    assert params["objective"] == {"key": "objective", "differs": True, a: "binary",
                                   b: "regression"}  # fmt: skip
    assert params["training.early_stopping"][a] == "true"
    assert params["training.early_stopping"][b] is None
    metrics = {r["key"]: r for r in comparison.metrics.iter_rows(named=True)}
    assert metrics["roc_auc"][a] == 0.93 and metrics["roc_auc"][b] == 0.88
    curves = comparison.curves.filter(key="valid_auc")
    assert curves.group_by("label").len().sort("label").get_column("len").to_list() == [
        3 if a < b else 2,
        2 if a < b else 3,
    ]
    assert set(comparison.runs.get_column("kind")) == {"train", "tune-trial"}


def test_a_key_logged_at_several_final_steps_is_its_own_curve(populated: Populated) -> None:
    ids = populated.ids
    comparison = compare_runs(populated.store, [ids["r4"], ids["r8"]])
    curve = comparison.curves.filter(key="roc_auc")
    assert curve.get_column("value").to_list() == [0.95, 0.91]
    metrics = {r["key"]: r for r in comparison.metrics.iter_rows(named=True)}
    assert metrics["roc_auc"][ids["r4"][:8]] == 0.91


@pytest.mark.parametrize(
    ("run_ids", "error", "message"),
    [
        (["r1"], QueryError, "compare needs 2 to 50 distinct runs, got 1"),
        (["r1", "r1"], QueryError, "got 1"),
        (["r1", "ffffffffffffffff"], RunNotFoundError, "no run 'ffffffffffffffff'"),
        (["r1", "nope; drop"], RunNotFoundError, "run ids are 32 hex characters"),
    ],
)
def test_compare_rejects_bad_requests(
    populated: Populated, run_ids: list[str], error: type[Exception], message: str
) -> None:
    ids = [populated.ids.get(r, r) for r in run_ids]
    with pytest.raises(error, match=message):
        compare_runs(populated.store, ids)


def test_describe_run_has_lineage_and_curves(populated: Populated) -> None:
    ids = populated.ids
    parent = describe_run(populated.store, ids["r5"])
    assert parent["lineage"]["children_count"] == 2
    assert {c["id"] for c in parent["lineage"]["children"]} == {ids["r3"], ids["r4"]}
    child = describe_run(populated.store, ids["r3"][:6])
    assert child["lineage"]["parent"]["id"] == ids["r5"]
    assert child["params"]["training.seed"] == 7
    assert child["curves"][0]["key"] == "valid_auc" and child["curves"][0]["max"] == 0.85
    assert child["curves"][0]["max_step"] == 2
    with pytest.raises(RunNotFoundError, match="no run"):
        describe_run(populated.store, "0123456789")


def test_an_ambiguous_prefix_is_refused(populated: Populated) -> None:
    # Two extra runs share a prefix; a prefix that matches both is refused by name.
    with populated.store.session() as session:
        for suffix in ("1", "2"):
            session.add(Run(id="abcd" + suffix * 28, kind="x", use_case="fraud", started_at=T0))
    try:
        with pytest.raises(RunNotFoundError, match="matches several runs"):
            describe_run(populated.store, "abcd")
        assert describe_run(populated.store, "abcd1")["id"] == "abcd" + "1" * 28
    finally:
        with populated.store.session() as session:
            for suffix in ("1", "2"):
                session.delete(session.get_one(Run, "abcd" + suffix * 28))


def test_metric_history_is_not_a_final_value(populated: Populated) -> None:
    with populated.store.reader() as session:
        curve_rows = session.scalar(
            select(func.count()).where(RunMetric.key == "valid_auc", RunMetric.is_final.is_(False))
        )
    assert curve_rows == 5
    assert _names(populated, "metrics.valid_auc > 0") == []


def test_relative_times_count_back_from_now(populated: Populated) -> None:
    later = T0 + timedelta(days=30)
    page = search_runs(populated.store, "started_at >= '-2d'", now=later, reap=False)
    assert page.runs == []


def test_iter_all_walks_every_page(populated: Populated) -> None:
    runs = list(iter_all(populated.store, "tags.use_case = 'fraud'", page_size=2, reap=False))
    assert populated.names([r.id for r in runs]) == ["r6", "r4", "r5", "r2", "r1", "r8"]


def test_known_keys_lists_metric_param_and_tag_keys(populated: Populated) -> None:
    keys = known_keys(populated.store)
    assert keys["metrics"] == ["best_roc_auc", "log_loss", "roc_auc", "rows", "valid_auc"]
    assert "training.seed" in keys["params"] and "num_leaves" in keys["params"]
    assert keys["tags"] == ["team", "use_case"]

"""Contracts and ingest: typed reads, rule names, severities, spec validation of the contract,
idempotence and all-or-nothing batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from loopline.data.contracts import (
    CheckContext,
    ContractError,
    check_batch,
    pandera_schemas,
    read_batch,
    validate,
)
from loopline.data.ingest import ingest_files
from loopline.lake import tables
from loopline.settings import Settings
from loopline.spec import TableSpec, UseCaseSpec, load_spec, parse_check
from loopline.store import Store
from loopline.store.tables import DataBatch, DatasetVersion

SPEC = load_spec("fraud")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
HEADER = (
    "transaction_id,event_timestamp,customer_id,merchant_id,amount,"
    "merchant_category,channel,country,hour"
)
GOOD = [
    "tx-1,2026-01-01T10:00:00Z,1,2,10.50,grocery,chip,US,10",
    "tx-2,2026-01-01T11:30:00+00:00,1,3,99.00,travel,online,GB,11",
]


def _csv(folder: Path, name: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_read_batch_types_every_declared_column(tmp_path: Path) -> None:
    frame = read_batch(_csv(tmp_path, "a.csv", GOOD), SPEC.events)
    assert str(frame.schema["event_timestamp"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert frame.get_column("amount").to_list() == [10.5, 99.0]
    assert check_batch(frame, SPEC.events) == []


@pytest.mark.parametrize(
    ("row", "column", "rule", "severity"),
    [
        ("tx-3,2026-01-01T10:00:00Z,1,2,-5,grocery,chip,US,10", "amount", "min 0.01", "soft"),
        ("tx-3,2026-01-01T10:00:00Z,1,2,5,bar,chip,US,10", "merchant_category", "one of", "soft"),
        ("tx-3,2026-01-01T10:00:00Z,1,2,5,grocery,chip,US,24", "hour", "max 23", "soft"),
        ("tx-3,2026-01-01T10:00:00Z,1,2,5,grocery,chip,US,9", "hour", "hour_of_event", "soft"),
        ("tx-1,2026-01-01T09:00:00Z,1,2,5,grocery,chip,US,9", "transaction_id", "unique", "hard"),
        ("tx-3,2026-01-01T09:00:00Z,,2,5,grocery,chip,US,9", "customer_id", "not null", "hard"),
        ("tx-3,2026-01-01T09:00:00Z,-1,2,5,grocery,chip,US,9", "customer_id", "min 0", "hard"),
        ("tx-3,yesterday,1,2,5,grocery,chip,US,9", "event_timestamp", "parses as datetime", "hard"),
        ("tx-3,2026-01-01T10:00:00Z,one,2,5,grocery,chip,US,9", "customer_id", "parses as", "hard"),
    ],
)  # fmt: skip
def test_each_broken_rule_is_named_with_its_severity(
    tmp_path: Path, row: str, column: str, rule: str, severity: str
) -> None:
    path = _csv(tmp_path, "bad.csv", [*GOOD, row])
    try:
        violations = check_batch(read_batch(path, SPEC.events), SPEC.events, source="bad.csv")
    except ContractError as exc:
        violations = exc.violations
    hits = [v for v in violations if v.column == column and rule in v.rule and v.row == 3]
    assert hits and hits[0].severity == severity, violations


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("transaction_id,amount\ntx-1,3\n")
    with pytest.raises(ContractError, match="'event_timestamp' breaks 'column present'"):
        read_batch(path, SPEC.events)


def test_hard_and_soft_rules_go_to_separate_pandera_schemas() -> None:
    schemas = pandera_schemas(SPEC.events, CheckContext(now=NOW))
    hard, soft = schemas["hard"].columns, schemas["soft"].columns
    assert [c.error for c in soft["amount"].checks] == ["min 0.01", "max 100000", "finite"]
    assert not hard["amount"].checks and hard["amount"].nullable
    assert "unique" in [c.error for c in hard["transaction_id"].checks]
    assert [c.error for c in soft["event_timestamp"].checks] == [
        "not before 1970-01-01T00:00:00+00:00",
        "not after ingest time + 1d",
    ]


def test_validate_returns_failing_rows_for_quarantine() -> None:
    frame = pl.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "event_timestamp": [NOW - timedelta(hours=1), NOW + timedelta(days=30), NOW],
            "customer_id": [1, 2, 3],
            "merchant_id": [1, 2, 3],
            "amount": [1.0, float("inf"), 3.0],
            "merchant_category": ["grocery", "gas", "casino"],
            "channel": ["chip"] * 3,
            "country": ["US"] * 3,
            "hour": [23, 0, 0],
        }
    ).with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))
    result, rules = validate(frame, SPEC.events, context=CheckContext(now=NOW))
    assert result.hard == [] and result.quarantined == 2
    failing = result.soft_rows.group_by("index").agg("rule").sort("index")
    assert failing["index"].to_list() == [1, 2]
    assert {r.rule for r in rules} >= {"finite", "not after ingest time + 1d"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"columns": {"x": {"type": "string", "min": 1}}}, "apply to int or float"),
        ({"columns": {"x": {"type": "int", "values": ["a"]}}}, "'values' applies to"),
        ({"contract": {"rules": [{"name": "r", "check": "amount >"}]}}, "must compare two"),
        ({"contract": {"rules": [{"name": "r", "check": "nope == 1"}]}}, "'nope' is not declared"),
        ({"contract": {"rules": [{"name": "r", "check": "1 == amount"}]}}, "left side must be"),
        ({"contract": {"rules": [{"name": "r", "check": "x.y == amount"}]}}, "not in 'references'"),
        ({"contract": {"freshness": {"max_age": "soon"}}}, "max_age"),
        ({"source": {"encoding": "klingon"}}, "unknown text encoding"),
        ({"source": {"delimiter": ";;"}}, "delimiter"),
    ],
)
def test_contract_mistakes_in_the_spec_are_named(edit: dict, message: str) -> None:
    data = SPEC.events.model_dump()
    for key, value in edit.items():
        if key == "columns":
            data["columns"].update(value)
        else:
            data[key].update(value)
    with pytest.raises(ValidationError, match=message):
        TableSpec.model_validate(data)


def test_references_must_name_a_table_of_the_use_case() -> None:
    data = SPEC.model_dump()
    data["labels"]["contract"]["references"][0]["table"] = "orders"
    data["labels"]["contract"]["rules"] = []
    with pytest.raises(ValidationError, match="unknown table 'orders'"):
        UseCaseSpec.model_validate(data)


def test_row_rules_parse_functions_references_and_numbers() -> None:
    left, op, right = parse_check("hour(event_timestamp) <= 23")
    assert (left.func, left.column, op, right.number) == ("hour", "event_timestamp", "<=", 23.0)
    left, _, right = parse_check("label_timestamp >= transactions.event_timestamp")
    assert right.name == "transactions.event_timestamp"


def _ingest(settings: Settings, store: Store, paths: list[Path]):
    return ingest_files(
        store, lake_dir=settings.lake_dir, table=SPEC.events, use_case="fraud", paths=paths,
        run_id=None, now=NOW,
    )  # fmt: skip


def test_ingest_appends_a_version_and_same_input_twice_is_a_noop(settings: Settings) -> None:
    store = Store.open(settings)
    path = _csv(settings.raw_dir, "a.csv", GOOD)
    first = _ingest(settings, store, [path])
    assert (first.rows, first.table_version) == (2, 0)
    copy = _csv(settings.raw_dir, "renamed.csv", GOOD)
    second = _ingest(settings, store, [path, copy])
    assert second.rows == 0 and second.files_skipped == ["a.csv", "renamed.csv"]
    assert tables.current_version(tables.table_uri(settings.lake_dir, "transactions")) == 0
    with store.reader() as session:
        version = session.query(DatasetVersion).one()
        assert version.sources["files"][0]["name"] == "a.csv"
        assert (version.rows_in, version.row_count) == (2, 2)


def test_a_bad_file_in_a_batch_writes_nothing(settings: Settings) -> None:
    store = Store.open(settings)
    good = _csv(settings.raw_dir, "good.csv", GOOD)
    bad = _csv(settings.raw_dir, "bad.csv", ["tx-9,2026-01-02T10:00:00Z,x,2,1,grocery,chip,US,10"])
    with pytest.raises(ContractError, match="'customer_id' breaks 'parses as int'"):
        _ingest(settings, store, [good, bad])
    assert not tables.exists(tables.table_uri(settings.lake_dir, "transactions"))
    with store.reader() as session:
        assert session.query(DatasetVersion).count() == 0
        assert [b.status for b in session.query(DataBatch)] == ["rejected"]


def test_ids_already_ingested_are_refused(settings: Settings) -> None:
    store = Store.open(settings)
    _ingest(settings, store, [_csv(settings.raw_dir, "a.csv", GOOD)])
    again = _csv(settings.raw_dir, "b.csv", [GOOD[0].replace("10.50", "11.00")])
    with pytest.raises(ContractError, match="not already ingested"):
        _ingest(settings, store, [again])
    assert tables.current_version(tables.table_uri(settings.lake_dir, "transactions")) == 0


def test_missing_file_is_a_clear_error(settings: Settings) -> None:
    from loopline.data.sources import SourceError

    with pytest.raises(SourceError, match=r"nope\.csv"):
        _ingest(settings, Store.open(settings), [settings.raw_dir / "nope.csv"])

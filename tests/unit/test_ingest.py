"""Contracts and ingest: typed reads, rule violations, idempotence, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.data.contracts import ContractError, check_batch, read_batch
from loopline.data.ingest import ingest_files
from loopline.lake import tables
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.store import Store
from loopline.store.tables import DatasetVersion

SPEC = load_spec("fraud")
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
    ("row", "column", "rule"),
    [
        ("tx-3,2026-01-01T10:00:00Z,1,2,-5,grocery,chip,US,10", "amount", "greater_than"),
        ("tx-3,2026-01-01T10:00:00Z,1,2,5,casino,chip,US,10", "merchant_category", "isin"),
        ("tx-3,2026-01-01T10:00:00Z,1,2,5,grocery,chip,US,24", "hour", "less_than"),
        ("tx-1,2026-01-01T10:00:00Z,1,2,5,grocery,chip,US,9", "transaction_id", "uniqueness"),
        ("tx-3,2026-01-01T10:00:00Z,,2,5,grocery,chip,US,9", "customer_id", "nullable"),
        ("tx-3,yesterday,1,2,5,grocery,chip,US,9", "event_timestamp", "parses as datetime"),
        ("tx-3,2026-01-01T10:00:00Z,one,2,5,grocery,chip,US,9", "customer_id", "parses as int"),
    ],
)
def test_each_broken_rule_is_named(tmp_path: Path, row: str, column: str, rule: str) -> None:
    path = _csv(tmp_path, "bad.csv", [*GOOD, row])
    try:
        violations = check_batch(read_batch(path, SPEC.events), SPEC.events)
    except ContractError as exc:
        violations = exc.violations
    assert any(v.column == column and rule in v.rule for v in violations), violations


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("transaction_id,amount\ntx-1,3\n")
    with pytest.raises(ContractError, match="'event_timestamp' breaks 'column present'"):
        read_batch(path, SPEC.events)


def _ingest(settings: Settings, store: Store, paths: list[Path]):
    return ingest_files(
        store, lake_dir=settings.lake_dir, table=SPEC.events, use_case="fraud", paths=paths,
        run_id=None,
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
    bad = _csv(settings.raw_dir, "bad.csv", ["tx-9,2026-01-02T10:00:00Z,1,2,-1,grocery,chip,US,10"])
    with pytest.raises(ContractError, match="amount"):
        _ingest(settings, store, [good, bad])
    assert not tables.exists(tables.table_uri(settings.lake_dir, "transactions"))
    with store.reader() as session:
        assert session.query(DatasetVersion).count() == 0


def test_ids_already_ingested_are_refused(settings: Settings) -> None:
    store = Store.open(settings)
    _ingest(settings, store, [_csv(settings.raw_dir, "a.csv", GOOD)])
    again = _csv(settings.raw_dir, "b.csv", [GOOD[0].replace("10.50", "11.00")])
    with pytest.raises(ContractError, match="not already ingested"):
        _ingest(settings, store, [again])
    assert tables.current_version(tables.table_uri(settings.lake_dir, "transactions")) == 0


def test_missing_file_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        _ingest(settings, Store.open(settings), [settings.raw_dir / "nope.csv"])

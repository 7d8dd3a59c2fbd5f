"""Malformed input, one case each: rejected or quarantined, with the column, rule and value.

A rejected batch leaves the curated table, the quarantine table and the store's versions
exactly as they were (its report is recorded as a rejected batch). A quarantined row keeps the
rule and value that sent it there, and the rest of the batch goes through.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from data_helpers import (
    BASE_EVENTS,
    EVENT_COLUMNS,
    SPEC,
    Env,
    event,
    label,
    with_contract,
    write_csv,
)

from loopline.data import sources
from loopline.data.contracts import ContractError
from loopline.data.ingest import quarantine_uri
from loopline.data.sources import SourceError
from loopline.spec import TableSpec


def _events(folder: Path, rows: list[dict[str, object]], name: str = "batch.csv") -> Path:
    """A batch of 60 good new events followed by `rows` (so soft failures stay under 5%)."""
    good = [event(100 + i) for i in range(60)]
    return write_csv(folder / name, [*good, *rows], columns=EVENT_COLUMNS)


def _raw(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def _csv_text(rows: list[dict[str, object]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    frame = pl.DataFrame([{k: str(v) for k, v in r.items()} for r in rows])
    frame.write_csv(buffer, separator=delimiter)
    return buffer.getvalue()


def _parquet(folder: Path, frame: pl.DataFrame, name: str = "batch.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.write_parquet(path)
    return path


def _typed_events(n: int = 10, start: int = 300) -> pl.DataFrame:
    rows = [event(start + i) for i in range(n)]
    frame = pl.DataFrame([{k: str(v) for k, v in r.items()} for r in rows])
    return frame.with_columns(
        pl.col("event_timestamp").str.to_datetime(time_zone="UTC"),
        pl.col("customer_id", "merchant_id", "hour").cast(pl.Int64),
        pl.col("amount").cast(pl.Float64),
    )


@dataclass
class Case:
    """One malformed input and what the contract must say about it."""

    make: Callable[[Path], Path]
    outcome: str  # "reject" or "quarantine"
    column: str
    rule: str
    value: str
    table: TableSpec = field(default_factory=lambda: SPEC.events)


def _truncated_parquet(folder: Path) -> Path:
    path = _parquet(folder, _typed_events())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


CASES: dict[str, Case] = {
    "wrong type in an int column": Case(
        lambda d: _events(d, [event(1, transaction_id="tx-bad1", customer_id="one")]),
        "reject", "customer_id", "parses as int", "one",
    ),
    "NaN in a float column": Case(
        lambda d: _events(d, [event(200, amount="NaN")]),
        "quarantine", "amount", "finite", "NaN",
    ),
    "+inf in a float column": Case(
        lambda d: _events(d, [event(200, amount="inf")]),
        "quarantine", "amount", "finite", "inf",
    ),
    "-inf in a float column": Case(
        lambda d: _events(d, [event(200, amount="-inf")]),
        "quarantine", "amount", "finite", "-inf",
    ),
    "NaN in an int column": Case(
        lambda d: _events(d, [event(200, hour="NaN")]),
        "reject", "hour", "parses as int", "NaN",
    ),
    "empty file": Case(
        lambda d: _raw(d, "empty.csv", b""), "reject", "(file)", "not empty", "0 bytes"
    ),
    "header-only file": Case(
        lambda d: write_csv(d / "header.csv", [], columns=EVENT_COLUMNS),
        "reject", "(file)", "has rows", "0 rows",
    ),
    "UTF-16 byte-order mark": Case(
        lambda d: _raw(d, "utf16.csv", _csv_text([event(200)]).encode("utf-16")),
        "reject", "(file)", "encoding utf-8", "UTF-16-LE byte-order mark",
    ),
    "wrong delimiter": Case(
        lambda d: _raw(d, "semi.csv", _csv_text([event(200)], delimiter=";").encode()),
        "reject", "transaction_id", "column present", "is the delimiter ';'",
    ),
    "non-UTF-8 bytes": Case(
        lambda d: _raw(
            d, "latin1.csv",
            _csv_text([event(200, merchant_category="caf\u00e9")]).encode("latin-1"),
        ),
        "reject", "(file)", "encoding utf-8", "byte 0xe9 after '0:00+00:00,5,1,30.50,caf'",
    ),
    "duplicate keys in the batch": Case(
        lambda d: _events(d, [event(200), event(200)]),
        "reject", "transaction_id", "unique", "tx-00200",
    ),
    "key already ingested": Case(
        lambda d: _events(d, [event(3, amount="11.00")]),
        "reject", "transaction_id", "not already ingested", "tx-00003",
    ),
    "unknown category": Case(
        lambda d: _events(d, [event(200, merchant_category="casino")]),
        "quarantine", "merchant_category", "one of [grocery", "casino",
    ),
    "null in the key": Case(
        lambda d: _events(d, [event(200, transaction_id="")]),
        "reject", "transaction_id", "not null", "None",
    ),
    "far-future timestamp": Case(
        lambda d: _events(d, [event(200, event_timestamp="2031-01-01T00:00:00+00:00", hour=0)]),
        "quarantine", "event_timestamp", "not after ingest time", "2031-01-01",
    ),
    "pre-epoch timestamp": Case(
        lambda d: _events(d, [event(200, event_timestamp="1969-07-20T20:17:00+00:00", hour=20)]),
        "quarantine", "event_timestamp", "not before 1970-01-01", "1969-07-20",
    ),
    "naive and aware timestamps mixed": Case(
        lambda d: _events(d, [event(200, event_timestamp="2026-05-20 10:00:00", hour=10)]),
        "reject", "event_timestamp", "no naive/aware mix", "2026-05-20 10:00:00",
    ),
    "truncated Parquet file": Case(
        _truncated_parquet, "reject", "(file)", "readable parquet", "parquet"
    ),
    "Parquet column of another type": Case(
        lambda d: _parquet(d, _typed_events().with_columns(pl.col("amount") > 50)),
        "reject", "amount", "type float (file has Boolean)", "false",
    ),
    "Parquet file missing a column": Case(
        lambda d: _parquet(d, _typed_events().rename({"merchant_id": "merchant"})),
        "reject", "merchant_id", "column present", "merchant",
    ),
    "CSV with an undeclared column (contract: reject)": Case(
        lambda d: write_csv(d / "extra.csv", [{**event(200), "ip": "10.0.0.1"}]),
        "reject", "ip", "column declared", "ip",
        table=with_contract(SPEC.events, extra_columns="reject"),
    ),
    "missing column": Case(
        lambda d: write_csv(
            d / "short.csv", [event(200)], columns=[c for c in EVENT_COLUMNS if c != "amount"]
        ),
        "reject", "amount", "column present", "columns found",
    ),
    "10 MB single value on one line": Case(
        lambda d: _events(d, [event(200, transaction_id="x" * 10_000_000)]),
        "reject", "transaction_id", "length <= 64", "bytes)",
    ),
    "10 MB line without a line break": Case(
        lambda d: _raw(d, "oneline.csv", b"x" * 10_000_000),
        "reject", "transaction_id", "column present", "bytes)",
    ),
    "a row with too many fields": Case(
        lambda d: _raw(
            d, "ragged.csv",
            (_csv_text([event(200)]) + _csv_text([event(201)]).splitlines()[1] + ",x\n").encode(),
        ),
        "reject", "(file)", "readable csv", "more fields",
    ),
    "amount below the minimum": Case(
        lambda d: _events(d, [event(200, amount="-5")]),
        "quarantine", "amount", "min 0.01", "-5.0",
    ),
    "hour out of range": Case(
        lambda d: _events(d, [event(200, hour=24)]),
        "quarantine", "hour", "max 23", "24",
    ),
    "hour that contradicts the timestamp (cross-field)": Case(
        lambda d: _events(d, [event(200, hour=(event(200)["hour"] + 1) % 24)]),
        "quarantine", "hour", "hour_of_event", str((event(200)["hour"] + 1) % 24),
    ),
    "label dated before its event (cross-table)": Case(
        lambda d: write_csv(
            d / "labels.csv",
            [label(20 + i) for i in range(19)]
            + [label(39, label_timestamp="2026-04-01T00:00:00+00:00")],
        ),
        "quarantine", "label_timestamp", "label_after_event", "2026-04-01",
        table=with_contract(SPEC.labels, max_quarantine_fraction=0.1),
    ),
    "label of an unknown transaction": Case(
        lambda d: write_csv(d / "labels.csv", [label(20 + i) for i in range(19)] + [label(9999)]),
        "quarantine", "transaction_id", "references transactions.transaction_id", "tx-09999",
        table=with_contract(SPEC.labels, max_quarantine_fraction=0.1),
    ),
    "label value out of a hard range": Case(
        lambda d: write_csv(d / "labels.csv", [label(21), label(22, is_fraud=2)]),
        "reject", "is_fraud", "max 1", "2", table=SPEC.labels,
    ),
    "too many failing rows": Case(
        lambda d: write_csv(
            d / "mostly_bad.csv", [event(200 + i, amount="-1") for i in range(5)] + [event(300)]
        ),
        "reject", "(batch)", "quarantined share <= 0.05", "5 of 6 rows",
    ),
    "unsupported file type": Case(
        lambda d: _raw(d, "events.xlsx", b"PK\x03\x04"), "reject", "(file)", "file type one of",
        ".xlsx",
    ),
    "JSON Lines with a broken line": Case(
        lambda d: _raw(d, "events.jsonl", b'{"transaction_id": "tx-1"}\n{"transaction_id": \n'),
        "reject", "(file)", "readable ndjson", "",
    ),
    "stale batch under a hard freshness rule": Case(
        lambda d: _events(d, []),
        "reject", "event_timestamp", "fresh: newest within 1d", "2026-05",
        table=with_contract(SPEC.events, freshness={"max_age": "1d", "severity": "hard"}),
    ),
}  # fmt: skip


def test_at_least_25_malformed_inputs() -> None:
    assert len(CASES) + len(SOURCE_CASES) + 1 >= 25  # +1: the file that changes while read


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_rejected_or_quarantined(env: Env, name: str) -> None:
    case = CASES[name]
    before = env.state()
    path = case.make(env.raw)
    if case.outcome == "reject":
        with pytest.raises(ContractError) as caught:
            env.ingest(case.table, [path])
        message = str(caught.value).splitlines()[0]
        assert f"column '{case.column}'" in message, message
        assert case.rule in message, message
        assert case.value in message, message
        assert env.state() == before, "a rejected batch changed the lake or the versions"
        assert env.batches("rejected") == 1
        assert caught.value.report is not None and caught.value.report["status"] == "rejected"
        return
    result = env.ingest(case.table, [path])
    assert result.status == "committed" and result.rows_quarantined == 1, result
    quarantined = pl.read_delta(quarantine_uri(env.settings.lake_dir, case.table))
    reasons = quarantined.explode("_violations").unnest("_violations")
    hit = reasons.filter(
        (pl.col("column") == case.column)
        & pl.col("rule").str.contains(case.rule, literal=True)
        & pl.col("value").fill_null("None").str.contains(case.value, literal=True)
    )
    assert hit.height == 1, reasons.select("column", "rule", "value", "_source", "_row")
    assert hit["_source"][0] == path.name and hit["_row"][0] >= 1
    assert result.rows == result.rows_in - 1


SOURCE_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "path that does not exist": (lambda d: str(d / "nope.csv"), "input file not found"),
    "directory with no data file": (
        lambda d: str((d / "empty_dir").mkdir(parents=True) or d / "empty_dir"),
        "holds no file of a supported type",
    ),
    "symbolic link loop": (
        lambda d: (
            d.mkdir(parents=True, exist_ok=True),
            os.symlink(d / "loop_b.csv", d / "loop_a.csv"),
            os.symlink(d / "loop_a.csv", d / "loop_b.csv"),
            str(d / "loop_a.csv"),
        )[-1],
        "symbolic link loop",
    ),
    "glob that matches nothing": (lambda d: str(d / "*.parquet"), "matches"),
}


@pytest.mark.parametrize("name", list(SOURCE_CASES))
def test_unusable_path_is_named_and_changes_nothing(env: Env, name: str) -> None:
    make, message = SOURCE_CASES[name]
    before = env.state()
    path = make(env.raw)
    with pytest.raises(SourceError, match=message) as caught:
        env.ingest(SPEC.events, [path])
    assert Path(path).name in str(caught.value) or "*" in str(caught.value)
    assert env.state() == before
    assert env.batches() == 2  # the base batches only


def test_a_file_that_changes_while_being_read_is_rejected(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _events(env.raw, [])
    real = sources.read_csv_typed

    def read_then_append(*args: object, **kwargs: object) -> pl.DataFrame:
        frame = real(*args, **kwargs)  # type: ignore[arg-type]
        with open(path, "a") as handle:  # a writer appends while the batch is being read
            handle.write(",".join(str(v) for v in event(500).values()) + "\n")
        return frame

    monkeypatch.setattr(sources, "read_csv_typed", read_then_append)
    before = env.state()
    with pytest.raises(
        ContractError, match=r"column '\(file\)' breaks 'unchanged while being read'"
    ):
        env.ingest(SPEC.events, [path])
    assert env.state() == before


def test_a_utf8_byte_order_mark_is_removed_and_noted(env: Env) -> None:
    path = _raw(env.raw, "bom.csv", b"\xef\xbb\xbf" + _csv_text([event(200), event(201)]).encode())
    result = env.ingest(SPEC.events, [path])
    assert result.status == "committed" and result.rows == 2
    assert any("byte-order mark removed" in w for w in result.warnings)


def test_rejected_batch_report_lists_every_failure(env: Env) -> None:
    rows = [event(200 + i, customer_id="x") for i in range(12)]
    with pytest.raises(ContractError) as caught:
        env.ingest(SPEC.events, [_events(env.raw, rows)])
    (result,) = [r for r in caught.value.results if r.rule == "parses as int"]
    assert result.failures == 12 and len(result.examples) == 5
    assert [v.row for v in result.examples] == [61, 62, 63, 64, 65]
    assert "12 violation(s)" in str(caught.value)
    assert BASE_EVENTS == 40

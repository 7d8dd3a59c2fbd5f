"""The prediction log: day files, thread-safe appends, torn-line tolerance, window reads."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loopline.serving.prediction_log import (
    BASE_SCHEMA,
    PredictionLog,
    PredictionLogError,
    log_file,
    read_prediction_log,
)

DAY1 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


def record(request_id: str, ts: datetime, **changes: Any) -> dict[str, Any]:
    base = {
        "request_id": request_id,
        "ts": ts,
        "model_name": "fraud-detector",
        "model_version": 3,
        "model_version_id": "abc123",
        "feature_service": "fraud_v1",
        "alias": "champion",
        "request": {"customer_id": 1, "amount": 9.5, "channel": "online"},
        "inputs": {"amount": 9.5, "channel": 3.0, "cust_txn_count_7d": 2.0},
        "score": 0.25,
    }
    return {**base, **changes}


def write(directory: Path, records: list[dict[str, Any]]) -> None:
    log = PredictionLog(directory)
    for r in records:
        log.append(r)
    log.close()


def test_round_trip_one_file_per_utc_day(tmp_path: Path) -> None:
    # 21:00 on March 1st at UTC-05:00 is 02:00 UTC on March 2nd: the day file follows UTC.
    local = datetime(2026, 3, 1, 21, 0, tzinfo=timezone(timedelta(hours=-5)))
    write(tmp_path, [record("a", DAY1), record("c", local), record("b", DAY1 + timedelta(hours=3))])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "predictions-2026-03-01.jsonl",
        "predictions-2026-03-02.jsonl",
    ]
    frame = read_prediction_log(tmp_path)
    assert frame["request_id"].to_list() == ["a", "b", "c"]  # oldest first
    assert {n: frame.schema[n] for n in BASE_SCHEMA} == BASE_SCHEMA
    assert frame["ts"][2] == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    first = frame.row(0, named=True)
    assert first["request"] == {"customer_id": 1, "amount": 9.5, "channel": "online"}
    assert first["inputs"] == {"amount": 9.5, "channel": 3.0, "cust_txn_count_7d": 2.0}
    assert first["score"] == 0.25


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, ["a", "b", "c", "d"]),
        (DAY1, None, ["a", "b", "c", "d"]),
        (DAY1 + timedelta(microseconds=1), None, ["b", "c", "d"]),
        (None, DAY1 + timedelta(hours=2), ["a", "b"]),  # until is exclusive
        (DAY1 + timedelta(hours=1), DAY1 + timedelta(days=1), ["b", "c"]),
        (DAY1 + timedelta(days=5), None, []),
    ],
)
def test_window_reads(
    tmp_path: Path, since: datetime | None, until: datetime | None, expected: list[str]
) -> None:
    hours = {"a": 0, "b": 1, "c": 2, "d": 26}
    write(tmp_path, [record(k, DAY1 + timedelta(hours=h)) for k, h in hours.items()])
    frame = read_prediction_log(tmp_path, since=since, until=until)
    assert frame["request_id"].to_list() == expected


@pytest.mark.parametrize(
    "torn",
    [
        b'{"request_id": "z", "ts": "2026-03-01T22:',
        b"{",
        b'{"request_id":"z","ts":"2026-03-01T22:00:00.000000+00:00","score":0.5',
        b"\xe2\x82",  # half of a multi-byte character
    ],
)
def test_torn_last_line_is_skipped_and_later_appends_survive(tmp_path: Path, torn: bytes) -> None:
    write(tmp_path, [record("a", DAY1), record("b", DAY1 + timedelta(minutes=1))])
    with log_file(tmp_path, DAY1.date()).open("ab") as handle:
        handle.write(torn)  # a crash mid-write
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["a", "b"]
    # A restarted server appends after the torn fragment, on a line of its own.
    write(tmp_path, [record("c", DAY1 + timedelta(minutes=2))])
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["a", "b", "c"]


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    threads, per_thread = 8, 150

    def worker(t: int) -> None:
        for i in range(per_thread):
            log.append(
                record(f"t{t}-{i}", DAY1 + timedelta(microseconds=i), inputs={"x": "y" * 500})
            )

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    log.close()
    lines = log_file(tmp_path, DAY1.date()).read_bytes().splitlines()
    assert len(lines) == threads * per_thread
    assert all(json.loads(line)["inputs"]["x"] == "y" * 500 for line in lines)
    frame = read_prediction_log(tmp_path)
    assert frame["request_id"].n_unique() == threads * per_thread


def test_each_line_is_on_disk_before_append_returns(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", DAY1))
    # Read through another handle while the writer keeps its file open (no close, no flush).
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["a"]
    log.close()


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    nan_inputs = {"amount": float("nan"), "channel": float("inf"), "cust_txn_count_7d": 1.0}
    write(tmp_path, [record("a", DAY1, inputs=nan_inputs, score=float("nan"))])
    text = log_file(tmp_path, DAY1.date()).read_text()
    assert "NaN" not in text and "Infinity" not in text
    row = read_prediction_log(tmp_path).row(0, named=True)
    assert row["inputs"] == {"amount": None, "channel": None, "cust_txn_count_7d": 1.0}
    assert row["score"] is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ts": datetime(2026, 3, 1, 22, 0)}, "ts: must be a timezone-aware datetime"),
        ({"ts": "2026-03-01T22:00:00Z"}, "ts: must be a timezone-aware datetime"),
        ({"inputs": {"x": object()}}, "not JSON-serializable"),
    ],
)
def test_malformed_record_raises_and_writes_nothing(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    log = PredictionLog(tmp_path)
    with pytest.raises(PredictionLogError, match=message):
        log.append({**record("a", DAY1), **bad})
    log.close()
    assert read_prediction_log(tmp_path).is_empty()


def test_naive_bounds_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="since: must be timezone-aware"):
        read_prediction_log(tmp_path, since=datetime(2026, 3, 1))


@pytest.mark.parametrize("layout", ["missing", "empty", "foreign files"])
def test_no_log_reads_as_empty_frame(tmp_path: Path, layout: str) -> None:
    directory = tmp_path / "log"
    if layout != "missing":
        directory.mkdir()
    if layout == "foreign files":
        (directory / "notes.txt").write_text("hello")
        (directory / "predictions-latest.jsonl").write_text('{"request_id": "x"}\n')
        (directory / "predictions-2026-03-01.jsonl").write_text("")
    frame = read_prediction_log(directory)
    assert frame.is_empty()
    assert frame.schema == pl.Schema(BASE_SCHEMA)

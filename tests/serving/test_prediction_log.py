"""The prediction log: round trips through spool and Delta table, windows, errors, backpressure."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from loopline.lake import tables
from loopline.serving import prediction_log as plog
from loopline.serving.prediction_log import (
    BASE_SCHEMA,
    PredictionLog,
    PredictionLogClosed,
    PredictionLogError,
    PredictionLogFlushError,
    PredictionLogFull,
    PredictionLogUnavailable,
    PredictionRecordError,
    lookup_prediction,
    read_prediction_log,
)
from loopline.settings import Settings

DAY1 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


def record(request_id: str, ts: datetime, **changes: Any) -> dict[str, Any]:
    base = {
        "request_id": request_id,
        "ts": ts,
        "received_at": ts + timedelta(milliseconds=3),
        "model_name": "fraud-detector",
        "model_version": 3,
        "model_version_id": "abc123",
        "feature_service": "fraud_v1",
        "alias": "champion",
        "role": "champion",
        "entities": {"customer_id": 1},
        "request": {"customer_id": 1, "amount": 9.5, "channel": "online"},
        "features": {"cust_txn_count_7d": 2, "cust_last_seen": DAY1},
        "feature_timestamps": {"customer_activity": DAY1 - timedelta(hours=1), "merchant": None},
        "inputs": {"amount": 9.5, "channel": 3.0, "cust_txn_count_7d": 2.0},
        "score": 0.25,
        "latency_ms": 1.5,
        "unknown_entities": [],
    }
    return {**base, **changes}


def write(directory: Path, records: list[dict[str, Any]], **options: Any) -> None:
    with PredictionLog(directory, **options) as log:
        for r in records:
            log.append(r)


def spool_files(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "_spool").glob("*.spool"))


def test_round_trip_partitioned_by_utc_day(tmp_path: Path) -> None:
    # 21:00 on March 1st at UTC-05:00 is 02:00 UTC on March 2nd: the partition follows UTC.
    local = datetime(2026, 3, 1, 21, 0, tzinfo=timezone(timedelta(hours=-5)))
    write(tmp_path, [record("a", DAY1), record("c", local), record("b", DAY1 + timedelta(hours=3))])
    partitions = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("day="))
    assert partitions == ["day=2026-03-01", "day=2026-03-02"]
    assert spool_files(tmp_path) == []  # closed: everything committed, segments deleted
    frame = read_prediction_log(tmp_path)
    assert frame["request_id"].to_list() == ["a", "b", "c"]  # oldest first
    assert {n: frame.schema[n] for n in BASE_SCHEMA} == BASE_SCHEMA
    assert frame.columns[: len(BASE_SCHEMA)] == list(BASE_SCHEMA)
    assert frame["ts"][2] == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    first = frame.row(0, named=True)
    assert first["received_at"] == DAY1 + timedelta(milliseconds=3)
    assert first["role"] == "champion" and first["latency_ms"] == 1.5
    assert first["request"] == {"customer_id": 1, "amount": 9.5, "channel": "online"}
    assert first["inputs"] == {"amount": 9.5, "channel": 3.0, "cust_txn_count_7d": 2.0}
    assert first["entities"] == {"customer_id": 1}
    assert first["features"]["cust_txn_count_7d"] == 2
    assert first["features"]["cust_last_seen"] == DAY1.isoformat()
    assert first["feature_timestamps"] == {
        "customer_activity": "2026-03-01T21:00:00.000000+00:00",
        "merchant": None,
    }
    assert first["unknown_entities"] == [] and first["score"] == 0.25
    assert "extra" not in frame.columns


def test_minimal_record_and_extra_keys(tmp_path: Path) -> None:
    minimal = {"request_id": "m", "ts": DAY1, "model_name": "reg", "model_version": 1}
    write(tmp_path, [minimal, {**minimal, "request_id": "n", "shadow_of": "m"}])
    frame = read_prediction_log(tmp_path)
    assert frame["request_id"].to_list() == ["m", "n"]
    row = frame.row(1, named=True)
    assert row["score"] is None and row["request"] is None and row["role"] is None
    assert row["extra"] == {"shadow_of": "m"}


def test_each_batch_is_one_version_naming_its_spool_range(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, autoflush=False, batch_rows=2) as log:
        for i in range(5):
            log.append(record(f"r{i}", DAY1 + timedelta(seconds=i)))
        assert log.flush() == 5
    history = sorted(DeltaTable(str(tmp_path)).history(), key=lambda h: h["version"])
    assert [h["loopline.prediction_log.rows"] for h in history] == ["2", "2", "1"]
    segments = {h["loopline.prediction_log.segment"] for h in history}
    assert len(segments) == 1 and segments.pop().endswith("-00000000.spool")
    ranges = [
        (int(h["loopline.prediction_log.start"]), int(h["loopline.prediction_log.end"]))
        for h in history
    ]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize("flushed", [True, False])
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
    tmp_path: Path,
    since: datetime | None,
    until: datetime | None,
    expected: list[str],
    flushed: bool,
) -> None:
    hours = {"a": 0, "b": 1, "c": 2, "d": 26}
    log = PredictionLog(tmp_path, autoflush=False)
    for key, h in hours.items():
        log.append(record(key, DAY1 + timedelta(hours=h)))
    if flushed:
        log.flush()
    frame = read_prediction_log(tmp_path, since=since, until=until)
    assert frame["request_id"].to_list() == expected
    log.close()


def test_spooled_records_are_visible_exactly_once(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, autoflush=False, batch_rows=2)
    for i in range(3):
        log.append(record(f"r{i}", DAY1 + timedelta(seconds=i)))
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["r0", "r1", "r2"]
    assert read_prediction_log(tmp_path, include_spool=False).is_empty()
    log._commit(*log._next_batch())  # one batch of two: the third stays spooled
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["r0", "r1", "r2"]
    assert read_prediction_log(tmp_path, include_spool=False).height == 2
    assert log.stats().pending == 1
    log.close()
    assert read_prediction_log(tmp_path, include_spool=False).height == 3


def test_concurrent_appends_with_background_flushes(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=0.05, batch_rows=100, segment_bytes=64 << 10)
    threads, per_thread = 8, 150

    def worker(t: int) -> None:
        for i in range(per_thread):
            log.append(
                record(f"t{t}-{i}", DAY1 + timedelta(microseconds=i), request={"x": "y" * 500})
            )

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    stats = log.close()
    assert stats.appended == stats.flushed == threads * per_thread
    assert stats.pending == 0 and stats.spool_bytes == 0
    assert spool_files(tmp_path) == []  # rotated segments deleted once committed
    frame = read_prediction_log(tmp_path)
    assert frame.height == frame["request_id"].n_unique() == threads * per_thread
    assert frame["request"].struct.field("x").eq("y" * 500).all()


def test_background_flusher_commits_within_the_interval(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=0.05)
    log.append(record("a", DAY1))
    deadline = time.monotonic() + 10
    while log.stats().flushed == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.stats().flushed == 1 and log.stats().last_flush_at is not None
    assert read_prediction_log(tmp_path, include_spool=False)["request_id"].to_list() == ["a"]
    log.close()


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    nan_inputs = {"amount": float("nan"), "channel": float("inf"), "cust_txn_count_7d": 1.0}
    write(tmp_path, [record("a", DAY1, inputs=nan_inputs, score=float("nan"))])
    row = read_prediction_log(tmp_path).row(0, named=True)
    assert row["inputs"] == {"amount": None, "channel": None, "cust_txn_count_7d": 1.0}
    assert row["score"] is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ts": datetime(2026, 3, 1, 22, 0)}, "ts: must be a timezone-aware datetime"),
        ({"ts": "2026-03-01T22:00:00Z"}, "ts: must be a timezone-aware datetime"),
        ({"ts": None}, "ts: must be a timezone-aware datetime"),
        ({"received_at": datetime(2026, 3, 1)}, "received_at: must be a timezone-aware"),
        ({"request_id": None}, "missing required field"),
        ({"request_id": ""}, "request_id: must be a non-empty string"),
        ({"model_version": "3"}, "model_version: must be an integer"),
        ({"model_version": True}, "model_version: must be an integer"),
        ({"role": "primary"}, "role: must be one of"),
        ({"request": {"x": object()}}, "not JSON-serializable"),
        ({"inputs": {"x": object()}}, "inputs.x: must be a number"),
        ({"inputs": {"x": "high"}}, "inputs.x: must be a number"),
        ({"inputs": [1.0]}, "inputs: must be a mapping"),
        ({"score": "0.5"}, "score: must be a number"),
        ({"unknown_entities": "customer_id=1"}, "unknown_entities: must be a list"),
        ({"feature_timestamps": {"v": datetime(2026, 3, 1)}}, "feature_timestamps.v: must be"),
        ({"request": {"blob": "x" * 2000}}, "bytes encoded; at most 1024"),
    ],
)
def test_malformed_record_raises_and_writes_nothing(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    log = PredictionLog(tmp_path, max_record_bytes=1024)
    with pytest.raises(PredictionRecordError, match=message) as caught:
        log.append({**record("a", DAY1), **bad})
    assert isinstance(caught.value, PredictionLogError) and isinstance(caught.value, ValueError)
    assert log.stats().appended == 0 and log.stats().spool_bytes == 0
    assert all(p.stat().st_size == 0 for p in (tmp_path / "_spool").glob("*.spool"))
    log.close()
    assert read_prediction_log(tmp_path).is_empty()
    assert not tables.exists(str(tmp_path))


def test_full_spool_refuses_records_and_counts_them(tmp_path: Path) -> None:
    one = len(plog.encode_record(record("r0", DAY1)))
    log = PredictionLog(tmp_path, autoflush=False, max_spool_bytes=3 * one + one // 2)
    for i in range(3):
        log.append(record(f"r{i}", DAY1 + timedelta(seconds=i)))
    with pytest.raises(PredictionLogFull, match="spool full") as caught:
        log.append(record("r3", DAY1 + timedelta(seconds=3)))
    assert isinstance(caught.value, PredictionLogUnavailable) and isinstance(caught.value, OSError)
    stats = log.stats()
    assert (stats.appended, stats.pending, stats.rejected_full) == (3, 3, 1)
    assert stats.spool_bytes == 3 * one
    assert log.flush() == 3  # the table caught up: room again
    log.append(record("r4", DAY1 + timedelta(seconds=4)))
    log.close()
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["r0", "r1", "r2", "r4"]


def test_append_many_is_all_or_nothing(tmp_path: Path) -> None:
    one = len(plog.encode_record(record("r0", DAY1)))
    log = PredictionLog(tmp_path, autoflush=False, max_spool_bytes=3 * one + one // 2)
    batch = [record(f"r{i}", DAY1 + timedelta(seconds=i)) for i in range(3)]
    with pytest.raises(PredictionRecordError, match=r"^record 1: ts: must be"):
        log.append_many([batch[0], {**batch[1], "ts": None}, batch[2]])
    with pytest.raises(PredictionLogFull):
        log.append_many([*batch, record("r3", DAY1)])
    assert (log.stats().appended, log.stats().rejected_full) == (0, 4)
    log.append_many(batch)
    log.append_many([])
    assert log.stats().appended == 3
    log.close()
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["r0", "r1", "r2"]


def test_failed_commits_keep_records_and_are_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = tables.append
    failures = {"left": 3}

    def flaky(*args: Any, **kwargs: Any) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(28, "No space left on device")
        return real_append(*args, **kwargs)

    monkeypatch.setattr(plog.tables, "append", flaky)
    log = PredictionLog(tmp_path, autoflush=False)
    log.append(record("a", DAY1))
    with pytest.raises(PredictionLogFlushError, match="No space left"):
        log.flush()
    stats = log.stats()
    assert (stats.flush_errors, stats.pending, stats.flushed) == (1, 1, 0)
    assert "No space left on device" in (stats.last_error or "")
    log.close()  # fails again: logged, the record stays spooled for the next writer
    assert len(spool_files(tmp_path)) == 1
    # The next writer replays it; its background flusher retries after one more failure.
    log = PredictionLog(tmp_path, flush_interval_s=0.02)
    deadline = time.monotonic() + 10
    while log.stats().flushed == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = log.close()
    assert (stats.flushed, stats.replayed, stats.flush_errors) == (1, 1, 1)
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["a"]
    assert spool_files(tmp_path) == []


def test_commit_that_landed_before_failing_is_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = tables.append

    def lands_then_fails(*args: Any, **kwargs: Any) -> int:
        real_append(*args, **kwargs)
        raise TimeoutError("connection lost after the commit")

    monkeypatch.setattr(plog.tables, "append", lands_then_fails)
    log = PredictionLog(tmp_path, autoflush=False)
    log.append(record("a", DAY1))
    with pytest.raises(PredictionLogFlushError):
        log.flush()
    monkeypatch.setattr(plog.tables, "append", real_append)
    log.append(record("b", DAY1 + timedelta(seconds=1)))
    log.close()
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["a", "b"]


def test_closed_log_refuses_records(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", DAY1))
    first = log.close()
    assert log.close() == first  # idempotent
    with pytest.raises(PredictionLogClosed):
        log.append(record("b", DAY1))
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["a"]


def test_lookup_by_request_id(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, autoflush=False)
    log.append(record("a", DAY1))
    log.append(record("a", DAY1, role="shadow", model_version=4, score=0.3))
    log.append(record("b", DAY1))
    log.flush()
    log.append(record("c", DAY1))  # still spooled
    found = lookup_prediction(tmp_path, "a")
    assert found.select("role", "model_version").rows() == [("champion", 3), ("shadow", 4)]
    assert lookup_prediction(tmp_path, "c")["request_id"].to_list() == ["c"]
    assert lookup_prediction(tmp_path, "a", since=DAY1 + timedelta(days=1)).is_empty()
    missing = lookup_prediction(tmp_path, "zzz")
    assert missing.is_empty() and missing.schema == pl.Schema(BASE_SCHEMA)
    with pytest.raises(ValueError, match="request_id"):
        lookup_prediction(tmp_path, "")
    log.close()


def test_from_settings_writes_under_the_lake(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, prediction_flush_s=0.5, prediction_batch_rows=7)
    assert settings.prediction_log_dir == settings.lake_dir / "predictions"
    with PredictionLog.from_settings(settings, autoflush=False) as log:
        assert (log.flush_interval_s, log.batch_rows) == (0.5, 7)
        assert log.spool_dir == settings.prediction_log_dir / "_spool"
        log.append(record("a", DAY1))
    assert read_prediction_log(settings.prediction_log_dir).height == 1


def test_compaction_keeps_every_row(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, autoflush=False, batch_rows=1) as log:
        for i in range(4):
            log.append(record(f"r{i}", DAY1 + timedelta(seconds=i)))
    before = len(DeltaTable(str(tmp_path)).file_uris())
    metrics = plog.compact_prediction_log(tmp_path)
    assert metrics["numFilesRemoved"] == before == 4
    assert len(DeltaTable(str(tmp_path)).file_uris()) == 1
    assert read_prediction_log(tmp_path)["request_id"].to_list() == ["r0", "r1", "r2", "r3"]
    assert plog.compact_prediction_log(tmp_path / "none") == {}


def test_naive_bounds_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="since: must be timezone-aware"):
        read_prediction_log(tmp_path, since=datetime(2026, 3, 1))


@pytest.mark.parametrize("layout", ["missing", "empty", "foreign files", "empty spool"])
def test_no_log_reads_as_empty_frame(tmp_path: Path, layout: str) -> None:
    directory = tmp_path / "log"
    if layout != "missing":
        directory.mkdir()
    if layout == "foreign files":
        (directory / "notes.txt").write_text("hello")
        (directory / "predictions-2026-03-01.jsonl").write_text('{"request_id": "x"}\n')
    if layout == "empty spool":
        PredictionLog(directory).close()
    frame = read_prediction_log(directory)
    assert frame.is_empty()
    assert frame.schema == pl.Schema(BASE_SCHEMA)

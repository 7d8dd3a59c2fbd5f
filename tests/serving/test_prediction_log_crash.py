"""The prediction log survives a SIGKILL: replay commits every acknowledged record exactly once."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from loopline.serving.prediction_log import PredictionLog, read_prediction_log

DAY1 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)

# A server stand-in: appends n records, printing each request id once append returned (the
# acknowledgement), optionally flushing after `flush_after` of them, then waits to be killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, timedelta
    from loopline.serving.prediction_log import PredictionLog

    directory, n, flush_after, batch_rows, segment_bytes = sys.argv[1:6]
    n, flush_after = int(n), int(flush_after)
    log = PredictionLog(
        directory,
        flush_interval_s=3600,
        batch_rows=int(batch_rows),
        segment_bytes=int(segment_bytes),
    )
    start = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
    for i in range(n):
        log.append({
            "request_id": f"r{i:04d}",
            "ts": start + timedelta(seconds=i),
            "model_name": "fraud-detector",
            "model_version": 1,
            "role": "champion",
            "inputs": {"amount": float(i)},
            "score": i / n,
        })
        print(f"r{i:04d}", flush=True)
        if i + 1 == flush_after:
            log.flush()
    print("done", flush=True)
    time.sleep(600)
    """
)


def run_and_kill(
    directory: Path,
    n: int,
    *,
    flush_after: int = 0,
    batch_rows: int = 100_000,
    segment_bytes: int = 16 << 20,
) -> list[str]:
    """Run the child until it acknowledged n records, SIGKILL it; the acknowledged ids."""
    args = [str(directory), str(n), str(flush_after), str(batch_rows), str(segment_bytes)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "done":
                break
            acked.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(acked) == n
    return acked


def committed_ids(directory: Path) -> list[str]:
    return sorted(read_prediction_log(directory, include_spool=False)["request_id"].to_list())


def segments(directory: Path) -> list[Path]:
    return sorted((directory / "_spool").glob("*.spool"))


@pytest.mark.parametrize(
    ("flush_after", "batch_rows", "segment_bytes"),
    [
        (0, 100_000, 16 << 20),  # nothing committed before the kill
        (12, 100_000, 16 << 20),  # part committed, the rest only spooled
        (0, 7, 2048),  # background batches racing the kill, several segments
    ],
    ids=["spooled-only", "half-committed", "racing-batches"],
)
def test_sigkill_loses_nothing_and_replay_duplicates_nothing(
    tmp_path: Path, flush_after: int, batch_rows: int, segment_bytes: int
) -> None:
    acked = run_and_kill(
        tmp_path, 30, flush_after=flush_after, batch_rows=batch_rows, segment_bytes=segment_bytes
    )
    assert segments(tmp_path)  # the killed writer left its spool behind
    # Readers see the spooled records before any replay, once each.
    assert sorted(read_prediction_log(tmp_path)["request_id"].to_list()) == acked
    before = committed_ids(tmp_path) if (tmp_path / "_delta_log").exists() else []
    assert len(before) == flush_after or flush_after == 0
    log = PredictionLog(tmp_path, autoflush=False)  # replays on open
    stats = log.stats()
    assert stats.pending == 0 and stats.replayed == 30 - len(before)
    assert committed_ids(tmp_path) == acked
    log.close()
    assert segments(tmp_path) == []
    # Opening again replays nothing more.
    version = DeltaTable(str(tmp_path)).version()
    PredictionLog(tmp_path).close()
    assert DeltaTable(str(tmp_path)).version() == version
    assert committed_ids(tmp_path) == acked


def test_crash_between_commit_and_segment_delete_does_not_duplicate(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, autoflush=False)
    for i in range(5):
        log.append({"request_id": f"r{i}", "ts": DAY1, "model_name": "m", "model_version": 1})
    log.flush()  # committed ...
    [segment] = segments(tmp_path)
    kept = tmp_path / "kept"
    shutil.copyfile(segment, kept)
    log.close()  # ... and deleted; put it back as if the crash came before the delete
    assert segments(tmp_path) == []
    kept.rename(segment)
    version = DeltaTable(str(tmp_path)).version()
    log = PredictionLog(tmp_path)
    assert log.stats().replayed == 0
    log.close()
    assert DeltaTable(str(tmp_path)).version() == version
    assert committed_ids(tmp_path) == [f"r{i}" for i in range(5)]
    assert segments(tmp_path) == []


@pytest.mark.parametrize(
    "torn",
    [
        b'{"request_id":"z","ts":"2026-03-01T22:',
        b"{",
        b'{"request_id":"z","ts":"2026-03-01T22:00:00.000000+00:00","model_name":"m"',
        b"\xe2\x82",  # half of a multi-byte character
    ],
)
def test_torn_last_line_is_skipped_with_a_warning(
    tmp_path: Path, torn: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    acked = run_and_kill(tmp_path, 20, segment_bytes=1024)  # several segments
    spooled = segments(tmp_path)
    assert len(spooled) > 2
    with spooled[0].open("ab") as handle:  # a machine crash mid-write in the first segment
        handle.write(torn)
    assert sorted(read_prediction_log(tmp_path)["request_id"].to_list()) == acked
    with caplog.at_level(logging.WARNING, logger="loopline.serving.prediction_log"):
        log = PredictionLog(tmp_path, autoflush=False)
    assert "torn last line" in caplog.text
    stats = log.close()
    assert stats.skipped_lines == 1 and stats.replayed == 20
    assert committed_ids(tmp_path) == acked  # the later segments were not blocked
    assert segments(tmp_path) == []


def test_a_live_writers_spool_is_not_replayed_by_another(tmp_path: Path) -> None:
    first = PredictionLog(tmp_path, autoflush=False)
    for i in range(3):
        first.append({"request_id": f"a{i}", "ts": DAY1, "model_name": "m", "model_version": 1})
    second = PredictionLog(tmp_path, autoflush=False)
    assert second.stats().replayed == 0 and second.stats().pending == 0
    second.append({"request_id": "b0", "ts": DAY1, "model_name": "m", "model_version": 1})
    assert sorted(read_prediction_log(tmp_path)["request_id"]) == ["a0", "a1", "a2", "b0"]
    second.close()
    assert committed_ids(tmp_path) == ["b0"]
    first.close()
    assert committed_ids(tmp_path) == ["a0", "a1", "a2", "b0"]
    assert sorted(read_prediction_log(tmp_path)["request_id"]) == ["a0", "a1", "a2", "b0"]
    assert segments(tmp_path) == []


def test_two_processes_share_one_log(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from datetime import UTC, datetime
        from loopline.serving.prediction_log import PredictionLog
        with PredictionLog(sys.argv[1], flush_interval_s=0.01, batch_rows=5) as log:
            for i in range(40):
                log.append({"request_id": f"{sys.argv[2]}{i}", "model_name": "m",
                            "ts": datetime(2026, 3, 1, tzinfo=UTC), "model_version": 1})
        """
    )
    children = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), prefix])
        for prefix in ("p", "q")
    ]
    assert [child.wait(timeout=120) for child in children] == [0, 0]
    ids = committed_ids(tmp_path)
    assert len(ids) == len(set(ids)) == 80
    assert segments(tmp_path) == []

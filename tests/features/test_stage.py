"""The features stage over the lake: a full build, increments that equal a full recompute
exactly, nothing to do when nothing is new, late events, and materialization that follows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from loopline.features import delta_tables
from loopline.features.aggregates import customer_activity, merchant_activity
from loopline.features.feast_ops import open_store, skew_report, watermarks
from loopline.lake import tables
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.stages import run_ingest, write_demo_data
from loopline.stages.features import (
    feature_status,
    run_feature_build,
    run_feature_materialize,
    run_features,
)
from loopline.store import Store
from loopline.store.tables import DatasetVersion

SPEC = load_spec("fraud")
WINDOWED = (customer_activity, merchant_activity)


@dataclass
class Lake:
    settings: Settings
    raw: Path


def _files(raw: Path, table: str) -> list[Path]:
    return sorted((raw / table).glob("*.csv"))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    settings = Settings(home=tmp_path_factory.mktemp("stage"))
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LOOPLINE_HOME", raising=False)
        write_demo_data(settings, days=44, customers=150, seed=3)
        yield Lake(settings, settings.raw_dir)


def _ingest(lake: Lake, tx_files: list[Path], label_files: list[Path]) -> None:
    paths = {SPEC.events.table: tx_files}
    if label_files:
        paths[SPEC.labels.table] = label_files
    run_ingest(lake.settings, SPEC, paths=paths)


def _lake_frame(settings: Settings, name: str) -> pl.DataFrame:
    return tables.read(tables.table_uri(settings.lake_dir, name))


def _recomputed(settings: Settings, table, watermark) -> pl.DataFrame:
    events = _lake_frame(settings, SPEC.events.table)
    labels = _lake_frame(settings, SPEC.labels.table)
    return table(events, labels=labels, as_of=watermark)


def _assert_equal_to_a_full_recompute(settings: Settings) -> None:
    for table in WINDOWED:
        uri = str(settings.lake_dir / table.name)
        state = delta_tables.state(uri)
        assert state is not None and state.watermark is not None
        stored = delta_tables.read(uri).sort(table.key, "event_timestamp")
        assert stored.height == state.rows
        assert stored.equals(_recomputed(settings, table, state.watermark)), table.name


def test_increments_equal_a_full_recompute_and_nothing_new_is_a_no_op(lake):
    settings = lake.settings
    tx_files = _files(lake.raw, SPEC.events.table)
    label_files = _files(lake.raw, SPEC.labels.table)
    assert len(tx_files) >= 6
    _ingest(lake, tx_files[:3], label_files[:3])
    first = run_feature_build(settings, SPEC)
    assert {first["tables"][t.name]["mode"] for t in WINDOWED} == {"full"}
    _assert_equal_to_a_full_recompute(settings)

    for week in range(3, len(tx_files)):
        _ingest(lake, tx_files[week : week + 1], label_files[week : week + 1])
        summary = run_feature_build(settings, SPEC)
        for table in WINDOWED:
            row = summary["tables"][table.name]
            assert row["mode"] == "incremental", row
            assert row["rows_written"] > 0
            # An increment reads the events from 30 days before its start, not the whole lake.
            since = datetime.fromisoformat(row["since"])
            read = _lake_frame(settings, SPEC.events.table).filter(
                pl.col("event_timestamp") >= since - table.lookback
            )
            assert row["events_read"] == read.height
        _assert_equal_to_a_full_recompute(settings)

    again = run_feature_build(settings, SPEC)
    assert {again["tables"][t.name]["mode"] for t in WINDOWED} == {"unchanged"}
    assert {again["tables"][t.name]["rows_written"] for t in WINDOWED} == {0}

    store = Store.open(settings)
    with store.reader() as session:
        versions = (
            session.query(DatasetVersion)
            .filter(DatasetVersion.dataset == "customer_activity")
            .order_by(DatasetVersion.table_version)
        )
        recorded = [(v.table_version, v.row_count) for v in versions]
    state = delta_tables.state(str(settings.lake_dir / "customer_activity"))
    assert state is not None
    assert recorded[-1] == (state.version, state.rows)
    assert len(recorded) == len(tx_files) - 2  # one per build that wrote rows


def test_materialize_follows_the_tables_and_late_events_are_rebuilt_and_reloaded(lake):
    settings = lake.settings
    summary = run_feature_materialize(settings, SPEC)
    views = {row["view"] for row in summary["materialized"]}
    assert views == {t.name for t in SPEC.features.tables}
    store = open_store(settings)
    before = watermarks(store)
    for table in WINDOWED:
        state = delta_tables.state(str(settings.lake_dir / table.name))
        assert state is not None and before[table.name] == state.watermark
    assert skew_report(store, "fraud_v2", sample=60).mismatches == 0

    # Three transactions stamped a week before the watermark arrive now.
    events = _lake_frame(settings, SPEC.events.table)
    late_at = events["event_timestamp"].max() - timedelta(days=7)  # type: ignore[operator]
    late = (
        events.filter(pl.col("event_timestamp") < late_at)
        .tail(3)
        .with_columns(
            transaction_id=pl.format("late-{}", pl.int_range(3)),
            event_timestamp=pl.lit(late_at),
        )
        .with_columns(hour=pl.col("event_timestamp").dt.hour().cast(pl.Int64))
    )
    path = lake.raw / "late" / "transactions.csv"
    path.parent.mkdir()
    late.write_csv(path)
    _ingest(lake, [path], [])
    summary = run_feature_build(settings, SPEC)
    for table in WINDOWED:
        row = summary["tables"][table.name]
        assert row["mode"] == "late", row
        assert row["since"] <= late_at.isoformat()
    _assert_equal_to_a_full_recompute(settings)
    # Rows before the online watermark changed: the views are reloaded by the next run.
    store = open_store(settings)
    assert {watermarks(store)[t.name] for t in WINDOWED} == {None}
    run_feature_materialize(settings, SPEC)
    store = open_store(settings)
    assert skew_report(store, "fraud_v2", sample=60).mismatches == 0
    status = {row["view"]: row for row in feature_status(settings, SPEC)["views"]}
    for table in WINDOWED:
        assert status[table.name]["watermark"] == status[table.name]["table_watermark"]


def test_a_full_rebuild_on_request_gives_the_same_tables(lake):
    settings = lake.settings
    before = {t.name: delta_tables.read(str(settings.lake_dir / t.name)) for t in WINDOWED}
    summary = run_features(settings, SPEC, full=True)
    for table in WINDOWED:
        assert summary["tables"][table.name]["mode"] == "full"
        after = delta_tables.read(str(settings.lake_dir / table.name))
        key = [table.key, "event_timestamp"]
        assert after.sort(key).equals(before[table.name].sort(key))
    assert {row["view"] for row in summary["freshness"]} >= {t.name for t in WINDOWED}

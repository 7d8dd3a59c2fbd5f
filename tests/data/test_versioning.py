"""Versioned curated tables: exact reads of past versions, lineage in the store, schema
evolution (additive allowed, breaking refused unless the contract version is bumped), batch
reports and profiles, delayed labels joined by key, and the stage that ties them together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from data_helpers import BASE_EVENTS, NOW, SPEC, Env, event, label, write_csv
from sqlalchemy import select

from loopline.data.contracts import ContractError
from loopline.data.ingest import ingest_files
from loopline.data.labels import join_labels
from loopline.data.sources import frame_sha256
from loopline.data.versions import history, read_version
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.monitoring.profiles import deserialize
from loopline.settings import Settings
from loopline.spec import TableSpec
from loopline.stages import run_ingest
from loopline.store import Store
from loopline.store.tables import DataBatch, RunArtifact


def _events_spec(
    columns: dict[str, Any] | None = None, drop: str | None = None, **contract: Any
) -> TableSpec:
    data = SPEC.events.model_dump()
    data["columns"].update(columns or {})
    if drop:
        data["columns"].pop(drop)
        data["contract"]["rules"] = []
    data["contract"].update(contract)
    return TableSpec.model_validate(data)


def test_each_batch_is_a_version_and_every_version_reads_back_exactly(env: Env) -> None:
    v0, base = read_version(env.store, SPEC.events.table)
    batch = [event(100 + i) for i in range(5)]
    result = env.ingest(SPEC.events, [write_csv(env.raw / "b1.csv", batch)])
    v1, both = read_version(env.store, SPEC.events.table)
    assert v1.table_version == result.table_version == v0.table_version + 1
    assert v1.parent_id == v0.id and v1.row_count == BASE_EVENTS + 5
    assert (v1.rows_in, v1.rows_accepted, v1.rows_quarantined) == (5, 5, 0)
    assert v1.sources["files"][0]["sha256"] and v1.sources["batch_id"] == result.batch_id
    assert v1.schema_["amount"] == "Float64"
    added = both.filter(~pl.col("transaction_id").is_in(base["transaction_id"].to_list()))
    assert v1.content_hash == "sha256:" + frame_sha256(added)
    _, again = read_version(env.store, SPEC.events.table, table_version=v0.table_version)
    assert again.equals(base)
    with env.store.reader() as session:
        assert [v.table_version for v in history(session, SPEC.events.table)] == [0, 1]
    with pytest.raises(LookupError, match="no recorded version 7"):
        read_version(env.store, SPEC.events.table, table_version=7)


def test_an_additive_column_is_allowed_and_recorded(env: Env) -> None:
    table = _events_spec({"device": {"type": "string", "nullable": True}})
    rows = [{**event(100 + i), "device": "ios"} for i in range(3)]
    result = env.ingest(table, [write_csv(env.raw / "b.csv", rows)])
    assert result.schema_changes == {"added": ["device"]}
    version, frame = read_version(env.store, SPEC.events.table)
    assert version.schema_["device"] == "String"
    assert frame.get_column("device").null_count() == BASE_EVENTS
    _, old = read_version(env.store, SPEC.events.table, table_version=0)
    assert "device" not in old.columns


@pytest.mark.parametrize(
    ("table", "column", "detail"),
    [
        (_events_spec({"customer_id": {"type": "string"}}), "customer_id", "type changes"),
        (_events_spec(drop="hour"), "hour", "column dropped"),
    ],
    ids=["type change", "dropped column"],
)
def test_a_breaking_change_is_refused_without_a_new_contract_version(
    env: Env, table: TableSpec, column: str, detail: str
) -> None:
    before = env.state()
    rows = [event(100 + i) for i in range(3)]
    with pytest.raises(ContractError) as caught:
        env.ingest(table, [write_csv(env.raw / "b.csv", rows)])
    message = str(caught.value)
    assert f"column '{column}' breaks 'no breaking schema change" in message and detail in message
    assert env.state() == before


def test_a_new_contract_version_migrates_the_table(env: Env) -> None:
    table = _events_spec({"customer_id": {"type": "string"}}, drop="hour", version=2)
    rows = [{k: v for k, v in event(100 + i).items() if k != "hour"} for i in range(3)]
    result = env.ingest(table, [write_csv(env.raw / "b.csv", rows)])
    assert result.schema_changes["migrated"] is True
    assert result.schema_changes["dropped"] == ["hour"]
    version, frame = read_version(env.store, SPEC.events.table)
    assert frame.height == BASE_EVENTS + 3 and "hour" not in frame.columns
    assert frame.schema["customer_id"] == pl.String and version.schema_["customer_id"] == "String"
    _, old = read_version(env.store, SPEC.events.table, table_version=0)
    assert old.schema["customer_id"] == pl.Int64 and "hour" in old.columns
    with pytest.raises(ContractError, match=r"'contract version >= 2'"):
        env.ingest(SPEC.events, [write_csv(env.raw / "c.csv", [event(200)])])


def test_batch_report_and_profile_are_stored_and_summarised(env: Env) -> None:
    rows = [event(100 + i) for i in range(30)] + [event(200, amount="-2")]
    result = env.ingest(SPEC.events, [write_csv(env.raw / "b.csv", rows)])
    report = json.loads(env.artifacts.get_bytes(result.report_id or ""))
    assert report["rows"] == {"in": 31, "accepted": 30, "quarantined": 1, "rejected": 0}
    (rule,) = report["rules"]
    assert (rule["column"], rule["rule"], rule["severity"], rule["failures"]) == (
        "amount", "min 0.01", "soft", 1,
    )  # fmt: skip
    assert rule["examples"][0] == {
        "column": "amount", "rule": "min 0.01", "value": "-2.0", "row": 31, "source": "b.csv",
        "severity": "soft",
    }  # fmt: skip
    assert report["columns"]["amount"]["min"] >= 0.01 and report["table_version"] == 1
    profile = deserialize(env.artifacts.get_bytes(result.profile_id or "")).to_pandas()
    assert profile.loc["amount", "counts/n"] == 30
    with env.store.reader() as session:
        batch = session.get_one(DataBatch, result.batch_id)
    assert batch.status == "committed" and batch.rules["results"][0]["failures"] == 1
    assert (batch.rows_in, batch.rows_accepted, batch.rows_quarantined) == (31, 30, 1)


def test_delayed_labels_are_versioned_and_join_events_by_key(env: Env) -> None:
    late = [label(20 + i, label_timestamp="2026-05-25T00:00:00+00:00") for i in range(5)]
    result = env.ingest(SPEC.labels, [write_csv(env.raw / "chargebacks.csv", late)])
    assert result.table_version == 1 and result.rows == 5
    _, events = read_version(env.store, SPEC.events.table)
    _, labels = read_version(env.store, SPEC.labels.table)
    joined = join_labels(events, labels, SPEC)
    assert joined.height == BASE_EVENTS and joined["is_fraud"].null_count() == BASE_EVENTS - 25
    before = join_labels(events, labels, SPEC, as_of=NOW.replace(month=5, day=20))
    assert before["is_fraud"].null_count() == BASE_EVENTS - 20


def test_labels_before_any_event_version_are_rejected(empty_env: Env) -> None:
    with pytest.raises(ContractError, match="table 'transactions' has no version yet"):
        empty_env.ingest(SPEC.labels, [write_csv(empty_env.raw / "l.csv", [label(1)])])


def test_the_stage_ingests_new_raw_files_and_links_reports_to_its_run(env: Env) -> None:
    raw = env.settings.raw_dir
    write_csv(raw / "transactions" / "t1.csv", [event(100 + i) for i in range(4)])
    write_csv(raw / "labels" / "l1.csv", [label(100 + i) for i in range(2)])
    seen: list[tuple[str, str]] = []
    first = run_ingest(env.settings, SPEC, progress=lambda t, p, d, n: seen.append((t, p)))
    assert first["transactions"]["rows_accepted"] == 4 and first["labels"]["rows_accepted"] == 2
    assert (first["rows_accepted"], first["rows_quarantined"], first["rows_rejected"]) == (6, 0, 0)
    assert ("transactions", "read") in seen and ("labels", "commit") in seen
    with env.store.reader() as session:
        names = set(
            session.scalars(select(RunArtifact.name).where(RunArtifact.run_id == first["run_id"]))
        )
    assert {"ingest/transactions/report", "ingest/labels/profile"} <= names
    second = run_ingest(env.settings, SPEC)
    assert second["transactions"]["status"] == second["labels"]["status"] == "noop"


def test_ingest_files_keeps_its_original_keywords(empty_env: Env) -> None:
    path = write_csv(empty_env.raw / "a.csv", [event(1), event(2)])
    result = ingest_files(
        empty_env.store, lake_dir=empty_env.settings.lake_dir, table=SPEC.events,
        use_case="fraud", paths=[path], run_id=None, now=NOW,
    )  # fmt: skip
    assert (result.rows, result.table_version, result.report_id) == (2, 0, None)


@pytest.mark.scale
def test_ingest_on_a_postgresql_store_locks_records_and_repairs(
    tmp_path: Path, pg_schema: str
) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{pg_schema}"
    settings = Settings(home=tmp_path / "home", database_url=url)
    store = Store.open(settings)
    env = Env(settings, store, ArtifactStore(settings.artifacts_dir), tmp_path / "in")
    try:
        first = env.ingest(SPEC.events, [write_csv(env.raw / "a.csv", [event(1), event(2)])])
        assert (first.status, first.table_version) == ("committed", 0)
        # A lake version no committed batch names (as a crash leaves it) is rolled back.
        uri = tables.table_uri(settings.lake_dir, SPEC.events.table)
        tables.append(uri, read_version(store, SPEC.events.table)[1].head(1))
        second = env.ingest(SPEC.events, [write_csv(env.raw / "b.csv", [event(3)])])
        assert second.repaired and second.table_version == 3
        _, rows = read_version(store, SPEC.events.table)
        assert sorted(rows["transaction_id"].to_list()) == ["tx-00001", "tx-00002", "tx-00003"]
    finally:
        store.dispose()

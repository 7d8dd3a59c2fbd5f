"""Helpers of the data-stage tests: valid rows, CSV writing, a data home and its state."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deltalake import DeltaTable
from sqlalchemy import func, select

from loopline.data.ingest import IngestResult, ingest_files, quarantine_uri
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.spec import TableSpec, UseCaseSpec, load_spec
from loopline.store import Store
from loopline.store.tables import DataBatch, DatasetVersion

SPEC = load_spec("fraud")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""Ingest time of every test batch (timestamp rules are relative to it)."""
START = datetime(2026, 5, 1, tzinfo=UTC)
EVENT_COLUMNS = list(SPEC.events.columns)
LABEL_COLUMNS = list(SPEC.labels.columns)


def event(i: int, **values: object) -> dict[str, object]:
    """A valid transaction `tx-<i>` (override any column)."""
    ts = START + timedelta(hours=i)
    row: dict[str, object] = {
        "transaction_id": f"tx-{i:05d}",
        "event_timestamp": ts.isoformat(),
        "customer_id": 1 + i % 7,
        "merchant_id": 1 + i % 5,
        "amount": f"{10 + i % 90}.50",
        "merchant_category": "grocery",
        "channel": "chip",
        "country": "US",
        "hour": ts.hour,
    }
    row.update(values)
    return row


def label(i: int, **values: object) -> dict[str, object]:
    """A valid label for `tx-<i>`, three days after the event."""
    row: dict[str, object] = {
        "transaction_id": f"tx-{i:05d}",
        "label_timestamp": (START + timedelta(hours=i, days=3)).isoformat(),
        "is_fraud": i % 2,
    }
    row.update(values)
    return row


def write_csv(
    path: Path,
    rows: Sequence[dict[str, object]],
    *,
    columns: Sequence[str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> Path:
    """Write rows as CSV (columns: the first row's keys unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns or (rows[0].keys() if rows else EVENT_COLUMNS))
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(
            handle, fieldnames=names, delimiter=delimiter, extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def with_contract(table: TableSpec, **changes: Any) -> TableSpec:
    """A copy of a table spec with contract fields changed (validated like YAML)."""
    data = table.model_dump()
    data["contract"].update(changes)
    return type(table).model_validate(data)


@dataclass
class State:
    """What a rejected batch must leave unchanged."""

    versions: list[tuple[str, int]]
    committed: list[str]
    lake: dict[str, int | None]


@dataclass
class Env:
    """A data home with the base batch ingested."""

    settings: Settings
    store: Store
    artifacts: ArtifactStore
    raw: Path

    def ingest(self, table: TableSpec, paths: Sequence[Path | str], **kwargs: Any) -> IngestResult:
        kwargs.setdefault("now", NOW)
        return ingest_files(
            self.store, lake_dir=self.settings.lake_dir, table=table, use_case="fraud",
            paths=list(paths), run_id=None, artifacts=self.artifacts, **kwargs,
        )  # fmt: skip

    def state(self) -> State:
        with self.store.reader() as session:
            versions = sorted(
                session.execute(select(DatasetVersion.dataset, DatasetVersion.table_version)).all()
            )
            committed = sorted(
                session.scalars(select(DataBatch.id).where(DataBatch.status == "committed"))
            )
        lake = {}
        for spec in (SPEC.events, SPEC.labels):
            for uri in (
                tables.table_uri(self.settings.lake_dir, spec.table),
                quarantine_uri(self.settings.lake_dir, spec),
            ):
                lake[uri] = DeltaTable(uri).version() if tables.exists(uri) else None
        return State([tuple(v) for v in versions], committed, lake)

    def batches(self, status: str | None = None) -> int:
        with self.store.reader() as session:
            query = select(func.count()).select_from(DataBatch)
            if status:
                query = query.where(DataBatch.status == status)
            return int(session.scalar(query) or 0)


BASE_EVENTS = 40


def build_base(home: Path) -> None:
    """Ingest the base batch of events and labels into a fresh home."""
    settings = Settings(home=home)
    env = Env(settings, Store.open(settings), ArtifactStore(settings.artifacts_dir), home / "raw")
    events = write_csv(env.raw / "base" / "events.csv", [event(i) for i in range(BASE_EVENTS)])
    labels = write_csv(env.raw / "base" / "labels.csv", [label(i) for i in range(20)])
    env.ingest(SPEC.events, [events])
    env.ingest(SPEC.labels, [labels])
    env.store.dispose()


Writer = Callable[[Path], list[Path | str]]


def spec_with(table: str, **contract: Any) -> UseCaseSpec:
    """The fraud spec with one table's contract changed."""
    data = SPEC.model_dump()
    key = "events" if table == SPEC.events.table else "labels"
    data[key]["contract"].update(contract)
    return UseCaseSpec.model_validate(data)

"""What every stage shares: the stores it works with, its error type, dataset-version helpers."""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import polars as pl

from loopline.data.ingest import latest_version
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.store import Store
from loopline.store.tables import DatasetVersion
from loopline.tracking import RunHandle, tracked_run


class StageError(RuntimeError):
    """A stage cannot run with what the stores hold (for example: nothing ingested yet)."""


@dataclass
class Context:
    """The stores a stage works with."""

    settings: Settings
    spec: UseCaseSpec
    store: Store
    artifacts: ArtifactStore

    def run(
        self,
        kind: str,
        *,
        flow_run_id: str | None,
        params: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        name: str = "",
    ) -> AbstractContextManager[RunHandle]:
        """A tracked run of this use case (a child of `parent_run_id` when given)."""
        return tracked_run(
            self.store,
            self.artifacts,
            kind=kind,
            use_case=self.spec.name,
            project_dir=self.settings.project_dir,
            params=params,
            flow_run_id=flow_run_id,
            tags={"use_case": self.spec.name, **(tags or {})},
            parent_run_id=parent_run_id,
            name=name,
        )


def open_context(settings: Settings, spec: UseCaseSpec) -> Context:
    """Open the metadata store (upgrading it) and the artifact store."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return Context(settings, spec, Store.open(settings), ArtifactStore(settings.artifacts_dir))


def builder(reference: str) -> Callable[..., pl.DataFrame]:
    module, function = reference.split(":")
    return getattr(importlib.import_module(module), function)


def latest(ctx: Context, dataset: str) -> DatasetVersion:
    with ctx.store.reader() as session:
        row = latest_version(session, dataset)
    if row is None:
        raise StageError(f"dataset '{dataset}' has no version yet: run the ingest stage first")
    return row


def record_version(
    ctx: Context, *, dataset: str, frame: pl.DataFrame, uri: str, version: int, run_id: str
) -> str:
    with ctx.store.session() as session:
        parent = latest_version(session, dataset)
        row = DatasetVersion(
            dataset=dataset,
            use_case=ctx.spec.name,
            table_version=version,
            uri=uri,
            content_hash=tables.frame_hash(frame),
            row_count=frame.height,
            rows_in=frame.height,
            rows_accepted=frame.height,
            schema_={name: str(dtype) for name, dtype in frame.schema.items()},
            sources={"derived_from": "events"},
            parent_id=parent.id if parent else None,
            run_id=run_id,
        )
        session.add(row)
    return row.id


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.write_parquet(sink)
    return sink.getvalue()

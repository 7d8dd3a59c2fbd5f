"""Ingest flow: validate new raw batches and append them to the curated lake tables.

Deployment parameters: `use_case`; optionally `table` with `paths` (files, folders or globs)
and/or `query` (DuckDB SQL over files) to ingest a given source instead of every new file under
`<home>/raw/<table>/`; `delimiter` and `encoding` override the spec's CSV format. A batch that
breaks a hard rule fails the flow run (its report is stored); soft failures are quarantined.
"""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow, task
from prefect.runtime import flow_run

from loopline.settings import Settings
from loopline.spec import UseCaseSpec


@task(name="ingest-sources", **tasks._TASK, **tasks._RETRY)
def ingest_sources(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    table: str | None,
    paths: list[str],
    queries: list[str],
    delimiter: str | None,
    encoding: str | None,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Validate and append the given sources of one table (every new raw file if none)."""
    from loopline.stages import run_ingest

    return run_ingest(
        settings, spec,
        paths={table: paths} if table else None,
        queries={table: queries} if table else None,
        delimiter=delimiter, encoding=encoding, flow_run_id=flow_run_id,
    )  # fmt: skip


@flow(name="ingest", log_prints=True)
def ingest_flow(
    use_case: str | None = None,
    table: str | None = None,
    paths: list[str] | None = None,
    query: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
) -> dict[str, Any]:
    """Ingest new raw data of the use case's event and label tables.

    Args:
        use_case: use case name or spec path.
        table: the table `paths` / `query` belong to (required with them).
        paths: files, folders or globs to ingest (default: every new file under raw/).
        query: DuckDB SQL whose result is one more source, e.g. over read_parquet('x/*.parquet').
        delimiter: CSV delimiter (default: the table's spec).
        encoding: text encoding (default: the table's spec).
    """
    settings, spec = tasks.context(use_case)
    if (paths or query) and table is None:
        raise ValueError("table: required with paths or query (e.g. table='transactions')")
    return ingest_sources(
        settings, spec, table=table if (paths or query) else None, paths=list(paths or []),
        queries=[query] if query else [], delimiter=delimiter, encoding=encoding,
        flow_run_id=flow_run.id,
    )  # fmt: skip


if __name__ == "__main__":
    ingest_flow()

"""The ingest stage: new raw sources of the events and label tables into the lake."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loopline.data.contracts import ContractError
from loopline.data.ingest import ingest_files
from loopline.data.sources import discover
from loopline.settings import Settings
from loopline.spec import SourceFormat, UseCaseSpec
from loopline.stages.common import StageError, open_context

Progress = Callable[[str, str, int, int], None]
"""Progress callback: (table, phase, done, total)."""


def _format(spec_format: SourceFormat, delimiter: str | None, encoding: str | None) -> SourceFormat:
    if delimiter is None and encoding is None:
        return spec_format
    try:
        return SourceFormat.model_validate(
            {
                **spec_format.model_dump(),
                **({"delimiter": delimiter} if delimiter is not None else {}),
                **({"encoding": encoding} if encoding is not None else {}),
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise StageError(f"invalid source format '{field}': {first['msg']}") from exc


def run_ingest(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    paths: Mapping[str, Sequence[Path | str]] | None = None,
    queries: Mapping[str, Sequence[str]] | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Ingest new raw sources of the events and label tables (events first: labels refer to
    them).

    Args:
        settings: Where the stores are.
        spec: The use case (its tables' contracts).
        paths: Table name -> files, folders or globs. Default (with no `queries` either): every
            new file under `<home>/raw/<table>/`.
        queries: Table name -> DuckDB SQL queries, each one more source.
        delimiter: CSV delimiter overriding the tables' `source` block.
        encoding: Text encoding overriding the tables' `source` block.
        flow_run_id: The Prefect flow run, if any (recorded on the run).
        progress: Called with (table, phase, done, total) as the ingest advances.

    Returns:
        Per table what the ingest did (status, files, rows accepted/quarantined/rejected, the
        new version), totals, and the run id.

    Raises:
        StageError: an unknown table or source format.
        ContractError: a batch broke a hard rule (nothing written for it; tables ingested
            before it in this run stay committed).
        SourceError: a path does not exist, is a link loop, or names no file.
    """
    tables = spec.tables
    asked = set(paths or {}) | set(queries or {})
    unknown = sorted(asked - set(tables))
    if unknown:
        raise StageError(f"unknown table(s) {unknown}; tables: {sorted(tables)}")
    if asked:
        chosen = [name for name in tables if name in asked]
        sources = {name: list((paths or {}).get(name, [])) for name in chosen}
    else:
        chosen = list(tables)
        sources = {name: list(discover(settings.raw_dir / name)) for name in chosen}
    formats = {name: _format(tables[name].source, delimiter, encoding) for name in chosen}
    ctx = open_context(settings, spec)
    summary: dict[str, Any] = {}
    params = {"tables": chosen, "queries": {k: list(v) for k, v in (queries or {}).items()}}
    with ctx.run("ingest", flow_run_id=flow_run_id, params=params) as run:
        try:
            for name in chosen:
                report = None
                if progress is not None:
                    report = _bind(progress, name)
                result = ingest_files(
                    ctx.store,
                    lake_dir=settings.lake_dir,
                    table=tables[name],
                    use_case=spec.name,
                    paths=sources[name],
                    queries=list((queries or {}).get(name, [])),
                    run_id=run.run_id,
                    artifacts=ctx.artifacts,
                    fmt=formats[name],
                    progress=report,
                    lock_dir=settings.home / "locks",
                )
                summary[name] = result.as_dict()
        except ContractError as exc:
            rows = (exc.report or {}).get("rows", {})
            rejected = rows.get("rejected", 0) if isinstance(rows, dict) else 0
            summary[exc.table] = {
                "status": "rejected",
                "rows_rejected": rejected,
                "error": str(exc),
            }
            run.set_summary(**summary, **_totals(summary))
            raise
        totals = _totals(summary)
        run.log_metrics(
            {f"{n}_rows": s["rows_accepted"] for n, s in summary.items()}
            | {f"{n}_quarantined": s["rows_quarantined"] for n, s in summary.items()}
        )
        run.set_summary(**summary, **totals)
    return {**summary, **totals, "run_id": run.run_id}


def _bind(progress: Progress, table: str) -> Callable[[str, int, int], None]:
    def report(phase: str, done: int, total: int) -> None:
        progress(table, phase, done, total)

    return report


def _totals(summary: Mapping[str, Any]) -> dict[str, int]:
    keys = ("rows_accepted", "rows_quarantined", "rows_rejected")
    return {
        key: sum(int(s.get(key) or 0) for s in summary.values() if isinstance(s, Mapping))
        for key in keys
    }

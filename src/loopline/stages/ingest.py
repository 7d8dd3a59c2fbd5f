"""The ingest stage: new raw files of the events and label tables into the lake."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopline.data.ingest import discover, ingest_files
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import StageError, open_context


def run_ingest(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    paths: Mapping[str, list[Path]] | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Ingest new raw files of the events and label tables.

    Args:
        paths: table name -> files; default: every file under `<home>/raw/<table>/`.
    """
    ctx = open_context(settings, spec)
    table_specs = {spec.events.table: spec.events, spec.labels.table: spec.labels}
    if paths is not None:
        unknown = sorted(set(paths) - set(table_specs))
        if unknown:
            raise StageError(f"unknown table(s) {unknown}; tables: {sorted(table_specs)}")
    chosen = paths or {name: discover(settings.raw_dir / name) for name in table_specs}
    summary: dict[str, Any] = {}
    with ctx.run("ingest", flow_run_id=flow_run_id, params={"tables": sorted(chosen)}) as run:
        for name, files in chosen.items():
            result = ingest_files(
                ctx.store,
                lake_dir=settings.lake_dir,
                table=table_specs[name],
                use_case=spec.name,
                paths=list(files),
                run_id=run.run_id,
            )
            summary[name] = result.as_dict()
        run.log_metrics({f"{n}_rows": s["rows"] for n, s in summary.items()})
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary

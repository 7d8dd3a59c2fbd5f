"""`loopline score`: batch-score a file or a lake table with a registered model version.

    loopline score                                   # the events table, with the champion
    loopline score raw/live/transactions.csv --model fraud-detector@challenger
    loopline score transactions@3 --model 2 --out fraud_scores_v2 --json

The scores land as a new version of a Delta predictions table (default `<use case>_scores`)
with lineage columns. Bad input (a missing file, an unknown table, model, alias or version,
events lacking a contract column or an entity key, a wrong type) prints one line naming the
problem and exits with code 2; nothing is written.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)

_PHASES = {"read": "reading events", "features": "point-in-time features", "score": "scoring"}


def _summary(result: Any) -> None:
    table = Table("", "", show_header=False, box=None)
    source = result.source
    where = (
        f"{source['table']}@{source['version']}"
        if "table" in source
        else f"{source['file']} (sha256 {source['sha256'][:12]})"
    )
    table.add_row("rows scored", f"{result.rows:,}")
    table.add_row("input", where)
    table.add_row("model", f"{result.model_name}@{result.model_version} ({result.feature_service})")
    table.add_row("written", f"{result.table}@{result.table_version}  {result.uri}")
    table.add_row("run", result.run_id)
    table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    console.print(table)


def score(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="PATH|TABLE",
            help="Events file (CSV/Parquet/JSON) or lake table, TABLE@VERSION for a past one "
            "(default: the use case's events table).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="NAME@ALIAS, NAME@VERSION or a version (default: champion)."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(help="Predictions table (default: <use case>_scores)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    use_case: Annotated[
        str,
        typer.Option(
            "--use-case", "-u", envvar="LOOPLINE_USE_CASE", help="Use case name or spec path."
        ),
    ] = "fraud",
) -> None:
    """Score events with a registered model into a new version of a predictions table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loopline.cli import _context, _user_errors
    from loopline.stages.score import run_score

    settings, spec = _context(use_case)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with (
        _user_errors(),
        Progress(
            *columns, TimeElapsedColumn(), console=console, transient=True, disable=as_json
        ) as bar,
    ):
        task = bar.add_task("loading the model", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            label = _PHASES.get(phase, phase)
            bar.update(task, description=label, completed=done, total=total)

        result = run_score(
            settings, spec, source=source, model_ref=model, out=out, progress=progress
        )
    if as_json:
        console.print_json(json.dumps(result.as_dict(), default=str))
    else:
        _summary(result)

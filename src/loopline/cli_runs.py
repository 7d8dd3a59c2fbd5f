"""`loopline runs`: search, show, compare, annotate and reap tracked runs.

    loopline runs list --filter "metrics.roc_auc > 0.9 and kind = 'train'" -o "metrics.roc_auc desc"
    loopline runs show 3f2a9c1d
    loopline runs compare 3f2a9c1d 8b7e6a5f
    loopline runs reap

A bad query, an unknown run or an ambiguous id prefix prints one line naming the problem
(for a query: the token and its position) and exits with code 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

runs_app = typer.Typer(help="Search, show, compare and annotate runs.", no_args_is_help=True)
console = Console()

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _run_errors() -> Iterator[None]:
    """Bad queries, unknown runs and bad annotations: one line, exit code 2."""
    from loopline.runs_query import QueryError, RunNotFoundError
    from loopline.tracking import TrackingError

    try:
        yield
    except (QueryError, RunNotFoundError, TrackingError) as exc:
        _fail(str(exc))


def _store() -> Any:
    from loopline.settings import Settings
    from loopline.store import Store

    return Store.open(Settings())


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


@runs_app.command("list")
def runs_list(
    filter_: Annotated[
        str,
        typer.Option(
            "--filter", "-f", help="Run query, e.g. \"metrics.roc_auc > 0.9 and kind = 'train'\"."
        ),
    ] = "",
    order_by: Annotated[
        str, typer.Option("--order-by", "-o", help="e.g. 'metrics.roc_auc desc'.")
    ] = "started_at desc",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 20,
    page_token: Annotated[str | None, typer.Option(help="Next page (from a listing).")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Rows to skip.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind.")] = None,
    count: Annotated[bool, typer.Option(help="Also count every matching run.")] = False,
    as_json: AsJson = False,
) -> None:
    """List runs matching a query, sorted, one page at a time (newest first by default)."""
    from loopline.runs_query import count_runs, parse_query, search_runs

    query = filter_
    if kind:
        with _run_errors():
            parse_query(filter_)  # errors point into the filter as typed
        query = (
            f"({query}) and kind = {_quote(kind)}" if query.strip() else f"kind = {_quote(kind)}"
        )
    store = _store()
    with _run_errors():
        page = search_runs(
            store, query, order_by=order_by, limit=limit, page_token=page_token, offset=offset
        )
        total = count_runs(store, query) if count else None
    if as_json:
        body: dict[str, Any] = {
            "runs": [r.as_dict() for r in page.runs],
            "next_page_token": page.next_page_token,
        }
        if total is not None:
            body["total"] = total
        _print_json(body)
        return
    table = Table("run", "kind", "name", "status", "started", "duration", "metrics", "parent")
    for run in page.runs:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(run.metrics.items())[:4])
        if len(run.metrics) > 4:
            metrics += f", +{len(run.metrics) - 4}"
        duration = f"{run.duration_s:.1f}s" if run.duration_s is not None else "-"
        table.add_row(
            run.id[:8], run.kind, run.name, run.status, run.started_at.isoformat()[:19], duration,
            metrics, (run.parent_run_id or "-")[:8],
        )  # fmt: skip
    console.print(table)
    if total is not None:
        console.print(f"{total} matching runs")
    if page.next_page_token:
        console.print(f"more: --page-token {page.next_page_token}", soft_wrap=True)


def _key_values(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("value")
    for key, value in values.items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        table.add_row(key, shown)
    return table


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix (4+ characters).")],
    as_json: AsJson = False,
) -> None:
    """Everything about one run: params, metrics, curves, artifacts, lineage, environment."""
    from loopline.runs_query import describe_run

    with _run_errors():
        run = describe_run(_store(), run_id)
    if as_json:
        _print_json(run)
        return
    console.print(
        f"[bold]{run['kind']} run {run['name']}[/]  {run['id']}  [bold]{run['status']}[/]"
    )
    duration = f"{run['duration_s']:.1f}s" if run["duration_s"] is not None else "-"
    memory = f"{run['peak_memory_mb']:.0f} MB" if run["peak_memory_mb"] else "-"
    code = run["code"]
    commit = (code["git_commit"] or "-")[:12] + (" (dirty)" if code["git_dirty"] else "")
    process = run["process"]
    console.print(
        f"started {run['started_at'][:19]} · ended {(run['ended_at'] or '-')[:19]} · "
        f"{duration} · peak memory {memory} · use case {run['use_case']}\n"
        f"commit {commit} · lock {(code['lock_hash'] or '-')[:12]} · "
        f"host {process['host'] or '-'} pid {process['pid'] or '-'} · "
        f"flow run {process['prefect_flow_run_id'] or '-'}"
    )
    if run["error"]:
        console.print(f"[red]{run['error']}[/]")
    if run["notes"]:
        console.print(f"notes: {run['notes']}")
    if run["tags"]:
        console.print("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(run["tags"].items())))
    if run["params"]:
        console.print(_key_values("params", run["params"]))
    if run["metrics"]:
        console.print(_key_values("metrics", {k: f"{v:.6g}" for k, v in run["metrics"].items()}))
    if run["curves"]:
        curves = Table(
            "curve", "steps", "first", "last", "min (step)", "max (step)", title="curves"
        )
        for c in run["curves"]:
            curves.add_row(
                c["key"], str(c["steps"]), _number(c["first"]), _number(c["last"]),
                f"{_number(c['min'])} ({c['min_step']})", f"{_number(c['max'])} ({c['max_step']})",
            )  # fmt: skip
        console.print(curves)
    if run["artifacts"]:
        artifacts = Table("artifact", "id", "bytes", "media type", title="artifacts")
        for a in run["artifacts"]:
            artifacts.add_row(a["name"], a["id"][:19], str(a["size_bytes"]), a["media_type"])
        console.print(artifacts)
    lineage = run["lineage"]
    if lineage["parent"]:
        parent = lineage["parent"]
        console.print(f"parent: {parent['kind']} run {parent['name']} {parent['id']}")
    if lineage["children_count"]:
        console.print(f"children: {lineage['children_count']} runs")
        for child in lineage["children"][:10]:
            console.print(f"  {child['id'][:8]} {child['kind']} {child['name']} {child['status']}")
    for dataset in lineage["datasets_written"]:
        console.print(f"wrote {dataset['dataset']} version {dataset['table_version']}")
    for version in lineage["model_versions"]:
        inputs = ", ".join(
            f"{d['role']}={d['dataset']}@{d['table_version']}" for d in version["datasets"]
        )
        console.print(f"registered {version['model_name']} v{version['version']} from {inputs}")
    env = run["environment"]
    if env:
        hardware = env.get("hardware", {})
        packages = env.get("packages", {})
        console.print(
            f"python {env.get('python', '-')} on {env.get('platform', '-')} · "
            f"{hardware.get('cpu_model', '-')}, {hardware.get('cpu_logical_cores', '-')} cores, "
            f"{hardware.get('memory_total_gb', '-')} GB RAM\n"
            + ", ".join(f"{k} {v}" for k, v in sorted(packages.items())),
            soft_wrap=True,
        )


@runs_app.command("compare")
def runs_compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or prefixes).")],
    show_all: Annotated[bool, typer.Option("--all", help="Show equal params too.")] = False,
    as_json: AsJson = False,
) -> None:
    """Compare runs: params that differ, final metrics side by side, learning curves."""
    from loopline.runs_query import compare_runs, curve_summary

    with _run_errors():
        comparison = compare_runs(_store(), run_ids)
    labels = comparison.labels
    summary = curve_summary(comparison.curves.drop("label")) if comparison.curves.height else None
    if as_json:
        _print_json(
            {
                "runs": comparison.runs.to_dicts(),
                "params": comparison.params.to_dicts(),
                "metrics": comparison.metrics.to_dicts(),
                "curves": summary.to_dicts() if summary is not None else [],
            }
        )
        return
    runs = Table("run", "kind", "name", "status", "started", "duration", title="runs")
    for row in comparison.runs.iter_rows(named=True):
        duration = f"{row['duration_s']:.1f}s" if row["duration_s"] is not None else "-"
        runs.add_row(
            row["label"], row["kind"], row["name"], row["status"],
            row["started_at"].isoformat()[:19], duration,
        )  # fmt: skip
    console.print(runs)
    params = comparison.params if show_all else comparison.params.filter("differs")
    title = "params" if show_all else f"params that differ ({params.height} of "
    title += "" if show_all else f"{comparison.params.height})"
    table = Table("param", *labels, title=title)
    for row in params.iter_rows(named=True):
        table.add_row(
            row["key"], *[row[label] if row[label] is not None else "-" for label in labels]
        )
    console.print(table)
    metrics = Table("metric", *labels, title="final metrics")
    for row in comparison.metrics.iter_rows(named=True):
        metrics.add_row(row["key"], *[_number(row[label], 6) for label in labels])
    console.print(metrics)
    if summary is not None:
        curves = Table("curve", "run", "steps", "last", "min (step)", "max (step)", title="curves")
        label_of = dict(comparison.runs.select("id", "label").iter_rows())
        for row in summary.iter_rows(named=True):
            curves.add_row(
                row["key"], label_of[row["run_id"]], str(row["steps"]), _number(row["last"]),
                f"{_number(row['min'])} ({row['min_step']})",
                f"{_number(row['max'])} ({row['max_step']})",
            )  # fmt: skip
        console.print(curves)


@runs_app.command("reap")
def runs_reap(
    stale_after: Annotated[
        float, typer.Option(min=1, help="Seconds without a heartbeat before a run is crashed.")
    ] = 120.0,
    as_json: AsJson = False,
) -> None:
    """Mark runs whose process died (or went silent) as crashed."""
    from loopline.tracking import reap_runs

    with _run_errors():
        reaped = reap_runs(_store(), stale_after_s=stale_after)
    if as_json:
        _print_json(
            {"reaped": [{"run_id": r.run_id, "kind": r.kind, "reason": r.reason} for r in reaped]}
        )
        return
    if not reaped:
        console.print("no crashed runs")
    for item in reaped:
        console.print(f"{item.run_id[:8]} {item.kind}: crashed ({item.reason})")


@runs_app.command("note")
def runs_note(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    text: Annotated[str, typer.Argument(help="The notes (replace the current ones).")],
) -> None:
    """Set a run's notes."""
    from loopline.runs_query import resolve_run_id
    from loopline.tracking import set_run_notes

    store = _store()
    with _run_errors():
        with store.reader() as session:
            full = resolve_run_id(session, run_id)
        set_run_notes(store, full, text)
    console.print(f"notes of {full[:8]} updated")


@runs_app.command("tag")
def runs_tag(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    tags: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs.")],
) -> None:
    """Add or overwrite tags of a run."""
    from loopline.runs_query import resolve_run_id
    from loopline.tracking import set_run_tags

    pairs = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"tag {item!r} is not KEY=VALUE (e.g. team=risk)")
        pairs[key] = value
    store = _store()
    with _run_errors():
        with store.reader() as session:
            full = resolve_run_id(session, run_id)
        set_run_tags(store, full, pairs)
    console.print(f"tags of {full[:8]}: " + ", ".join(f"{k}={v}" for k, v in pairs.items()))

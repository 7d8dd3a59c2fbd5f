"""The `loopline` command line: run stages, bring the platform up and down, inspect the stores.

Every command builds `Settings()` from the environment and calls into the package. Bad input
(unknown use case, invalid numbers, missing files, broken contracts) prints one line naming the
problem and exits with code 2; nothing is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from loopline.cli_features import features_app
from loopline.cli_keys import keys_app
from loopline.cli_models import models_app
from loopline.cli_runs import runs_app
from loopline.cli_score import score

app = typer.Typer(
    name="loopline",
    help="The whole ML loop on one machine: ingest, features, train, promote, serve, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.command("score")(score)

console = Console()
UseCase = Annotated[
    str,
    typer.Option(
        "--use-case", "-u", envvar="LOOPLINE_USE_CASE", help="Use case name or spec path."
    ),
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the package's input errors into a one-line message and exit code 2."""
    from loopline.data.contracts import ContractError
    from loopline.lake.artifacts import ArtifactError
    from loopline.registry.models import RegistryError
    from loopline.spec import SpecError
    from loopline.stages import StageError

    try:
        yield
    except (SpecError, ContractError, StageError, RegistryError, ArtifactError) as exc:
        _fail(str(exc))
    except FileNotFoundError as exc:
        _fail(str(exc))
    except ValueError as exc:
        if type(exc).__name__.endswith("ConfigError"):
            _fail(str(exc))
        raise


def _context(use_case: str) -> tuple[Any, Any]:
    from loopline.settings import Settings
    from loopline.spec import load_spec

    settings = Settings()
    with _user_errors():
        spec = load_spec(use_case)
    return settings, spec


def _print(summary: dict[str, Any]) -> None:
    console.print_json(json.dumps(summary, default=str))


def _stage(function: Callable[..., dict[str, Any]], use_case: str, **kwargs: Any) -> None:
    settings, spec = _context(use_case)
    with _user_errors():
        _print(function(settings, spec, **kwargs))


@app.command()
def demo(
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days of transactions.")] = 90,
    customers: Annotated[int, typer.Option(min=1, max=1_000_000, help="Customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    drift_day: Annotated[
        int | None, typer.Option(min=0, help="From this day on, amounts inflate, new fraud.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Write even if demo data exists.")] = False,
    present: Annotated[
        bool,
        typer.Option(help="End the demo now (live day = the last 24 h); off: from 2026-01-01."),
    ] = True,
) -> None:
    """Generate the fraud demo's raw files under <home>/raw (plus a day of live traffic)."""
    from loopline.data.demo import demo_present
    from loopline.settings import Settings
    from loopline.stages import write_demo_data

    settings = Settings()
    with _user_errors():
        if demo_present(settings.raw_dir) and not force:
            _fail(f"demo data already present in {settings.raw_dir} (use --force to rewrite)")
        with console.status(f"generating {days} days x {customers} customers"):
            history, live = write_demo_data(
                settings,
                days=days,
                customers=customers,
                seed=seed,
                drift_start_day=drift_day,
                end=datetime.now(UTC) if present else None,
            )
    console.print(
        f"wrote {history} transactions of history and {live} of live traffic to {settings.raw_dir}"
    )


def _ingest_table(paths: list[Path], table: str | None, spec: Any) -> str:
    """The table explicit PATHs belong to: --table, else their folder's name if it names one."""
    if table:
        return table
    folders = {path.parent.name for path in paths} if paths else set()
    if len(folders) == 1 and (name := folders.pop()) in spec.tables:
        return name
    _fail("--table is required with explicit paths (e.g. --table transactions)")


def _ingest_summary(summary: dict[str, Any]) -> None:
    """Per table: status, files new/skipped, rows accepted / quarantined / rejected, version."""
    table = Table("table", "status", "files", "accepted", "quarantined", "rejected", "version")
    notes = []
    for name, row in summary.items():
        if not isinstance(row, dict):
            continue
        version = "-" if row.get("table_version") is None else str(row["table_version"])
        files = f"{row.get('files_new', 0)} new, {row.get('files_skipped', 0)} seen"
        table.add_row(
            name, row.get("status", "-"), files, f"{row.get('rows_accepted', 0):,}",
            f"{row.get('rows_quarantined', 0):,}", f"{row.get('rows_rejected', 0):,}", version,
        )  # fmt: skip
        notes += [
            f"{name}: {note}" for note in [*row.get("repaired", []), *row.get("warnings", [])]
        ]
    console.print(table)
    for note in notes:
        console.print(f"  note: {note}", soft_wrap=True)
    console.print(
        f"rows accepted {summary['rows_accepted']:,}, quarantined {summary['rows_quarantined']:,},"
        f" rejected {summary['rows_rejected']:,} (run {summary['run_id'][:8]})"
    )


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files, folders or globs (default: new files under <home>/raw)."),
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="Table of the PATHs/--query (default: their folder name).")
    ] = None,
    query: Annotated[
        list[str] | None,
        typer.Option(help="DuckDB SQL as a source, e.g. \"SELECT * FROM read_csv('x/*.csv')\"."),
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: spec).")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding (default: spec).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    use_case: UseCase = "fraud",
) -> None:
    """Validate new raw data against the contract and append it as a new lake version.

    Rows failing soft rules are quarantined; a broken hard rule rejects the batch (exit 2,
    nothing written). Files already ingested (same content, any name) are skipped.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from loopline.data.ingest import IngestError
    from loopline.data.sources import SourceError
    from loopline.stages import run_ingest

    settings, spec = _context(use_case)
    if query and not table:
        _fail("--table is required with --query (e.g. --table transactions)")
    name = _ingest_table(list(paths or []), table, spec) if paths or query else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with (
        _user_errors(),
        Progress(*columns, console=console, transient=True, disable=as_json) as bar,
    ):
        tasks: dict[str, Any] = {}

        def progress(table_name: str, phase: str, done: int, total: int) -> None:
            if table_name not in tasks:
                tasks[table_name] = bar.add_task(table_name, total=None)
            unit = " files" if phase == "read" else ""
            bar.update(
                tasks[table_name], description=f"{table_name}: {phase}{unit}",
                completed=done, total=total,
            )  # fmt: skip

        try:
            summary = run_ingest(
                settings, spec,
                paths={name: list(paths or [])} if name else None,
                queries={name: list(query)} if name and query else None,
                delimiter=delimiter, encoding=encoding, progress=progress,
            )  # fmt: skip
        except (SourceError, IngestError) as exc:
            _fail(str(exc))
    if as_json:
        _print(summary)
    else:
        _ingest_summary(summary)


app.add_typer(features_app, name="features")


@app.command()
def train(use_case: UseCase = "fraud") -> None:
    """Train a model version on a point-in-time training set and evaluate its gates."""
    from loopline.stages import run_train

    _stage(run_train, use_case)


@app.command()
def tune(
    trials: Annotated[
        int | None, typer.Option("--trials", help="Trials in total (default: the spec's).")
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option("--minutes", help="Start no trial after this many minutes (default: spec)."),
    ] = None,
    parallelism: Annotated[
        int | None, typer.Option(help="Trials at once, one thread each (default: the spec's).")
    ] = None,
    use_case: UseCase = "fraud",
) -> None:
    """Tune LightGBM params with Optuna (TPE, pruning) within a budget, then train the final
    model with the best ones. Every trial is a run under the study's run."""
    import optuna
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loopline.stages.tune import run_tune

    settings, spec = _context(use_case)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is a run: no log lines
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with (
        _user_errors(),
        Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar,
    ):
        task = bar.add_task("trials", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            label = "trials" if phase == "trials" else "final model"
            bar.update(task, description=label, completed=done, total=total)

        summary = run_tune(
            settings, spec, n_trials=trials, timeout_minutes=minutes, parallelism=parallelism,
            progress=progress,
        )  # fmt: skip
    _print(summary)


@app.command()
def evaluate(
    ref: Annotated[
        str, typer.Argument(help="Version number, alias or 'latest' (default champion).")
    ] = "champion",
    days: Annotated[int, typer.Option(min=1, max=3650, help="Window of newest labels.")] = 7,
    use_case: UseCase = "fraud",
) -> None:
    """Evaluate a registered version on the newest settled labels (metrics, slices, fairness)."""
    from loopline.stages.evaluate import run_evaluate

    _stage(run_evaluate, use_case, ref=ref, days=days)


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="The train run to reproduce.")],
) -> None:
    """Retrain a past train run from its record and check the model file's hash is the same.

    Exits 0 when the hashes match, 1 when they differ (with what differs: data, code, lock,
    packages).
    """
    from loopline.settings import Settings
    from loopline.stages.reproduce import run_reproduce

    with _user_errors():
        result = run_reproduce(Settings(), run_id)
    _print(result)
    if not result["reproduced"]:
        raise typer.Exit(1)


@app.command()
def promote(
    version: Annotated[int | None, typer.Option(min=1, help="Version (default newest).")] = None,
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    override: Annotated[
        bool, typer.Option(help="Promote although gates failed (needs --reason and --role).")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (audit trail; required to override).")] = "",
    actor: Annotated[
        str | None,
        typer.Option(envvar="LOOPLINE_ACTOR", help="Who promotes (default: the OS user)."),
    ] = None,
    role: Annotated[
        str | None, typer.Option(envvar="LOOPLINE_ROLE", help="Your role (overrides need one).")
    ] = None,
    expect_version: Annotated[
        int | None,
        typer.Option(min=0, help="Refuse unless the alias is at this version now (0: unset)."),
    ] = None,
    force: Annotated[bool, typer.Option(hidden=True, help="Old name of --override.")] = False,
    use_case: UseCase = "fraud",
) -> None:
    """Make a model version the champion if its gates passed (or by an approved override).

    Prints the summary; exits 1 when the gates blocked it, 2 on bad input or a refusal. Under
    the two-person rule it files a request instead (see `loopline models approve`).
    """
    from loopline.stages import run_promote

    settings, spec = _context(use_case)
    with _user_errors():
        summary = run_promote(
            settings, spec, model_version=version, alias=alias, override=override or force,
            reason=reason, actor=actor, role=role, expect_version=expect_version,
        )  # fmt: skip
    _print(summary)
    if summary.get("blocked"):
        raise typer.Exit(1)


@app.command()
def monitor(use_case: UseCase = "fraud") -> None:
    """Profile served predictions and compare them with the training reference."""
    from loopline.stages import run_monitor

    _stage(run_monitor, use_case)


@app.command()
def pipeline(use_case: UseCase = "fraud") -> None:
    """Run ingest, features, train, promote and monitor in this process (no Prefect)."""
    from loopline import stages

    settings, spec = _context(use_case)
    steps = [stages.run_ingest, stages.run_features, stages.run_train, stages.run_promote]
    with _user_errors():
        for step in steps:
            with console.status(step.__name__.removeprefix("run_")):
                result = step(settings, spec)
            console.print(f"[green]✓[/] {step.__name__.removeprefix('run_')}")
            _print(result)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port.")] = None,
) -> None:
    """Run the prediction API in the foreground (a non-loopback bind needs an API key)."""
    import os

    import uvicorn

    from loopline.serving.auth import open_verifier
    from loopline.settings import Settings
    from loopline.store import Store

    settings = Settings()
    bind = host or settings.host
    store = Store.open(settings)
    try:
        with _user_errors():
            open_verifier(store, settings, host=bind)  # the bind check, before anything starts
    finally:
        store.dispose()
    os.environ["LOOPLINE_HOST"] = bind  # the app factory's Settings() must see the real bind
    uvicorn.run(
        "loopline.serving.app:create_app",
        factory=True,
        host=bind,
        port=port or settings.api_port,
    )


@app.command()
def up(
    days: Annotated[int, typer.Option(min=1, max=3650, help="Demo days if no data.")] = 90,
    customers: Annotated[int, typer.Option(min=1, max=1_000_000, help="Demo customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Demo seed.")] = 7,
    pipeline_run: Annotated[
        bool | None,
        typer.Option(
            "--pipeline/--no-pipeline", help="Run the pipeline (default: only if no champion)."
        ),
    ] = None,
    redeploy: Annotated[bool, typer.Option(help="Deploy even if flows are unchanged.")] = False,
    traffic: Annotated[
        int, typer.Option(min=0, max=100_000, help="Demo requests to replay, then monitor.")
    ] = 300,
) -> None:
    """Start Prefect (server, worker, deployments), run the pipeline, start the API and app."""
    import time

    from loopline.ops import OpsError
    from loopline.ops import up as start_platform
    from loopline.settings import Settings

    settings = Settings()
    started = time.perf_counter()
    try:
        with console.status("starting") as status_line:
            report = start_platform(
                settings,
                days=days,
                customers=customers,
                seed=seed,
                run_pipeline=pipeline_run,
                redeploy=redeploy,
                progress=lambda message: status_line.update(message),
            )
    except OpsError as exc:
        _fail(str(exc).splitlines()[0] + f" (details: loopline logs; home {settings.home})")
    if report.pipeline is not None:
        console.print(
            f"pipeline run {report.pipeline.name}: {report.pipeline.state_name} "
            f"in {report.pipeline.seconds:.0f}s"
        )
    if traffic and report.pipeline is not None and report.pipeline.ok:
        _demo_traffic(settings, traffic)
    console.print(f"[bold green]loopline is up[/] in {time.perf_counter() - started:.0f}s")
    for name, url in report.urls.items():
        console.print(f"  {name:<16} {url}")
    console.print(f"  export PREFECT_API_URL={settings.prefect_api_url}")


def _demo_traffic(settings: Any, n: int) -> None:
    """Replay the newest demo events through the API and run a monitoring pass, so the
    control panel shows predictions and drift right away."""
    from loopline.data.contracts import read_batch
    from loopline.data.demo import LIVE_DIR
    from loopline.serving.traffic import (
        request_bodies,
        send,
        unscored_between,
        wait_for_champion,
    )
    from loopline.spec import load_spec
    from loopline.stages import run_monitor

    spec = load_spec(settings.use_case)
    source = settings.raw_dir / LIVE_DIR / f"{spec.events.table}.csv"
    if not source.is_file():
        console.print(f"no live demo traffic at {source}: skipping the demo requests")
        return
    events = read_batch(source, spec.events)
    bodies = request_bodies(events, spec, n=n, now=datetime.now(UTC))
    # The rest of the live day goes to /events, so the windows the service serves are complete.
    rest = unscored_between(events, spec, bodies)
    base = f"http://{settings.host}:{settings.api_port}"
    with console.status(f"replaying {len(bodies)} demo requests"):
        if wait_for_champion(base) is None:
            console.print(f"the API at {base} serves no champion yet: skipping demo requests")
            return
        report = send(base, bodies, unscored=rest, timestamp=spec.events.timestamp)
        if report.ok:
            run_monitor(settings, spec)
    console.print(f"demo traffic: {report.ok}/{report.sent} answered, monitoring pass stored")


@app.command()
def down() -> None:
    """Stop everything `loopline up` started (app, API, worker, then server)."""
    from loopline.ops import down as stop_platform
    from loopline.settings import Settings

    stopped = stop_platform(Settings())
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """Show which platform processes run, with their URLs and logs."""
    from loopline.ops import status as platform_status
    from loopline.settings import Settings

    table = Table("component", "state", "pid", "url", "log")
    for item in platform_status(Settings()):
        table.add_row(item.name, item.state, str(item.pid or "-"), item.url or "-", str(item.log))
    console.print(table)


@app.command()
def logs(
    component: Annotated[
        str, typer.Argument(help="prefect-server, prefect-worker, api, app, deploy")
    ] = "prefect-worker",
    lines: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
) -> None:
    """Print the end of a platform process's log."""
    from loopline.ops import tail_log
    from loopline.settings import Settings

    known = ("prefect-server", "prefect-worker", "api", "app", "deploy", "prefect-cli")
    if component not in known:
        _fail(f"unknown component '{component}' (one of: {', '.join(known)})")
    typer.echo(tail_log(Settings(), component, lines=lines))


@app.command()
def replay(
    path: Annotated[
        Path | None, typer.Argument(help="Events file (default: the demo's live traffic).")
    ] = None,
    n: Annotated[int, typer.Option(min=1, max=100_000, help="Events to send.")] = 500,
    url: Annotated[str | None, typer.Option(help="API base URL (default: settings).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    use_case: UseCase = "fraud",
) -> None:
    """Send events from a file to the prediction API (demo traffic), with a progress bar."""
    from rich.progress import Progress

    from loopline.data.contracts import read_batch
    from loopline.data.demo import LIVE_DIR
    from loopline.serving.traffic import request_bodies, send, unscored_between

    settings, spec = _context(use_case)
    source = path or settings.raw_dir / LIVE_DIR / f"{spec.events.table}.csv"
    if not source.is_file():
        _fail(f"events file not found: {source} (write demo data with `loopline demo`)")
    with _user_errors():
        events = read_batch(source, spec.events)
        bodies = request_bodies(events, spec, n=n, seed=seed, now=datetime.now(UTC))
        rest = unscored_between(events, spec, bodies)
    base = url or f"http://{settings.host}:{settings.api_port}"
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"POST {base}/predict", total=len(bodies))
        report = send(base, bodies, on_response=lambda _status: progress.advance(task),
                      unscored=rest, timestamp=spec.events.timestamp)  # fmt: skip
    _print(report.as_dict())
    if report.ok == 0:
        _fail(f"no request succeeded against {base}: {report.errors[:1]}")


@app.command("push")
def push_events(
    path: Annotated[Path, typer.Argument(help="Events file (CSV, Parquet, JSON Lines).")],
    url: Annotated[str | None, typer.Option(help="API base URL (default: settings).")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="LOOPLINE_API_KEY", help="API key (scope predict).")
    ] = None,
    use_case: UseCase = "fraud",
) -> None:
    """Send events that are not scored to the prediction API (`POST /events`): their entities'
    online features move on, and the events land in the lake for the next ingest. Every row
    is checked against the contract first; a bad row sends nothing."""
    from rich.progress import Progress

    from loopline.data.contracts import read_batch
    from loopline.serving.traffic import event_bodies, push

    settings, spec = _context(use_case)
    if not path.is_file():
        _fail(f"events file not found: {path}")
    with _user_errors():
        events = read_batch(path, spec.events)
        try:
            bodies = event_bodies(events, spec)
        except ValueError as exc:
            _fail(f"{path}: {exc}")
    base = url or f"http://{settings.host}:{settings.api_port}"
    headers = {"X-API-Key": api_key} if api_key else None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"POST {base}/events", total=len(bodies))
        try:
            accepted = push(base, bodies, chunk=spec.serving.max_batch_rows, headers=headers,
                            on_chunk=lambda n: progress.advance(task, n))  # fmt: skip
        except (RuntimeError, OSError) as exc:
            _fail(str(exc))
        except Exception as exc:  # httpx errors: the service is not there
            _fail(f"cannot reach {base}: {type(exc).__name__}: {exc}")
    _print({"pushed": accepted, "url": base})


def quiet_libraries() -> None:
    """Silence library chatter that says nothing to a loopline user (deprecations inside
    ibis and Feast's advisory about a flag it does honour)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("feast").setLevel(logging.ERROR)


def main() -> None:
    """Console entry point: usage errors print one line and exit with code 2."""
    # Typer 0.29 vendors click; its exceptions live in typer._click.
    from typer._click import exceptions as click_errors

    quiet_libraries()

    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(0)  # the help text was printed while the error was built
    except click_errors.ClickException as exc:
        where = f" ({exc.ctx.command_path})" if getattr(exc, "ctx", None) else ""
        typer.echo(f"error{where}: {exc.format_message()}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)

"""`loopline features ...`: build feature tables, materialize them online, show status and skew.

    loopline features build [--full]          feature tables (incremental) + Feast apply
    loopline features materialize [--end T]   online store up to each table's watermark
    loopline features status [--json]         per view: online watermark, lag, table version
    loopline features skew [--sample N]       online vs offline values for sampled entities
    loopline features lock                    record new feature services as released

Bad input (a naive or future --end, a released feature view changed in place, an unknown
service) prints one line and exits with code 2; nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

features_app = typer.Typer(
    help="Feature tables, Feast materialization, freshness and skew.", no_args_is_help=True
)

UseCase = Annotated[
    str,
    typer.Option(
        "--use-case", "-u", envvar="LOOPLINE_USE_CASE", help="Use case name or spec path."
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """The CLI's user errors, plus the feature layer's: changed released views, unknown
    services or entities."""
    from feast.errors import FeastObjectNotFoundException

    from loopline.cli import _fail, _user_errors
    from loopline.features.feast_ops import EntityNotFoundError, ServiceDefinitionError

    with _user_errors():
        try:
            yield
        except (ServiceDefinitionError, EntityNotFoundError, FeastObjectNotFoundException) as exc:
            _fail(str(exc))


def _parse_end(text: str | None) -> datetime | None:
    from loopline.cli import _fail

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--end: not an ISO-8601 time: {text!r} (e.g. 2026-03-01T00:00:00Z)")
    if value.tzinfo is None or value.utcoffset() is None:
        _fail(f"--end: must include a time zone, e.g. {text}Z or {text}+00:00")
    now = datetime.now(UTC)
    if value > now:
        _fail(f"--end: {text} is in the future (now {now:%Y-%m-%dT%H:%M:%SZ}): rows stamped "
              "later are not final yet")  # fmt: skip
    return value


@features_app.command("build")
def build(
    full: Annotated[bool, typer.Option(help="Rebuild every table from scratch.")] = False,
    materialize: Annotated[
        bool, typer.Option(help="Also materialize the online store afterwards.")
    ] = False,
    use_case: UseCase = "fraud",
) -> None:
    """Compute the feature tables (incrementally) and apply the Feast repo."""
    from loopline.cli import _context, _print, console
    from loopline.stages.features import run_feature_build, run_features

    settings, spec = _context(use_case)
    with _errors(), console.status("building feature tables"):
        run = run_features if materialize else run_feature_build
        summary = run(settings, spec, full=full)
    _print(summary)


@features_app.command("materialize")
def materialize(
    end: Annotated[
        str | None,
        typer.Option(help="Stop at this time (ISO-8601 with zone); default: each table's end."),
    ] = None,
    use_case: UseCase = "fraud",
) -> None:
    """Load new feature rows into the online store, from each view's watermark."""
    from loopline.cli import _context, _print, console
    from loopline.stages.features import run_feature_materialize

    until = _parse_end(end)
    settings, spec = _context(use_case)
    with _errors(), console.status("materializing"):
        summary = run_feature_materialize(settings, spec, end=until)
    _print(summary)


@features_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    use_case: UseCase = "fraud",
) -> None:
    """Per feature view: how fresh the online store is and what the offline table holds."""
    from loopline.cli import _context, _print, console
    from loopline.stages.features import feature_status

    settings, spec = _context(use_case)
    with _errors():
        report = feature_status(settings, spec)
    if as_json:
        _print(report)
        return
    table = Table("view", "online up to", "lag", "table version", "rows", "table up to")
    for row in report["views"]:
        table.add_row(
            row["view"] + ("" if row.get("registered", True) else " (not applied)"),
            _short(row.get("watermark")),
            _age(row.get("lag_s")),
            "-" if row.get("table_version") is None else str(row["table_version"]),
            "-" if row.get("table_rows") is None else f"{row['table_rows']:,}",
            _short(row.get("table_watermark")),
        )
    console.print(f"feature service of the use case: {report['service']}")
    console.print(table)


@features_app.command("skew")
def skew(
    service: Annotated[
        str | None, typer.Option(help="Feature service (default: the spec's).")
    ] = None,
    sample: Annotated[
        int, typer.Option(min=1, max=100_000, help="Entities per view (--served: requests).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    served: Annotated[
        bool,
        typer.Option(
            "--served",
            help="Compare what logged requests were served with the point-in-time offline "
            "value at each request's time (run ingest and features build first).",
        ),
    ] = False,
    use_case: UseCase = "fraud",
) -> None:
    """Compare online values with offline point-in-time values for sampled entities, or
    (--served) what logged requests were served with the offline values at their times."""
    from loopline.cli import _context, _print, console
    from loopline.stages.features import run_feature_skew, run_served_skew

    settings, spec = _context(use_case)
    with _errors(), console.status("comparing served/online and offline values"):
        if served:
            report = run_served_skew(settings, spec, sample=sample, seed=seed)
        else:
            report = run_feature_skew(settings, spec, service=service, sample=sample, seed=seed)
    _print(report)
    if report["mismatches"]:
        raise typer.Exit(code=1)


@features_app.command("lock")
def lock(use_case: UseCase = "fraud") -> None:
    """Record feature services not yet released in feature_repo/service_versions.json."""
    from loopline.cli import _context, console
    from loopline.features import feast_ops

    settings, _spec = _context(use_case)
    with _errors():
        store = feast_ops.open_store(settings)
        new = feast_ops.lock_services(settings.feature_repo, feast_ops.declared_definitions(store))
    console.print(f"released: {', '.join(new)}" if new else "nothing new to release")


def _short(value: Any) -> str:
    return "-" if not value else str(value)[:19].replace("T", " ")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"

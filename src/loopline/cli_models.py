"""`loopline models`: list, show, history, rollback, archive and export model versions.

    loopline models list
    loopline models show fraud-detector@champion
    loopline models history fraud-detector --at 2026-03-03T14:00:00Z
    loopline models rollback --reason "precision dropped"
    loopline models archive fraud-detector@3
    loopline models export fraud-detector@champion --format onnx --out model.onnx

A model version is named `NAME@VERSION`, `NAME@ALIAS` or `NAME@latest`. Bad input (unknown
model, version or alias, malformed reference or time, a refused package, a lost race) prints
one line naming the problem and exits with code 2; nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Inspect and move model versions.", no_args_is_help=True)
console = Console(soft_wrap=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Actor = Annotated[str, typer.Option(help="Who (audit trail).")]
Reason = Annotated[str, typer.Option(help="Why (audit trail).")]
UseCase = Annotated[
    str, typer.Option("--use-case", "-u", help="Use case whose model NAME defaults to.")
]
Name = Annotated[
    str | None,
    typer.Argument(help="Model name (default: the use case's model).", show_default=False),
]
Ref = Annotated[str, typer.Argument(help="NAME@VERSION, NAME@ALIAS or NAME@latest.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Registry refusals, unknown names and bad specs: one line, exit code 2."""
    from loopline.lake.artifacts import ArtifactError
    from loopline.registry.names import RegistryError
    from loopline.spec import SpecError

    try:
        yield
    except (RegistryError, ArtifactError, SpecError) as exc:
        _fail(str(exc).splitlines()[0])


def _settings() -> Any:
    from loopline.settings import Settings

    return Settings()


def _store(settings: Any) -> Any:
    from loopline.store import Store

    return Store.open(settings)


def _model_name(name: str | None, use_case: str) -> str:
    if name is not None:
        return name
    from loopline.spec import load_spec

    with _user_errors():
        return load_spec(use_case).model_name


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        _fail(f"{option} {value!r}: not an ISO time (e.g. 2026-03-01T14:00:00+00:00)")
    if parsed.tzinfo is None:
        _fail(f"{option} {value!r}: add a UTC offset (e.g. 2026-03-01T14:00:00Z or +02:00)")
    return parsed


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    archived: Annotated[
        bool, typer.Option("--archived/--no-archived", help="Include archived versions.")
    ] = True,
    as_json: AsJson = False,
) -> None:
    """List model versions with their status, metrics, gates and aliases."""
    from loopline.registry.describe import version_rows

    with _user_errors(), _store(_settings()).reader() as session:
        rows = version_rows(session, name, include_archived=archived)
    if as_json:
        _print_json({"model_versions": rows})
        return
    table = Table("model", "version", "status", "aliases", "metrics", "gates", "run", "created")
    for row in rows:
        metrics = ", ".join(
            f"{k}={_number(v)}"
            for k, v in sorted(row["metrics"].items())
            if not isinstance(v, dict)
        )
        gates = "passed" if row["gates_passed"] else "failed"
        table.add_row(
            row["model_name"], str(row["version"]), row["status"],
            ",".join(row["aliases"]) or "-", metrics, gates, row["run_id"][:8],
            row["created_at"][:19],
        )  # fmt: skip
    console.print(table)


@models_app.command("show")
def models_show(
    ref: Ref,
    verify: Annotated[
        bool, typer.Option(help="Load the package and verify its hash, limits and signature.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Show a version: aliases, metrics, lineage, package hash and gate results."""
    from loopline.lake.artifacts import ArtifactStore
    from loopline.registry.describe import describe_version
    from loopline.registry.models import resolve_ref
    from loopline.registry.package import load_version

    settings = _settings()
    store = _store(settings)
    with _user_errors():
        with store.reader() as session:
            version = resolve_ref(session, ref)
            detail = describe_version(session, version)
        if verify:
            verified = load_version(
                store, ArtifactStore(settings.artifacts_dir), version, actor="cli"
            )
            detail["verified"] = {
                "source_id": verified.source_id,
                "packaged": verified.package is not None,
                "trees": verified.booster.num_trees(),
            }
    if as_json:
        _print_json(detail)
        return
    lineage = detail["lineage"]
    console.print(
        f"[bold]{detail['model_name']}[/] version {detail['version']} ({detail['status']}), "
        f"created {detail['created_at'][:19]}"
    )
    console.print(f"  aliases   {', '.join(detail['aliases']) or '-'}")
    console.print(f"  package   {detail['package_id'] or '- (registered without a package)'}")
    console.print(f"  model     {detail['model_artifact_id']}")
    if "verified" in detail:
        console.print(f"  verified  yes ({detail['verified']['trees']} trees)")
    console.print(f"  run       {lineage['run_id']}")
    console.print(f"  features  {lineage['feature_service']}: {', '.join(lineage['inputs'])}")
    for dv in lineage["datasets"]:
        console.print(f"  data      {dv['role']}: {dv['dataset']} v{dv['table_version']}")
    metrics = ", ".join(
        f"{k}={_number(v)}" for k, v in sorted(detail["metrics"].items()) if not isinstance(v, dict)
    )
    console.print(f"  metrics   {metrics or '-'}")
    if detail["gates"]:
        table = Table("gate", "passed", "observed", "threshold", "evaluated")
        for gate in detail["gates"]:
            table.add_row(
                gate["gate"], "yes" if gate["passed"] else "[red]no[/]",
                _number(gate["observed"]), _number(gate["threshold"]),
                gate["evaluated_at"][:19],
            )  # fmt: skip
        console.print(table)
    else:
        console.print("  gates     - (none recorded)")
    for move in detail["alias_moves"]:
        console.print(
            f"  {move['at'][:19]}  {move['alias']} {move['from_version'] or '-'} -> "
            f"{move['to_version']}  {move['action']} by {move['actor']}"
            + (f": {move['reason']}" if move["reason"] else "")
        )


@models_app.command("history")
def models_history(
    name: Name = None,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    at: Annotated[
        str | None, typer.Option(help="Where the aliases pointed at this time (ISO, with offset).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Moves at or after (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Moves at or before (ISO).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=100_000, help="Newest N moves.")] = None,
    as_json: AsJson = False,
    use_case: UseCase = "fraud",
) -> None:
    """Show alias moves (who, when, from, to, why), or where each alias pointed at `--at`."""
    from loopline.registry.history import alias_change_at, alias_history, aliases_at

    model_name = _model_name(name, use_case)
    when, start, end = _time(at, "--at"), _time(since, "--since"), _time(until, "--until")
    with _user_errors(), _store(_settings()).reader() as session:
        if when is not None:
            if alias is not None:
                change = alias_change_at(session, model_name, alias, when)
                found = {alias: change} if change and change.to_version else {}
            else:
                found = dict(aliases_at(session, model_name, when))
            if as_json:
                _print_json({"at": when.isoformat(), "aliases": {
                    k: v.as_dict() for k, v in found.items() if v is not None
                }})  # fmt: skip
                return
            if not found:
                console.print(f"no alias of {model_name} was set at {when.isoformat()}")
            for key, change in found.items():
                assert change is not None
                console.print(
                    f"{key}: version {change.to_version} (since {change.at.isoformat()[:19]}, "
                    f"{change.action} by {change.actor}"
                    + (f": {change.reason})" if change.reason else ")")
                )
            return
        changes = alias_history(session, model_name, alias, since=start, until=end, limit=limit)
    if as_json:
        _print_json({"model_name": model_name, "moves": [c.as_dict() for c in changes]})
        return
    table = Table("at", "alias", "from", "to", "revision", "action", "actor", "reason")
    for c in changes:
        table.add_row(
            c.at.isoformat()[:23], c.alias, _number(c.from_version), _number(c.to_version),
            str(c.revision), c.action, c.actor, c.reason,
        )  # fmt: skip
    console.print(table)


@models_app.command("rollback")
def models_rollback(
    name: Name = None,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Reason = "",
    actor: Actor = "cli",
    use_case: UseCase = "fraud",
) -> None:
    """Move an alias (the champion by default) back to the version it pointed at before."""
    from loopline.registry.models import move_alias

    model_name = _model_name(name, use_case)
    with _user_errors():
        move = move_alias(
            _store(_settings()),
            model_name=model_name,
            alias=alias,
            version=None,
            expected_revision=None,
            actor=actor,
            reason=reason,
            rollback=True,
        )
    console.print(
        f"{move.alias} of {move.model_name} rolled back from version {move.from_version} "
        f"to {move.to_version} (revision {move.revision})"
    )


def _version_ref(ref: str) -> tuple[str, int]:
    name, sep, number = ref.strip().rpartition("@")
    if not sep or not name or not number.strip().isdigit():
        _fail(f"{ref!r}: expected NAME@VERSION (e.g. fraud-detector@3)")
    return name, int(number)


@models_app.command("archive")
def models_archive(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to archive.")],
    reason: Reason = "",
    actor: Actor = "cli",
) -> None:
    """Archive a version: it stays readable but cannot take an alias."""
    from loopline.registry.models import archive_version

    name, number = _version_ref(ref)
    with _user_errors(), _store(_settings()).session() as session:
        row = archive_version(session, model_name=name, version=number, actor=actor, reason=reason)
        console.print(f"archived {row.model_name} version {row.version}")


@models_app.command("unarchive")
def models_unarchive(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to restore.")],
    reason: Reason = "",
    actor: Actor = "cli",
) -> None:
    """Return an archived version to `ready` (it can take aliases again)."""
    from loopline.registry.models import unarchive_version

    name, number = _version_ref(ref)
    with _user_errors(), _store(_settings()).session() as session:
        row = unarchive_version(
            session, model_name=name, version=number, actor=actor, reason=reason
        )
        console.print(f"unarchived {row.model_name} version {row.version}")


@models_app.command("export")
def models_export(
    ref: Ref,
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    format_: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
    as_json: AsJson = False,
) -> None:
    """Export a version (e.g. NAME@champion) as ONNX, checked against LightGBM first."""
    from loopline.lake.artifacts import ArtifactStore
    from loopline.registry.onnx_export import export_onnx

    if format_.strip().lower() != "onnx":
        _fail(f"--format {format_!r}: unsupported (supported: onnx)")
    settings = _settings()
    with _user_errors():
        result = export_onnx(
            _store(settings),
            ArtifactStore(settings.artifacts_dir),
            ref,
            out,
            overwrite=force,
            actor="cli",
        )
    if as_json:
        _print_json(result.as_dict())
        return
    console.print(
        f"wrote {result.path} ({result.size_bytes:,} bytes): {result.model_name} version "
        f"{result.version}, {result.objective}, outputs {', '.join(result.outputs)}; "
        f"matches LightGBM on {result.checked_rows} rows (max diff {result.max_abs_diff:.2g})"
    )

"""`loopline models`: list, show, promote, rollback, history, archive and export versions.

    loopline models list
    loopline models show fraud-detector@champion
    loopline models promote fraud-detector@3 --expect-version 2
    loopline models promote fraud-detector@3 --override --reason "..." --role model-risk
    loopline models request fraud-detector@3 --reason "beats v2 on the last week"
    loopline models requests --status pending
    loopline models approve 5f0c2a --role model-risk
    loopline models reject 5f0c2a --reason "wait for the holiday data" --role model-risk
    loopline models rollback --reason "precision dropped"
    loopline models history fraud-detector --at 2026-03-03T14:00:00Z
    loopline models archive fraud-detector@3
    loopline models export fraud-detector@champion --format onnx --out model.onnx
    loopline models compare-live fraud-detector --since 24h

A model version is named `NAME@VERSION`, `NAME@ALIAS` or `NAME@latest`. Who acts is `--actor`
(or LOOPLINE_ACTOR; default: the OS user), in `--role` (or LOOPLINE_ROLE); the use case's
`promotion:` policy decides what they may do. Bad input and refusals (unknown model, version
or alias, malformed reference or time, failed gates, a missing approver role, a refused
package, a lost race) print one line naming the problem and exit with code 2; nothing is
written but the audit event of a refused attempt.
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
Who = Annotated[
    str | None,
    typer.Option(envvar="LOOPLINE_ACTOR", help="Who (audit trail; default: the OS user)."),
]
Role = Annotated[
    str | None,
    typer.Option(envvar="LOOPLINE_ROLE", help="Your role (overrides and approvals need one)."),
]
ExpectVersion = Annotated[
    int | None,
    typer.Option(
        min=0, help="Refuse unless the alias is at this version now (0: unset); default: as read."
    ),
]
PolicyUseCase = Annotated[
    str,
    typer.Option(
        "--use-case",
        "-u",
        envvar="LOOPLINE_USE_CASE",
        help="Use case whose promotion policy applies.",
    ),
]
RequestId = Annotated[str, typer.Argument(help="Request id (or its first 6+ characters).")]


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
    actor: Who = None,
    role: Role = None,
    expect_version: ExpectVersion = None,
    as_json: AsJson = False,
    use_case: UseCase = "fraud",
) -> None:
    """Move an alias (the champion by default) back to the version it pointed at before."""
    from loopline.registry.policy import rollback

    model_name = _model_name(name, use_case)
    with _user_errors():
        change = rollback(
            _store(_settings()), model_name=model_name, alias=alias, actor=actor, role=role,
            reason=reason, expect_version=expect_version,
        )  # fmt: skip
    if as_json:
        _print_json(change.as_dict())
        return
    move = change.move
    console.print(
        f"{move.alias} of {move.model_name} rolled back from version {move.from_version} "
        f"to {move.to_version} (revision {move.revision})"
    )


def _spec_for(model_name: str, use_case: str) -> Any:
    """The use case whose policy governs `model_name`: it must be that use case's model."""
    from loopline.registry.names import normalise_model_name
    from loopline.spec import load_spec

    with _user_errors():
        spec = load_spec(use_case)
        if normalise_model_name(model_name)[1] != normalise_model_name(spec.model_name)[1]:
            _fail(
                f"model '{model_name}' is not the model of use case '{spec.name}' "
                f"('{spec.model_name}'): pass the right --use-case"
            )
    return spec


def _target(ref: str) -> tuple[str, int]:
    """Model name and version number of a NAME@VERSION|ALIAS|latest reference."""
    from loopline.registry.models import resolve_ref

    with _user_errors(), _store(_settings()).reader() as session:
        version = resolve_ref(session, ref)
        return version.model_name, version.version


@models_app.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME@ALIAS, NAME@latest).")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    override: Annotated[
        bool, typer.Option(help="Promote although gates failed (needs --reason and --role).")
    ] = False,
    reason: Reason = "",
    actor: Who = None,
    role: Role = None,
    expect_version: ExpectVersion = None,
    as_json: AsJson = False,
    use_case: PolicyUseCase = "fraud",
) -> None:
    """Point an alias (champion) at a version whose gates passed, or by an approved override.

    A compare-and-swap on the alias: if it moves meanwhile (or is not --expect-version), this is
    a conflict. Under the two-person rule, champion is requested instead (`models request`).
    """
    from loopline.registry.policy import promote

    model_name, version = _target(ref)
    spec = _spec_for(model_name, use_case)
    with _user_errors():
        change = promote(
            _store(_settings()), spec.promotion, model_name=model_name, version=version,
            alias=alias, actor=actor, role=role, override=override, reason=reason,
            expect_version=expect_version, use_case=spec.name,
        )  # fmt: skip
    if as_json:
        _print_json(change.as_dict())
        return
    move = change.move
    how = f" by override of {', '.join(change.failed_gates) or 'gates'}" if change.override else ""
    console.print(
        f"{move.alias} of {move.model_name}: version {move.from_version or '-'} -> "
        f"{move.to_version} (revision {move.revision}){how}"
    )


@models_app.command("request")
def models_request(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME@ALIAS, NAME@latest).")],
    reason: Annotated[str, typer.Option(help="Why this version should be champion.")] = "",
    override: Annotated[
        bool, typer.Option(help="Its gates failed: ask the approver to override them.")
    ] = False,
    actor: Who = None,
    role: Role = None,
    as_json: AsJson = False,
    use_case: PolicyUseCase = "fraud",
) -> None:
    """Request that a version become champion; another approver approves it (two-person rule)."""
    from loopline.registry.policy import request_promotion

    model_name, version = _target(ref)
    spec = _spec_for(model_name, use_case)
    with _user_errors():
        request = request_promotion(
            _store(_settings()), spec.promotion, model_name=model_name, version=version,
            reason=reason, actor=actor, role=role, override=override, use_case=spec.name,
        )  # fmt: skip
    if as_json:
        _print_json(request)
        return
    console.print(
        f"requested {request['model_name']} version {request['version']} as {request['alias']} "
        f"(request {request['id']}, expires {request['expires_at'][:16]}); another approver "
        f"runs: loopline models approve {request['id'][:8]}"
    )


def _spec_for_request(use_case: str) -> Any:
    """The use case whose policy applies (approval checks the request is for its model)."""
    from loopline.spec import load_spec

    with _user_errors():
        return load_spec(use_case)


@models_app.command("approve")
def models_approve(
    request_id: RequestId,
    note: Annotated[str, typer.Option(help="A note with the approval (audit trail).")] = "",
    actor: Who = None,
    role: Role = None,
    as_json: AsJson = False,
    use_case: PolicyUseCase = "fraud",
) -> None:
    """Approve someone else's promotion request: its version becomes champion, unless champion
    moved since the request (then the request is stale)."""
    from loopline.registry.policy import approve_request

    spec = _spec_for_request(use_case)
    with _user_errors():
        change = approve_request(
            _store(_settings()), spec.promotion, request_id, actor=actor, role=role, note=note,
            model_name=spec.model_name, use_case=spec.name,
        )  # fmt: skip
    if as_json:
        _print_json(change.as_dict())
        return
    move = change.move
    console.print(
        f"approved {change.request_id}: {move.alias} of {move.model_name} version "
        f"{move.from_version or '-'} -> {move.to_version} (revision {move.revision})"
    )


@models_app.command("reject")
def models_reject(
    request_id: RequestId,
    reason: Annotated[str, typer.Option(help="Why (required).")] = "",
    actor: Who = None,
    role: Role = None,
    as_json: AsJson = False,
    use_case: PolicyUseCase = "fraud",
) -> None:
    """Reject a pending promotion request (an approver), or withdraw your own."""
    from loopline.registry.policy import reject_request

    spec = _spec_for_request(use_case)
    with _user_errors():
        request = reject_request(
            _store(_settings()), spec.promotion, request_id, reason=reason, actor=actor,
            role=role, model_name=spec.model_name, use_case=spec.name,
        )  # fmt: skip
    if as_json:
        _print_json(request)
        return
    console.print(f"rejected request {request['id']}: {request['decision_note']}")


@models_app.command("requests")
def models_requests(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: pending, approved, rejected, stale, expired."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List promotion requests (newest first) with their status and decision."""
    from loopline.registry.policy import list_requests

    with _user_errors(), _store(_settings()).reader() as session:
        rows = list_requests(session, name, status=status)
    if as_json:
        _print_json({"requests": rows})
        return
    table = Table("id", "version", "status", "requested by", "decided by", "reason", "at")
    for row in rows:
        table.add_row(
            row["id"][:8], f"{row['model_name']}@{row['version']}", row["status"],
            row["requested_by"], row["decided_by"] or "-",
            row["reason"] + (" (override)" if row["override"] else ""), row["created_at"][:16],
        )  # fmt: skip
    console.print(table)


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


_AGES = {"m": 60, "h": 3600, "d": 86400}


def _since(value: str | None, option: str) -> datetime | None:
    """An ISO time with offset, or an age back from now such as 30m, 24h or 7d."""
    from datetime import UTC, timedelta

    if value is not None:
        text = value.strip().lstrip("-")
        if text[:-1].isdigit() and text[-1:] in _AGES:
            return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * _AGES[text[-1]])
    return _time(value, option)


def _interval(interval: dict[str, Any]) -> str:
    if interval["value"] is None:
        return "-"
    if interval["low"] is None:
        return f"{interval['value']:.4f}"
    return f"{interval['value']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"


def _print_live(found: dict[str, Any]) -> None:
    champion, challenger = found["champion"], found["challenger"]
    role = found["challenger_role"] or "challenger"
    window = " to ".join(t[:16] for t in (found["since"] or "start", found["until"] or "now"))
    console.print(f"[bold]{found['model_name']}[/]: champion vs {role}, {window}")
    if found["reason"]:
        console.print(f"  {found['reason']}")
    if champion is None and challenger is None:
        return
    table = Table("", "champion", role, "difference")

    def version(side: dict[str, Any] | None) -> str:
        return "-" if side is None else f"v{side['model_version']}"

    table.add_row("version", version(champion), version(challenger), "")
    table.add_row(
        "rows", _number(champion and champion["rows"]), _number(challenger and challenger["rows"]),
        "",
    )  # fmt: skip
    means = [side and side["mean_score"] for side in (champion, challenger)]
    gap = means[1] - means[0] if None not in means else None
    table.add_row("mean score", *(_number(m) for m in means), _number(gap))
    if champion and champion["threshold"] is not None:
        table.add_row(
            "threshold", _number(champion["threshold"]), _number(challenger["threshold"]), ""
        )
    metric = found["metric"]
    if metric:
        table.add_row(
            metric["metric"], _interval(metric["champion"]),
            _interval(metric["challenger"]), _interval(metric["difference"]),
        )  # fmt: skip
    console.print(table)
    agreement, distance = found["agreement"], found["distance"]
    if agreement:
        parts = [f"{agreement['pairs']} paired requests"]
        if agreement["decisions"] is not None:
            parts.append(f"same decision {agreement['decisions']:.1%}")
        if agreement["within_share"] is not None:
            parts.append(f"within 5% {agreement['within_share']:.1%}")
        parts.append(f"mean |difference| {agreement['mean_abs_difference']:.4g}")
        console.print("  agreement  " + ", ".join(parts))
    if distance:
        console.print(f"  distance   KS {distance['ks']:.4f}, PSI {distance['psi']:.4f}")
    if metric:
        better = "higher" if metric["higher_is_better"] else "lower"
        how = "paired" if metric["paired"] else "unpaired"
        console.print(
            f"  labelled   {metric['champion_rows']} / {metric['challenger_rows']} requests; "
            f"\\[low, high]: 95% interval ({how} bootstrap, {metric['resamples']} resamples); "
            f"{better} {metric['metric']} is better"
        )
    elif found["metric_reason"]:
        console.print(f"  metric     {found['metric_reason']}")
    for note in found["notes"]:
        console.print(f"  note       {note}")


@models_app.command("compare-live")
def models_compare_live(
    name: Name = None,
    since: Annotated[
        str | None, typer.Option(help="From this time (ISO with offset) or age (30m, 24h, 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (ISO) or age.")] = None,
    role: Annotated[
        str, typer.Option(help="Challenger: shadow, canary, or auto (the one serving last).")
    ] = "auto",
    bootstrap: Annotated[
        int, typer.Option(min=0, max=100_000, help="Bootstrap resamples of the intervals.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: AsJson = False,
    use_case: UseCase = "fraud",
) -> None:
    """Compare the champion with its shadow or canary on logged traffic (and labels, if any)."""
    from loopline.monitoring.live_compare import CHALLENGER_ROLES, compare_live
    from loopline.spec import load_spec

    if role not in CHALLENGER_ROLES:
        _fail(f"--role {role!r}: must be one of {', '.join(CHALLENGER_ROLES)}")
    start, end = _since(since, "--since"), _since(until, "--until")
    if start is not None and end is not None and start >= end:
        _fail(f"--since {since!r}: must be before --until {until!r}")
    with _user_errors():
        spec = _spec_for(name, use_case) if name is not None else load_spec(use_case)
    settings = _settings()
    store = _store(settings)
    try:
        found = compare_live(
            settings, spec, model_name=name, challenger_role=role, since=start, until=end,
            bootstrap=bootstrap, seed=seed, store=store,
        ).as_dict()  # fmt: skip
    finally:
        store.dispose()
    if as_json:
        _print_json(found)
        return
    _print_live(found)

"""`loopline keys`: create, list and revoke API keys of the prediction service.

    loopline keys create --name replay --scope predict
    loopline keys list --json
    loopline keys revoke 3f2a9c1d5e6b7a80

`create` prints the new key once, alone on stdout (`KEY=$(loopline keys create ...)`); only a
salted hash of it is stored, so a lost key is revoked and replaced, never recovered. Who acts
is `--actor` (or LOOPLINE_ACTOR; default: the OS user). Bad input (an empty name, an unknown
scope, an unknown or revoked key id) prints one line naming the problem and exits with code 2;
nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
console = Console()

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Who = Annotated[
    str | None,
    typer.Option(envvar="LOOPLINE_ACTOR", help="Who (audit trail; default: the OS user)."),
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _key_errors() -> Iterator[None]:
    """Bad names, scopes and key ids: one line, exit code 2."""
    from loopline.registry.names import RegistryError
    from loopline.serving.api_keys import ApiKeyError

    try:
        yield
    except (ApiKeyError, RegistryError) as exc:
        _fail(str(exc))


def _store() -> Any:
    from loopline.settings import Settings
    from loopline.store import Store

    return Store.open(Settings())


def _actor(actor: str | None) -> str:
    from loopline.registry.policy import identity

    return identity(actor).actor


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=str, indent=2))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="predict or admin (repeat for both).")
    ],
    actor: Who = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from loopline.serving.api_keys import create_key, key_record

    with _key_errors(), _store().session() as session:
        created = create_key(session, name=name, scopes=scope, actor=_actor(actor))
        record = key_record(created.key)
    if as_json:
        _print_json({**record, "key": created.token})
    else:
        typer.echo(created.token)
    typer.echo(
        f"created key {record['id']} ({record['name']!r}, scopes {' '.join(record['scopes'])}); "
        "it is shown only this once",
        err=True,
    )


@keys_app.command("list")
def keys_list(
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    as_json: AsJson = False,
) -> None:
    """List keys (never their secrets), newest first."""
    from loopline.serving.api_keys import key_record, list_keys

    with _store().reader() as session:
        records = [key_record(key) for key in list_keys(session, include_revoked=revoked)]
    if as_json:
        _print_json({"keys": records})
        return
    table = Table("id", "name", "scopes", "created", "by", "last used", "revoked")
    for r in records:
        table.add_row(
            r["id"], r["name"], " ".join(r["scopes"]), _when(r["created_at"]),
            r["created_by"], _when(r["last_used_at"]), _when(r["revoked_at"]),
        )  # fmt: skip
    console.print(table)


def _when(value: Any) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (see `keys list`).")],
    actor: Who = None,
) -> None:
    """Revoke a key; a running service refuses it within `api_key_cache_s` seconds."""
    from loopline.serving.api_keys import has_active_keys, revoke_key

    with _key_errors(), _store().session() as session:
        key = revoke_key(session, key_id=key_id, actor=_actor(actor))
        left = has_active_keys(session)
    typer.echo(f"revoked key {key.id} ({key.name!r})")
    if not left:
        typer.echo(
            "warning: no active key is left: a service bound to loopback is open again unless "
            "LOOPLINE_REQUIRE_API_KEYS=true",
            err=True,
        )

"""Commands for the nodes' HTTP API: API keys and the package store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .app import JsonOption, Typer, app, print_json

apikey_app = Typer(help="Manage the API keys of the nodes' HTTP API.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
package_app = Typer(help="See what the package store holds.", no_args_is_help=True)
app.add_typer(package_app, name="package")

KeyName = Annotated[str, typer.Argument(
    metavar="NAME", help="The key's name: 1-64 of A-Z a-z 0-9 . _ -, e.g. who or what uses it.", show_default=False)]


@apikey_app.command("add")
def apikey_add(
    ctx: typer.Context,
    name: KeyName,
    role: Annotated[str, typer.Option(
        "--role", metavar="ROLE",
        help="What the key may do: viewer (read), operator (viewer + drain, undrain, cap, "
             "task add and cancel), admin (everything), packages (push and read packages).")
    ] = "viewer",
    json: JsonOption = False,
) -> None:
    """Make an API key and print it, alone on stdout. It is shown this once:
    only its hash is kept.

    Example: KEY=$(octonodes apikey add deploy-pipeline --role operator)
    """
    from ..roles import parse_role

    parse_role(role)  # a bad role fails before the database opens
    record, key = ctx.obj.cluster().add_api_key(name, role)
    if json:
        print_json({**record.to_json(), "key": key})
    else:
        print(key)
    print(f"API key {record.name} ({record.role}) created; store it now, it cannot be shown again",
          file=sys.stderr)


@apikey_app.command("list")
def apikey_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """The API keys: name, role, when created and last used, whether and when
    revoked (never the keys). The last use is noted to within a minute.

    Example: octonodes apikey list --json
    """
    cluster = ctx.obj.cluster()
    keys = cluster.api_keys()
    if json:
        print_json([k.to_json() for k in keys])
        return
    from ..render import api_keys_table, emit

    emit(api_keys_table(keys, cluster.now(), cluster.db))


@apikey_app.command("revoke")
def apikey_revoke(ctx: typer.Context, name: KeyName) -> None:
    """Revoke an API key: requests with it get 403 from now on.

    Example: octonodes apikey revoke deploy-pipeline
    """
    if ctx.obj.cluster().revoke_api_key(name):
        print(f"API key {name} is revoked")
    else:
        print(f"API key {name} is already revoked")


@package_app.command("list")
def package_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """The packages in the store: id, version, format, size, SHA-256, uploaded at.

    The store is the package_store setting, or with SQLite `<database>-packages/`
    beside the database file.

    Example: octonodes package list --json
    """
    cluster = ctx.obj.cluster()
    folder = cluster.package_folder()
    packages = folder.packages()
    if json:
        print_json([p.to_json() for p in packages])
        return
    from ..render import emit, packages_table

    emit(packages_table(packages, cluster.now(), str(folder)))

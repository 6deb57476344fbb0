"""Cluster commands: init, config, and `node run`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ..models import validate_name
from ..settings import MAX_TASK_CAP
from .app import JsonOption, Typer, app, print_json, whole_number
from .complete import setting_keys

config_app = Typer(help="Show or change the cluster settings.", invoke_without_command=True)
app.add_typer(config_app, name="config")
node_app = Typer(help="Run a node.", no_args_is_help=True)
app.add_typer(node_app, name="node")


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database, or upgrade its schema, one process at a time.

    Example: OCTONODES_DB=/var/lib/octonodes/cluster.db octonodes init
    """
    cluster = ctx.obj.cluster(create=True)
    done = cluster.initialize()
    before, after = done.before, done.after
    if before is None and not done.new_file:
        print(f"initialised a new database in the existing file {cluster.db} (schema version {after})")
    elif before is None:
        print(f"created a new database at {cluster.db} (schema version {after})")
    elif before == after:
        print(f"the database at {cluster.db} is up to date (schema version {after})")
    else:
        print(f"upgraded the database at {cluster.db} from schema version {before} to {after}")


@config_app.callback()
def config(ctx: typer.Context, json: JsonOption = False) -> None:
    """Show the cluster settings (running nodes take a change at their next check-in).

    Example: octonodes config set heartbeat_interval 5s
    """
    if ctx.invoked_subcommand:
        return
    from ..settings import SETTINGS

    cluster = ctx.obj.cluster()
    stored = cluster.stored_settings()
    rows = [(key, stored.get(key, s.default), key in stored, s.help) for key, s in SETTINGS.items()]
    if json:
        print_json({"database": cluster.db, "settings": {k: v for k, v, _, _ in rows}})
        return
    from ..render import emit, settings_table

    emit(settings_table(rows, cluster.db))


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(
        metavar="KEY", autocompletion=setting_keys,
        help="The setting's name (see `octonodes config`).", show_default=False)],
    value: Annotated[str, typer.Argument(
        metavar="VALUE", help="Its new value: a duration (90s, 5m, 1d), a size (1M) or a path.",
        show_default=False)],
) -> None:
    """Change a cluster setting.

    Example: octonodes config set offline_after 2m
    """
    from ..settings import parse_setting

    parse_setting(key, value)  # a bad value fails before the database opens
    cluster = ctx.obj.cluster()
    cluster.set_setting(key, value)
    print(f"{key} = {cluster.stored_settings()[key]}")


class LogFormat(str, Enum):
    text = "text"
    json = "json"


@node_app.command("run")
def node_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(
        "--name", metavar="NAME", help="This node's name: 1-64 of A-Z a-z 0-9 . _ -",
        show_default=False)],
    cap: Annotated[Optional[int], typer.Option(
        "--cap", metavar="CAP", parser=whole_number("task cap", 0, MAX_TASK_CAP),
        help="Set the task cap at start, 0 to 1000. [default: the stored cap, 5 for a new node]")] = None,
    listen: Annotated[Optional[str], typer.Option("--listen", metavar="HOST:PORT", help="Serve the node's HTTP API here.")] = None,
    log_format: Annotated[LogFormat, typer.Option("--log-format", metavar="text|json", help="How events are logged on stderr.")] = LogFormat.text,
) -> None:
    """Run a node: check in, claim and run tasks, until SIGTERM or SIGINT.

    The first signal stops claiming and waits for running tasks (the node shows
    Draining); a second cancels them. Creates the database if there is none.

    Example: octonodes node run --name node-1 --cap 10 --listen 0.0.0.0:8080
    """
    from ..noderun import run_node

    validate_name(name)  # a bad name fails before the database opens
    raise typer.Exit(run_node(ctx.obj.db, name=name, cap=cap, listen=listen,
                              log_format=log_format.value))

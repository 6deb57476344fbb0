"""Node commands: list, show, drain, undrain, cap, delete, check."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Optional

import typer

from ..errors import OctonodesError, TimedOut
from ..models import NodeStatus, iso
from ..settings import format_duration, parse_duration
from . import JsonOption, UnknownOnUsageError, app, enum_values, fail, print_json

NodeName = Annotated[str, typer.Argument(help="The node's name.", show_default=False)]
DEFAULT_DRAIN_TIMEOUT = "1h"
WATCH_INTERVAL = 1.0


@app.command("list")
def list_nodes(
    ctx: typer.Context,
    status: Annotated[Optional[list[str]], typer.Option(
        "--status", "-s", callback=enum_values(NodeStatus),
        help="Only nodes with this status (Running, Draining, Drained, Offline); repeatable.")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw the table every second until Ctrl-C.")] = False,
    json: JsonOption = False,
) -> None:
    """The nodes table: Name, Status, Last seen, Task cap, Tasks, Drain.

    An offline node's row says since when and whether it stopped or was lost.

    Example: octonodes list --status Offline
    """
    cluster = ctx.obj.cluster()
    if json:
        print_json([n.to_json() for n in cluster.nodes(status or ())])
        return
    from ..render import console, nodes_table

    def table():
        return nodes_table(cluster.nodes(status or ()), cluster.now(), cluster.db)

    if not watch:
        console.print(table())
        return
    from rich.live import Live

    try:
        with Live(table(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(WATCH_INTERVAL)
                live.update(table(), refresh=True)
    except KeyboardInterrupt:
        pass


@app.command()
def show(ctx: typer.Context, name: NodeName, json: JsonOption = False) -> None:
    """One node in full, with its active tasks.

    Example: octonodes show node-1
    """
    cluster = ctx.obj.cluster()
    node = cluster.node(name)
    if json:
        print_json(node.to_json())
        return
    from ..render import console, node_detail, tasks_table

    now = cluster.now()
    console.print(node_detail(node, now))
    if node.active_tasks:
        console.print(tasks_table(node.active_tasks, now, title="Active tasks"))
    else:
        console.print("No active tasks.")


@app.command()
def drain(
    ctx: typer.Context,
    name: NodeName,
    wait: Annotated[bool, typer.Option("--wait", help="Block, with a progress line, until nothing runs on the node.")] = False,
    timeout: Annotated[Optional[str], typer.Option(
        "--timeout", help="How long --wait waits (90s, 5m, 1h); implies --wait. [default: 1h]",
        show_default=False)] = None,
    cancel_tasks: Annotated[bool, typer.Option(
        "--cancel-tasks", help="At the timeout, cancel what still runs and wait for it to end; implies --wait.")] = False,
) -> None:
    """Turn drain on: the node finishes what it runs and claims nothing new.

    Exits 5 if --wait times out (the node stays drained), unless --cancel-tasks.

    Example: octonodes drain node-1 --wait --timeout 30m
    """
    seconds = parse_duration(timeout or DEFAULT_DRAIN_TIMEOUT)
    cluster = ctx.obj.cluster()
    changed = cluster.drain(name)
    if not (wait or timeout or cancel_tasks):
        node = cluster.node(name, with_tasks=False)
        if changed:
            print(f"{name} is draining ({node.tasks} task(s) running)" if node.tasks
                  else f"{name} is drained")
        else:
            print(f"{name} is already {'draining' if node.tasks else 'drained'}")
        return
    if not changed:
        print(f"{name} was already drained")
    _wait_idle(cluster, name, seconds, cancel_tasks)


def _wait_idle(cluster, name: str, seconds: float, cancel_tasks: bool) -> None:
    from ..render import err_console

    def progress(node) -> None:
        now = cluster.now()
        running = ", ".join(
            f"{t.id} {t.name} ({(now - t.started_at).total_seconds():.0f} s)"
            for t in (node.active_tasks or []) if t.started_at)
        status.update(f"{name}: waiting for {len(node.active_tasks or [])} task(s): {running}")

    def cancelled(tasks) -> None:
        status.update(f"{name}: cancelled {len(tasks)} task(s); waiting for them to end")

    with err_console.status(f"{name}: waiting for running tasks", spinner="line") as status:
        try:
            cluster.wait_idle(name, timeout=seconds, progress=progress,
                              cancel_at_timeout=cancel_tasks, cancelled=cancelled)
        except TimedOut as exc:
            raise fail(f"timed out after {format_duration(seconds)}: {exc}; "
                       f"{name} stays drained", TimedOut.exit_code) from None
    print(f"{name} is drained: no tasks running")


@app.command()
def undrain(ctx: typer.Context, name: NodeName) -> None:
    """Turn drain off: the node claims tasks again.

    Example: octonodes undrain node-1
    """
    cluster = ctx.obj.cluster()
    if cluster.undrain(name):
        print(f"{name} is no longer drained")
    else:
        print(f"{name} is already not drained")


@app.command()
def cap(
    ctx: typer.Context,
    name: NodeName,
    n: Annotated[int, typer.Argument(metavar="N", help="The new task cap, 0 to 1000.", show_default=False)],
) -> None:
    """Set a node's task cap. Lowering it stops new claims and kills nothing.

    Example: octonodes cap node-1 10
    """
    previous = ctx.obj.cluster().set_cap(name, n)
    if previous == n:
        print(f"{name} already has task cap {n}")
    else:
        print(f"{name} task cap {previous} -> {n}")


@app.command()
def delete(
    ctx: typer.Context,
    name: NodeName,
    force: Annotated[bool, typer.Option(
        "--force", help="Remove it even while online or busy; its active tasks fail as \"node deleted\".")] = False,
) -> None:
    """Remove a node. Refused (exit 4) while it is online or has active tasks.

    Example: octonodes delete node-3
    """
    failed = ctx.obj.cluster().delete(name, force=force)
    print(f"deleted {name}" + (f"; failed task(s) {', '.join(map(str, failed))}" if failed else ""))


@app.command(cls=UnknownOnUsageError)
def check(
    ctx: typer.Context,
    warn_wait: Annotated[str, typer.Option(
        "--warn-wait", help="WARNING when a task has been queued longer than this.")] = "10m",
    json: JsonOption = False,
) -> None:
    """Cluster health for cron and monitoring, with monitoring-plugin exit codes.

    0 OK; 1 WARNING (a node draining, drained or stopped; tasks queued longer
    than --warn-wait); 2 CRITICAL (a node lost; tasks queued that no online
    node can take); 3 UNKNOWN (database trouble or a usage error). The first
    line is a one-line summary.

    Example: octonodes check --warn-wait 15m
    """
    try:
        seconds = parse_duration(warn_wait)
        cluster = ctx.obj.cluster()
        result = cluster.check(warn_wait=seconds)
    except OctonodesError as exc:
        if json:
            print_json({"status": "UNKNOWN", "code": 3, "summary": f"OCTONODES UNKNOWN - {exc}",
                        "problems": [str(exc)]})
        else:
            print(f"OCTONODES UNKNOWN - {exc}")
        print(f"Error: {exc}", file=sys.stderr)
        raise typer.Exit(3) from None
    if json:
        queue = result.queue
        print_json({
            "status": result.status, "code": result.code, "summary": result.summary,
            "problems": result.problems, "database": cluster.db,
            "nodes": [n.to_json() for n in result.nodes],
            "queue": {"queued": queue.queued,
                      "oldest_queued_at": iso(queue.oldest_queued_at)},
        })
    else:
        print(result.summary)
        for problem in result.problems:
            print(f"- {problem}")
        print(f"database: {cluster.db}")
    raise typer.Exit(result.code)

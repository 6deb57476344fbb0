"""Node commands: list, show, drain, undrain, cap, delete, check."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Optional

import typer

from ..cluster import Cluster
from ..errors import TimedOut
from ..models import NodeStatus
from ..settings import MAX_TASK_CAP, format_duration, parse_duration
from .app import (INTERRUPTED, JsonOption, ReasonOption, app, checked_reason, enum_values, fail,
               print_json, whole_number)
from .complete import enum_words, node_names

NodeName = Annotated[str, typer.Argument(
    metavar="NODE", help="The node's name.", show_default=False, autocompletion=node_names)]
DEFAULT_DRAIN_TIMEOUT = "1h"
WATCH_INTERVAL = 1.0


@app.command("list")
def list_nodes(
    ctx: typer.Context,
    status: Annotated[Optional[list[str]], typer.Option(
        "--status", "-s", metavar="STATUS", callback=enum_values(NodeStatus),
        autocompletion=enum_words(NodeStatus),
        help="Only nodes with this status: Running, Draining, Drained or Offline. "
             "Repeat it or list several: -s Running,Drained")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Redraw the table every second until Ctrl-C; "
                              "through a pipe, print a full table every second.")] = False,
    json: JsonOption = False,
) -> None:
    """The nodes table: Name, Status, Last seen, Task cap, Tasks, Drain.

    An offline node's row says since when and whether it stopped or was lost.
    Under the table, the queue: tasks queued, the oldest wait, and whether it
    is paused (no online node can take tasks) or how many slots are free.

    Example: octonodes list --status Offline
    """
    cluster = ctx.obj.cluster()
    if json:
        print_json([n.to_json() for n in cluster.nodes(status or ())])
        return
    from ..render import console, emit, nodes_view

    def view():
        nodes = cluster.nodes()
        shown = [n for n in nodes if not status or n.status in status]
        return nodes_view(shown, cluster.queue(nodes), cluster.now(), cluster.db)

    if not watch:
        emit(view())
        return
    try:
        if not console.is_terminal:  # a pipe or a file: one full table per interval
            while True:
                emit(view())
                print(flush=True)
                time.sleep(WATCH_INTERVAL)
        from rich.live import Live

        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(WATCH_INTERVAL)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends


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
    from ..render import emit, node_detail, tasks_table

    now = cluster.now()
    emit(node_detail(node, now))
    if node.active_tasks:
        emit(tasks_table(node.active_tasks, now, title="Active tasks"))
    else:
        print("No active tasks.")


@app.command()
def drain(
    ctx: typer.Context,
    name: NodeName,
    wait: Annotated[bool, typer.Option("--wait", help="Block, with a progress line, until nothing runs on the node.")] = False,
    timeout: Annotated[Optional[str], typer.Option(
        "--timeout", metavar="DURATION",
        help="How long --wait waits (90s, 5m, 1h); implies --wait. [default: 1h]",
        show_default=False)] = None,
    cancel_tasks: Annotated[bool, typer.Option(
        "--cancel-tasks", help="At the timeout, cancel what still runs (a line per task on "
                               "stdout) and wait for it to end; implies --wait.")] = False,
    reason: ReasonOption = None,
) -> None:
    """Turn drain on: the node finishes what it runs and claims nothing new.

    Exits 5 if --wait times out (the node stays drained), unless --cancel-tasks.
    Ctrl-C stops waiting (exit 130); the node stays drained. The node keeps
    the reason, who drained it and since when (`show`, `list`).

    Example: octonodes drain node-1 --wait --timeout 30m --reason "kernel upgrade, CHG-1042"
    """
    seconds = parse_duration(timeout or DEFAULT_DRAIN_TIMEOUT)
    reason = checked_reason(reason)
    cluster = ctx.obj.cluster()
    if wait or timeout or cancel_tasks:
        return _drain_and_wait(cluster, name, seconds, cancel_tasks, reason)
    changed = cluster.drain(name, reason=reason)
    node = cluster.node(name, with_tasks=False)
    if changed:
        print(f"{name} is draining ({node.tasks} task(s) running)" if node.tasks
              else f"{name} is drained")
    else:
        print(f"{name} is already {'draining' if node.tasks else 'drained'}")


def _drain_and_wait(cluster, name: str, seconds: float, cancel_tasks: bool,
                    reason: str | None) -> None:
    """Drain, then wait; Ctrl-C stops the wait, not the drain, and says so.
    The progress line is up before the drain, so a Ctrl-C once the node is
    drained finds the command waiting, not loading or starting its display."""
    from ..render import err_console

    try:
        with err_console.status(f"{name}: waiting for running tasks", spinner="line") as status:
            if not cluster.drain(name, reason=reason):
                print(f"{name} was already drained")
            _wait_idle(cluster, name, seconds, cancel_tasks, reason, status)
    except KeyboardInterrupt:
        print(f"interrupted: {_drain_state(cluster, name)}", file=sys.stderr)
        raise typer.Exit(INTERRUPTED) from None
    print(f"{name} is drained: no tasks running")


def _drain_state(cluster, name: str) -> str:
    """What an interrupted drain left behind, read back (Ctrl-C may have come
    before or after the drain committed) on a connection of its own: Ctrl-C
    in the middle of a query can leave the command's connection unusable."""
    try:
        with Cluster(cluster.store.reopen()) as fresh:
            drained = fresh.node(name, with_tasks=False).drain
    except Exception:  # noqa: BLE001 - interrupted anyway: say what we can
        return f"see `octonodes show {name}` for whether {name} is drained"
    if drained:
        return f"{name} stays drained (`octonodes undrain {name}` takes it back)"
    return f"{name} was not drained"


def _wait_idle(cluster, name: str, seconds: float, cancel_tasks: bool,
               reason: str | None, status) -> None:
    def progress(node) -> None:
        now = cluster.now()
        running = ", ".join(
            f"{t.id} {t.name} ({(now - t.started_at).total_seconds():.0f} s)"
            for t in (node.active_tasks or []) if t.started_at)
        status.update(f"{name}: waiting for {len(node.active_tasks or [])} task(s): {running}")

    def cancelled(tasks) -> None:
        # A line per canceled task on stdout, so logs and scripts keep what was cut short.
        for task in tasks:
            print(f"canceled task {task.id} ({task.name})", flush=True)
        status.update(f"{name}: canceled {len(tasks)} task(s); waiting for them to end")

    try:
        cluster.wait_idle(name, timeout=seconds, progress=progress,
                          cancel_at_timeout=cancel_tasks, cancelled=cancelled,
                          reason=_timed_out_reason(name, reason))
    except TimedOut as exc:
        raise fail(f"timed out after {format_duration(seconds)}: {exc}; "
                   f"{name} stays drained", TimedOut.exit_code) from None


def _timed_out_reason(name: str, reason: str | None) -> str:
    """The reason on the events of tasks a drain cancelled at its timeout."""
    return (f"drain of {name} timed out" + (f": {reason}" if reason else ""))[:500]


@app.command()
def undrain(ctx: typer.Context, name: NodeName, reason: ReasonOption = None) -> None:
    """Turn drain off: the node claims tasks again.

    Example: octonodes undrain node-1 --reason "upgrade done"
    """
    reason = checked_reason(reason)
    cluster = ctx.obj.cluster()
    if cluster.undrain(name, reason=reason):
        print(f"{name} is no longer drained")
    else:
        print(f"{name} is already not drained")


@app.command()
def cap(
    ctx: typer.Context,
    name: NodeName,
    n: Annotated[int, typer.Argument(
        metavar="CAP", parser=whole_number("task cap", 0, MAX_TASK_CAP),
        help="The new task cap, a whole number from 0 to 1000.", show_default=False)],
    reason: ReasonOption = None,
) -> None:
    """Set a node's task cap. Lowering it stops new claims and kills nothing.

    Example: octonodes cap node-1 10 --reason "more memory"
    """
    reason = checked_reason(reason)
    previous = ctx.obj.cluster().set_cap(name, n, reason=reason)
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
    reason: ReasonOption = None,
) -> None:
    """Remove a node. Refused (exit 4) while it is online or has active tasks.

    Example: octonodes delete node-3 --reason "host retired"
    """
    reason = checked_reason(reason)
    failed = ctx.obj.cluster().delete(name, force=force, reason=reason)
    print(f"deleted {name}" + (f"; failed task(s) {', '.join(map(str, failed))}" if failed else ""))

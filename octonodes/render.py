"""The only Rich user: tables and live views. (The --json documents are
`cli.app.print_json`'s, so that --json never imports Rich.)"""

from __future__ import annotations

import io
import sys
from datetime import datetime
from typing import Iterable

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .models import Node, NodeStatus, OfflineReason, Task, TaskState
from .queue import QueueState, span

STATUS_STYLES = {
    NodeStatus.RUNNING: "green",
    NodeStatus.DRAINING: "yellow",
    NodeStatus.DRAINED: "cyan",
    NodeStatus.OFFLINE: "bold red",
}
STATE_STYLES = {
    TaskState.QUEUED: "blue",
    TaskState.EXECUTING: "green",
    TaskState.CANCELLING: "yellow",
    TaskState.SUCCESS: "green",
    TaskState.FAILED: "bold red",
    TaskState.CANCELED: "magenta",
    TaskState.TIMED_OUT: "red",
}

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


UNBOUNDED_WIDTH = 10_000
"""Wide enough for any row: through a pipe a table takes the width its content needs."""


def emit(renderable: RenderableType) -> None:
    """Print to stdout. A table's title goes on its own line, never wrapped
    (a long database URL stays whole). At a terminal Rich lays the rest out
    to fit it; through a pipe or into a file, each table is as wide as its
    content (nothing folded, a SHA-256 on one line) and no line ends in spaces."""
    parts = renderable.renderables if isinstance(renderable, Group) else [renderable]
    for part in parts:
        if isinstance(part, Table) and part.title:
            title, part.title = part.title, None
            console.print(Text(str(title), style="dim"), soft_wrap=True)
        if console.is_terminal:
            console.print(part)
            continue
        options = console.options.update_width(UNBOUNDED_WIDTH)
        width = Measurement.get(console, options, part).maximum
        fitted = Console(file=io.StringIO(), width=max(1, width), highlight=False,
                         color_system=console.color_system)
        fitted.print(part, crop=False)
        text = fitted.file.getvalue()
        sys.stdout.write("".join(line.rstrip() + "\n" for line in text.splitlines()))
        sys.stdout.flush()


def ago(now: datetime, then: datetime | None) -> str:
    """A relative time: `12 s ago`, `3 min ago`, `2 h ago`, `4 d ago`."""
    if then is None:
        return "never"
    seconds = (now - then).total_seconds()
    return "just now" if seconds < 0 else f"{span(seconds)} ago"


def status_text(node: Node, now: datetime) -> Text:
    style = STATUS_STYLES[node.status]
    if node.status is NodeStatus.OFFLINE:
        what = "stopped" if node.offline_reason is OfflineReason.STOPPED else "lost"
        return Text(f"Offline ({what} {ago(now, node.offline_since)})", style=style)
    return Text(node.status.value, style=style)


def nodes_table(nodes: Iterable[Node], now: datetime, db: str) -> Table:
    nodes = list(nodes)
    reasons = any(node.drain for node in nodes)  # a Reason column while any node is drained
    table = Table(title=f"Nodes in {db}", title_justify="left", title_style="dim")
    for column in ("Name", "Status", "Last seen", "Task cap", "Tasks", "Drain"):
        table.add_column(column, justify="right" if column in ("Task cap", "Tasks") else "left")
    if reasons:
        table.add_column("Reason", overflow="fold")
    for node in nodes:
        row = [
            Text(node.name, style="bold" if node.online else "red"),
            status_text(node, now),
            ago(now, node.last_seen),
            str(node.task_cap),
            str(node.tasks),
            Text("on", style="yellow") if node.drain else "off",
        ]
        if reasons:
            row.append(drain_reason_text(node) if node.drain else "")
        table.add_row(*row)
    return table


def nodes_view(nodes: Iterable[Node], queue: QueueState, now: datetime, db: str) -> Group:
    """The nodes table with the queue's one line under it."""
    style = "bold red" if queue.paused and queue.queued else "yellow" if queue.paused else "dim"
    return Group(nodes_table(nodes, now, db), Text(queue.describe(), style=style))


def drain_reason_text(node: Node) -> str:
    """`disk swap (alice@ops-1)`: why and by whom a drained node was drained."""
    if node.drained_by is None:
        return node.drain_reason or "-"
    return f"{node.drain_reason or 'no reason given'} ({node.drained_by})"


def _detail(rows: list[tuple[str, RenderableType]]) -> Table:
    """One thing in full: a bold label and its value a line."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table


def node_detail(node: Node, now: datetime) -> Table:
    return _detail([
        ("Name", node.name),
        ("Status", status_text(node, now)),
        ("Last seen", f"{ago(now, node.last_seen)} ({_when(node.last_seen)})"),
        ("Task cap", str(node.task_cap)),
        ("Tasks", str(node.tasks)),
        ("Drain", "on" if node.drain else "off"),
        *([("Drain reason", node.drain_reason or "-"),
           ("Drained by", node.drained_by or "-"),
           ("Drained at", f"{ago(now, node.drained_at)} ({_when(node.drained_at)})"
            if node.drained_at else "-")] if node.drain else []),
        ("Started", _when(node.started_at)),
        ("Stopped", _when(node.stopped_at) if node.stopped_at else "-"),
        ("Host", f"{node.host or '-'} (pid {node.pid or '-'})"),
        ("HTTP", node.http_address or "-"),
        ("Version", node.version or "-"),
        ("Check-in", f"every {node.heartbeat_interval:g}s" if node.heartbeat_interval else "-"),
    ])


def tasks_table(tasks: Iterable[Task], now: datetime, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style="dim")
    for column in ("Id", "Name", "State", "Node", "Queued", "Ran", "Exit"):
        table.add_column(column, justify="right" if column in ("Id", "Exit") else "left")
    for task in tasks:
        table.add_row(
            str(task.id), task.name, Text(task.state.value, style=STATE_STYLES[task.state]),
            task.node or "-", ago(now, task.queued_at), run_time(task, now),
            "-" if task.exit_code is None else str(task.exit_code),
        )
    return table


def run_time(task: Task, now: datetime) -> str:
    if task.started_at is None:
        return "-"
    end = task.finished_at or now
    return f"{max(0.0, (end - task.started_at).total_seconds()):.1f} s"


def task_detail(task: Task, now: datetime) -> Table:
    import shlex

    return _detail([
        ("Id", str(task.id)),
        ("Name", task.name),
        ("State", Text(task.state.value, style=STATE_STYLES[task.state])),
        ("Command", shlex.join(task.command)),
        ("Node", task.node or "-"),
        ("Attempt", f"{task.attempt} (retries {task.retries})"),
        ("Queued", _when(task.queued_at)),
        ("Started", _when(task.started_at)),
        ("Finished", _when(task.finished_at)),
        ("Ran", run_time(task, now)),
        ("Exit code", "-" if task.exit_code is None else str(task.exit_code)),
        ("Timeout", f"{task.timeout:g}s" if task.timeout else "-"),
        ("Error", task.error or "-"),
    ])


def settings_table(rows: list[tuple[str, str, bool, str]], db: str) -> Table:
    table = Table(title=f"Cluster settings in {db}", title_justify="left", title_style="dim")
    for column in ("Key", "Value", "Source", "Meaning"):
        table.add_column(column)
    for key, value, is_set, meaning in rows:
        table.add_row(key, value or "-", "set" if is_set else "default", meaning)
    return table


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def api_keys_table(keys: Iterable, now: datetime, db: str) -> Table:
    table = Table(title=f"API keys in {db}", title_justify="left", title_style="dim")
    for column in ("Name", "Role", "Created", "Last used", "Revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            Text(key.name, style="dim" if key.revoked else "bold"),
            str(key.role),
            f"{ago(now, key.created_at)} ({_when(key.created_at)})",
            f"{ago(now, key.last_used_at)} ({_when(key.last_used_at)})"
            if key.last_used_at else "never",
            Text(f"{ago(now, key.revoked_at)} ({_when(key.revoked_at)})", style="red")
            if key.revoked else "-",
        )
    return table


def human_size(size: int) -> str:
    """1536 -> `1.5 KiB`; bytes below 1 KiB as they are."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def packages_table(packages: Iterable, now: datetime, folder: str) -> Table:
    table = Table(title=f"Packages in {folder}", title_justify="left", title_style="dim")
    for column in ("Package", "Version", "Format", "Size", "SHA-256", "Uploaded"):
        table.add_column(column, justify="right" if column == "Size" else "left",
                         overflow="fold")  # a hash cut short is no use
    for package in packages:
        table.add_row(package.package_id, package.version, package.extension,
                      human_size(package.size), package.sha256, ago(now, package.uploaded_at))
    return table


def _details_text(details: dict) -> str:
    """`old=5 new=10`: an event's details, compact."""
    import json

    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                    for k, v in details.items())


def events_table(events: Iterable, now: datetime) -> Table:
    table = Table(title="Events, newest first (times in UTC)", title_justify="left",
                  title_style="dim")
    for column in ("Id", "Time", "Actor", "Action", "Target", "Reason", "Details"):
        table.add_column(column, justify="right" if column == "Id" else "left",
                         overflow="fold", no_wrap=column in ("Id", "Action"))
    for event in events:
        table.add_row(str(event.id), event.at.strftime("%Y-%m-%d %H:%M:%S"), event.actor,
                      Text(str(event.action), style="bold"), event.target, event.reason or "-",
                      _details_text(event.details))
    return table


def event_line(event) -> str:
    """One event on one line, for `events --follow`."""
    reason = f' reason="{event.reason}"' if event.reason else ""
    details = _details_text(event.details)
    return (f"{_when(event.at)} #{event.id} {event.action} {event.target} by {event.actor}"
            f"{reason}{' ' + details if details else ''}")

"""The cluster's health as `octonodes check` reports it: monitoring-plugin
codes and the lines behind them.

`assess` is a function of the nodes, the queue, the time and the thresholds
alone, so its rules can be tried on a table of cases; `Cluster.check` reads
those from the database and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

from .models import Node, NodeStatus, OfflineReason
from .queue import QueueState
from .settings import format_duration

DEFAULT_WARN_WAIT = 600.0
"""How long, in seconds, a task may wait in the queue before `check` warns."""


class CheckCode:
    OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
    NAMES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


@dataclass
class CheckResult:
    """What `octonodes check` reports: a monitoring-plugin code and lines."""

    code: int
    summary: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What is fine but worth saying: nodes drained with a reason (planned maintenance)."""
    nodes: list[Node] = field(default_factory=list)
    queue: QueueState | None = None

    @property
    def status(self) -> str:
        return CheckCode.NAMES[self.code]


def assess(nodes: Sequence[Node], queue: QueueState, now: datetime, *,
           warn_wait: float = DEFAULT_WARN_WAIT, warn_drained: bool = False) -> CheckResult:
    """CRITICAL for a lost node or queued tasks no node can take; WARNING for
    a node stopped, draining or drained, tasks queued longer than
    `warn_wait` seconds, or no nodes at all; else OK. A node drained with a
    reason is planned maintenance: a note, not a warning, unless
    `warn_drained`."""
    critical, warning, notes = [], [], []
    for node in nodes:
        if node.status is NodeStatus.OFFLINE:
            if node.offline_reason is OfflineReason.LOST:
                critical.append(f"{node.name} is lost (last seen {_ago(now, node.last_seen)})")
            else:
                warning.append(f"{node.name} is stopped")
        elif node.status in (NodeStatus.DRAINING, NodeStatus.DRAINED):
            said = f"{node.name} is {node.status.value.lower()}"
            if node.drain and node.drain_reason and not warn_drained:
                notes.append(f"{said} for maintenance: {node.drain_reason} "
                             f"({node.drained_by or 'unknown'}, {_ago(now, node.drained_at)})")
            else:
                warning.append(said)
    if queue.queued and queue.paused:
        critical.append(f"{queue.queued} task(s) queued and no online node can take them")
    elif queue.oldest_queued_at and now - queue.oldest_queued_at > timedelta(seconds=warn_wait):
        warning.append(f"tasks queued longer than {format_duration(warn_wait)} "
                       f"(oldest {_ago(now, queue.oldest_queued_at)})")
    if not nodes:
        warning.append("no nodes are registered")
    code = CheckCode.CRITICAL if critical else CheckCode.WARNING if warning else CheckCode.OK
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.status.value] = counts.get(node.status.value, 0) + 1
    tally = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "no nodes"
    problems = critical + warning
    head = "; ".join(problems) if problems else tally
    if notes:
        head += f"; {len(notes)} node(s) in planned maintenance"
    summary = f"OCTONODES {CheckCode.NAMES[code]} - {head} | {tally}; {queue.queued} queued"
    return CheckResult(code=code, summary=summary, problems=problems, notes=notes,
                       nodes=list(nodes), queue=queue)


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, (now - then).total_seconds())
    return f"{format_duration(round(seconds)) if seconds >= 1 else '0s'} ago"

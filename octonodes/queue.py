"""The queue at a glance, for `list`, `check` and the Python API: how many
tasks wait, for how long, and whether any node can take them at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from .models import Node, NodeStatus, iso
from .store.base import QueueSummary


@dataclass(frozen=True)
class QueueState:
    queued: int
    """Tasks waiting for a node."""
    oldest_queued_at: datetime | None
    """When the task waiting longest was queued; None with nothing queued."""
    oldest_wait: float | None
    """How long, in seconds, the task waiting longest has waited."""
    paused: bool
    """No node can claim: every node is offline, drained or capped at 0, so
    queued tasks wait until one comes back (whether or not any are queued)."""
    free_slots: int
    """Task slots free on the running nodes (cap less tasks running)."""

    def describe(self) -> str:
        """One line for people: `queue: 15 queued, oldest waiting 4 min; paused
        (no online node can take tasks)`."""
        parts = [f"{self.queued} queued" if self.queued else "empty"]
        if self.oldest_wait is not None:
            parts[0] += f", oldest waiting {span(self.oldest_wait)}"
        if self.paused:
            parts.append("paused (no online node can take tasks)")
        else:
            parts.append(f"{self.free_slots} free slot(s)")
        return "queue: " + "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "queued": self.queued,
            "oldest_queued_at": iso(self.oldest_queued_at),
            "oldest_wait_seconds": None if self.oldest_wait is None else round(self.oldest_wait, 3),
            "paused": self.paused,
            "free_slots": self.free_slots,
        }


def queue_state(summary: QueueSummary, nodes: Iterable[Node], now: datetime) -> QueueState:
    """The queue as `summary` counts it, with what `nodes` can do about it."""
    able = [n for n in nodes if n.status is NodeStatus.RUNNING and n.task_cap > 0]
    oldest = summary.oldest_queued_at if summary.queued else None
    return QueueState(
        queued=summary.queued,
        oldest_queued_at=oldest,
        oldest_wait=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        paused=not able,
        free_slots=sum(max(0, n.task_cap - n.tasks) for n in able),
    )


def span(seconds: float) -> str:
    """A rough length of time: `12 s`, `3 min`, `2 h`, `4 d`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"

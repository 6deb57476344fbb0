"""`health.assess`, the rules behind `octonodes check`, on a table of
situations: nodes, a queue and a time, no database (test_check.py runs the
same rules through a real store and the CLI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from octonodes.health import CheckCode, assess
from octonodes.models import Node, NodeStatus, OfflineReason
from octonodes.queue import QueueState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def node(name: str, status: NodeStatus, *, reason: OfflineReason | None = None,
         drain_reason: str | None = None, seen: float = 5) -> Node:
    drained = status in (NodeStatus.DRAINING, NodeStatus.DRAINED)
    return Node(name=name, status=status, last_seen=NOW - timedelta(seconds=seen), task_cap=5,
                tasks=0, drain=drained, offline_reason=reason, drain_reason=drain_reason,
                drained_by="ops" if drained else None,
                drained_at=NOW - timedelta(minutes=3) if drained else None)


def queue(queued: int = 0, *, waited: float | None = None, paused: bool = False) -> QueueState:
    oldest = NOW - timedelta(seconds=waited) if waited is not None else None
    return QueueState(queued=queued, oldest_queued_at=oldest, oldest_wait=waited, paused=paused,
                      free_slots=0 if paused else 5)


RUNNING = node("a", NodeStatus.RUNNING)
CASES = {
    "one node running": ([RUNNING], queue(), CheckCode.OK,
                         "OCTONODES OK - 1 running | 1 running; 0 queued"),
    "no nodes": ([], queue(), CheckCode.WARNING,
                 "OCTONODES WARNING - no nodes are registered | no nodes; 0 queued"),
    "a node lost": ([RUNNING, node("b", NodeStatus.OFFLINE, reason=OfflineReason.LOST, seen=90)],
                    queue(), CheckCode.CRITICAL,
                    "OCTONODES CRITICAL - b is lost (last seen 90s ago) "
                    "| 1 offline, 1 running; 0 queued"),
    "a node stopped": ([node("b", NodeStatus.OFFLINE, reason=OfflineReason.STOPPED), RUNNING],
                       queue(), CheckCode.WARNING,
                       "OCTONODES WARNING - b is stopped | 1 offline, 1 running; 0 queued"),
    "a node drained without a reason": (
        [node("b", NodeStatus.DRAINED), RUNNING], queue(), CheckCode.WARNING,
        "OCTONODES WARNING - b is drained | 1 drained, 1 running; 0 queued"),
    "a node drained for maintenance": (
        [node("b", NodeStatus.DRAINING, drain_reason="kernel"), RUNNING], queue(), CheckCode.OK,
        "OCTONODES OK - 1 draining, 1 running; 1 node(s) in planned maintenance "
        "| 1 draining, 1 running; 0 queued"),
    "queued with nowhere to run": (
        [node("b", NodeStatus.DRAINED, drain_reason="kernel")], queue(3, waited=1, paused=True),
        CheckCode.CRITICAL,
        "OCTONODES CRITICAL - 3 task(s) queued and no online node can take them; "
        "1 node(s) in planned maintenance | 1 drained; 3 queued"),
    "queued exactly as long as allowed": ([RUNNING], queue(2, waited=600), CheckCode.OK,
                                          "OCTONODES OK - 1 running | 1 running; 2 queued"),
    "queued longer than allowed": (
        [RUNNING], queue(2, waited=601), CheckCode.WARNING,
        "OCTONODES WARNING - tasks queued longer than 10m (oldest 601s ago) "
        "| 1 running; 2 queued"),
}


@pytest.mark.parametrize("nodes, state, code, summary", CASES.values(), ids=CASES.keys())
def test_assess(nodes, state, code, summary):
    result = assess(nodes, state, NOW)
    assert (result.code, result.summary) == (code, summary)
    assert result.status == CheckCode.NAMES[code]
    assert result.nodes == nodes and result.queue is state


def test_warn_drained_makes_maintenance_a_warning():
    nodes = [node("b", NodeStatus.DRAINED, drain_reason="kernel"), RUNNING]
    planned = assess(nodes, queue(), NOW)
    assert planned.notes == ["b is drained for maintenance: kernel (ops, 3m ago)"]
    assert planned.problems == []
    warned = assess(nodes, queue(), NOW, warn_drained=True)
    assert (warned.code, warned.problems, warned.notes) == (CheckCode.WARNING, ["b is drained"], [])

"""When a node checks in, and when it must fence itself: pure functions of
the time given, so that the rules read (and test) without a clock.

A node checks in every heartbeat_interval; after a failed check-in it tries
again within RETRY_INTERVAL. Its lease runs from the start of its last
successful check-in for `fence_after(...)` seconds on `boottime()`; past it,
the node (and its watchdog, on its own) kills every task and claims nothing.
"""

from __future__ import annotations

from ..settings import ClusterSettings

RETRY_INTERVAL = 1.0
"""How soon a failed check-in is tried again."""
WORKER_BUSY_TIMEOUT = 1.0
"""A node waits at most this long for a lock, so its loop keeps turning."""


def fence_after(heartbeat_interval: float, offline_after: float) -> float:
    """How long after its last check-in began a node (and its watchdog) kills
    every task: well before anyone else may call it lost (offline_after), and
    late enough that one slow or failed check-in (a lock held for
    WORKER_BUSY_TIMEOUT) does not fence a healthy node: offline_after less a
    check-in interval and the lock wait, but at least halfway between the
    interval and offline_after (which exceeds twice the interval)."""
    return max(offline_after - heartbeat_interval - WORKER_BUSY_TIMEOUT,
               (heartbeat_interval + offline_after) / 2)


def lease_deadline(begun: float, settings: ClusterSettings) -> float:
    """The lease a check-in begun at `begun` (on `boottime()`) gives: it
    runs from before the check-in, so it never outlasts the node's last_seen
    by more than the fence threshold."""
    return begun + fence_after(settings.heartbeat_interval, settings.offline_after)


def check_in_due(now: float, next_check_in: float) -> bool:
    return now >= next_check_in


def next_check_in(now: float, settings: ClusterSettings, *, ok: bool) -> float:
    """When to check in next, after a check-in at `now` that succeeded or failed."""
    if ok:
        return now + settings.heartbeat_interval
    return now + min(RETRY_INTERVAL, settings.heartbeat_interval)

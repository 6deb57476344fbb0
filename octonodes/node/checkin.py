"""A node's standing with the database: the fence, the check-in, and what
follows a check-in (reconcile, the fence's record, housekeeping).

After any gap the node kills first (`fence`), then checks in; after each
check-in it reconciles what it holds with what the database still gives it.
"""

from __future__ import annotations

import logging

from ..audit import node_actor
from ..errors import DatabaseError, DatabaseReplaced, Refused
from ..settings import format_duration
from ..task_result import KillReason
from .liveness import check_in_due, lease_deadline, next_check_in

log = logging.getLogger("octonodes.node")


class CheckIns:
    """The check-in side of a node's loop (`node` is its `Worker`): the
    lease it renews, and the fence that follows when it cannot."""

    def __init__(self, node) -> None:
        self.node = node
        self.last_ok = 0.0  # boottime() when the last successful check-in began
        self.lease_until = 0.0  # boottime() past which the node (and its watchdog) runs nothing
        self.next_at = 0.0  # monotonic time of the next check-in
        self.failing_since: float | None = None  # monotonic time the database first failed
        self.fence_note: dict | None = None  # a fence not yet in the audit trail

    def due(self, now: float) -> bool:
        return check_in_due(now, self.next_at)

    def soon(self) -> None:
        """Check in at the loop's next turn."""
        self.next_at = 0.0

    def renew(self, begun: float, now: float) -> None:
        """A check-in begun at `begun` (on `boottime()`) succeeded at `now`."""
        node = self.node
        self.last_ok = begun
        self.lease_until = lease_deadline(begun, node.settings)
        if node.watchdog:
            node.watchdog.lease(self.lease_until)
        self.next_at = next_check_in(now, node.settings, ok=True)

    def check_in(self, now: float) -> bool:
        """Check in, then reconcile, record a fence and do the cluster's
        housekeeping; True when the check-in went through. A node whose row
        was deleted or taken over kills its tasks and ends its loop."""
        node = self.node
        if node.watchdog:
            node.watchdog.check()
        begun = node.clock.boottime()
        try:
            result = node.store.check_in(node.name, node.instance_id,
                                         shutting_down=node.stop.requested,
                                         heartbeat_interval=node.settings.heartbeat_interval)
        except DatabaseReplaced as exc:
            self.trouble(now, exc, "check in")
            self.fence(node.clock.boottime(), "lost its database (the file was deleted or replaced)")
            self.next_at = next_check_in(now, node.settings, ok=False)
            return False
        except DatabaseError as exc:
            self.trouble(now, exc, "check in")
            self.next_at = next_check_in(now, node.settings, ok=False)
            return False
        if result is None:
            log.error("node %s was deleted or taken over by another process; stopping its tasks",
                      node.name)
            node.held.kill(KillReason.ORPHANED, "the node was deleted or taken over while the task ran")
            node.exit_code = Refused.exit_code
            node.done = True
            return False
        # A slow check-in may have outlived the lease: the watchdog has then
        # killed the tasks, and so must the node, before it renews the lease.
        self.fence(node.clock.boottime())
        if node.live.fenced:
            log.info("reached the database again after %.1fs; claiming again",
                     node.clock.boottime() - self.last_ok)
        elif self.failing_since is not None:
            log.info("reached the database again after %.1fs", now - self.failing_since)
        self.failing_since = None
        node.settings = result.settings
        self.renew(begun, now)
        node.set_live(result.node, now, fenced=False)
        self._reconcile(now)
        self._note_fence()
        self._reap(now)
        return True

    def fence(self, boot_now: float, why: str | None = None) -> None:
        """Kill every task and claim nothing: once the lease (`lease_until`,
        the one the watchdog holds) has run out, as the watchdog does on its
        own; or at once, `why` the database is lost."""
        node = self.node
        if node.live.fenced:
            return
        cut_off = boot_now - self.last_ok
        if why is None:
            if boot_now < self.lease_until:
                return
            log.error("no check-in for %.1fs (offline_after is %s): killing %d task(s), "
                      "claiming nothing", cut_off,
                      format_duration(node.settings.offline_after), len(node.held.runs))
            why = f"could not reach the database for {cut_off:.0f}s"
        else:
            log.error("node %s %s: killing %d task(s), claiming nothing", node.name, why,
                      len(node.held.runs))
        detail = f"node {node.name} {why}; the task was killed so it cannot run twice"
        node.held.kill(KillReason.FENCE, detail)
        self.fence_note = {"why": why, "cut_off_seconds": round(cut_off, 1),
                           "killed_tasks": sorted(node.held.runs)}
        node.set_live(fenced=True)

    def trouble(self, now: float, exc: DatabaseError, doing: str) -> None:
        """The database failed us: say so once, and fence if it is time."""
        if self.failing_since is None:
            self.failing_since = now
            log.error("cannot %s: %s; retrying", doing, exc)
        self.node.set_live()
        self.fence(self.node.clock.boottime())

    def _reconcile(self, now: float) -> None:
        node = self.node
        if node.held.empty:
            return
        try:
            owned = {(t.id, t.attempt) for t in node.store.own_active_tasks(node.name, node.instance_id)}
        except DatabaseError as exc:
            self.trouble(now, exc, "reconcile running tasks")
            return
        node.held.reconcile(owned)

    def _note_fence(self) -> None:
        """A fence is recorded once the database can be reached again."""
        if self.fence_note is None:
            return
        try:
            self.node.store.note_fenced(self.node.name, self.node.instance_id, self.fence_note)
        except DatabaseError as exc:
            log.warning("could not record the fence yet: %s", exc)
            return
        self.fence_note = None

    def _reap(self, now: float) -> None:
        try:
            reaped = self.node.store.reap(actor=node_actor(self.node.name))
        except DatabaseError as exc:
            self.trouble(now, exc, "reap")
            return
        for task_id in reaped.lost:
            log.warning("task %d failed: its node was lost", task_id)
        for task_id in reaped.requeued:
            log.warning("task %d queued again: its node was lost", task_id)
        for task_id in reaped.queue_timed_out:
            log.warning("task %d timed out in the queue", task_id)
        if reaped.pruned:
            log.info("pruned %d finished task(s) past task_retention", reaped.pruned)

"""How a node stops: signal handlers ask (`request_stop`), the loop acts.

The first request asks for a warm stop: claim nothing, let the running
tasks finish and record them. The second asks for a cold one: cancel them
(SIGTERM, SIGKILL after cancel_grace), and give up on what the database
will not take after cancel_grace and COLD_STOP_EXTRA. However the loop
ends, `close` (the loop's `finally`) marks the node stopped.
"""

from __future__ import annotations

import logging
from enum import IntEnum

from ..errors import DatabaseError, Refused
from ..task_result import KillReason

log = logging.getLogger("octonodes.node")

COLD_STOP_EXTRA = 5.0
"""After cancel_grace, how long a cold stop waits for the database before exiting."""
CLOSE_KILL_WAIT = 2.0
"""At the very end, how long a node waits for the tasks it killed to end."""
CLOSE_POLL = 0.05


class Shutdown(IntEnum):
    """Ordered: a later stop asks for more (compared as ints, at every turn)."""

    RUNNING = 0
    WARM = 1  # claim nothing; let the running tasks finish
    COLD = 2  # cancel the running tasks


class Stopping:
    """A node's stop (`node` is its `Worker`): `state` is what was asked
    for; the loop calls `begin` and `step` every turn, and `close` last."""

    def __init__(self, node) -> None:
        self.node = node
        self.state = Shutdown.RUNNING
        self._acted = Shutdown.RUNNING  # how far the loop has acted on the requests
        self._cold_deadline = 0.0  # when a cold stop gives up on the database

    def request_stop(self) -> None:
        """One more request: warm the first time, cold after. Only sets the
        state and wakes the loop, so a signal handler may call it."""
        self.state = Shutdown.WARM if self.state is Shutdown.RUNNING else Shutdown.COLD
        self.node.wake.set()

    @property
    def requested(self) -> bool:
        return self.state is not Shutdown.RUNNING

    @property
    def cold(self) -> bool:
        return self.state is Shutdown.COLD

    def _begins(self, state: Shutdown) -> bool:
        """True once: the first time the loop asks after `state` was requested."""
        if self._acted < state <= self.state:
            self._acted = state
            return True
        return False

    def begin(self) -> None:
        """At the top of a turn: on a first request, claim nothing more and
        check in at once (shutting down)."""
        if not self._begins(Shutdown.WARM):
            return
        node = self.node
        if node.held.runs:
            log.info("stop requested: claiming nothing; waiting for %d running task(s) "
                     "(signal again to cancel them)", len(node.held.runs))
        else:
            log.info("stop requested: stopping: nothing running")
        node.set_live()
        node.checkins.soon()

    def step(self, now: float) -> None:
        """At the end of a turn: cancel the tasks on a second request, give
        up once its deadline passed, and end the loop once nothing is held."""
        node = self.node
        if self.cold:
            if self._begins(Shutdown.COLD):
                log.warning("second stop request: cancelling %d running task(s)", len(node.held.runs))
                self._cold_deadline = now + node.settings.cancel_grace + COLD_STOP_EXTRA
                node.held.terminate(KillReason.SHUTDOWN, node.settings.cancel_grace)
            elif now >= self._cold_deadline:
                log.error("giving up on %d task record(s) the database did not take",
                          len(node.held.finishes))
                node.held.finishes.clear()
                node.done = True
        if self.requested and node.held.empty:
            node.done = True

    def close(self) -> None:
        """Always runs last: kill what still runs, record what we can, mark
        the node stopped, and let go of the name."""
        node, clock = self.node, self.node.clock
        node.held.kill(KillReason.SHUTDOWN)
        deadline = clock.monotonic() + CLOSE_KILL_WAIT
        while node.held.runs and clock.monotonic() < deadline:
            if node.watchdog:
                node.watchdog.send(everything=True)
            node.events.wait(CLOSE_POLL)
            node.held.escalate(clock.monotonic())
            node.held.collect(clock.monotonic())
        try:
            node.exchange.flush(clock.monotonic())
            if node.exit_code != Refused.exit_code:
                node.store.mark_stopped(node.name, node.instance_id)
            log.info("node %s stopped", node.name)
        except DatabaseError as exc:
            log.error("could not record the stop: %s", exc)
        finally:
            node.set_live(stopped=True)
            node.events.close()
            if node.watchdog:
                node.watchdog.close()
            if node.lock is not None:
                node.lock.release()

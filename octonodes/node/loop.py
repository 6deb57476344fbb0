"""The node loop: check in, claim, run, reap; `run_once(now)` is one step.

Three clocks for three jobs: monotonic time for intervals and deadlines;
`CLOCK_BOOTTIME` (`boottime()`, which counts a suspended host's sleep) for
the fence and the watchdog's lease; the store's `now()` for everything
stored. Both node clocks come from an injected `Clock`, and tasks start
through an injected `start_run` (`execute.TaskRun` by default), so a test
can drive `run_once` by hand. A node survives whatever a task does and
whatever the database does; a `finally` marks it stopped.
"""

from __future__ import annotations

import signal
import uuid
from dataclasses import replace
from typing import Callable

from ..execute import TaskRun, base_environment
from ..livestate import LiveState
from ..models import Node, Task
from ..settings import ClusterSettings
from ..store import Store
from ..task_events import TaskEvents
from ..waker import Waker
from ..watchdog import Watchdog
from .checkin import CheckIns
from .clock import SYSTEM_CLOCK, Clock
from .exchange import Exchange
from .held import Held, Run
from .registration import announce, register, take_name
from .shutdown import Stopping

IDLE_POLL = 0.025
"""Without a change notification from the store, how often a node asks the
database (cheaply) whether anything changed: often enough that a new task
starts at once, seldom enough that an idle node costs next to no CPU
(docs/performance.md has the figures)."""
NOTIFIED_POLL = 0.25
"""With change notifications (inotify on the SQLite WAL, LISTEN/NOTIFY), the
loop still turns this often, for timeouts and escalations."""


class Worker:
    """One `node run` process's work, over an open store. `start_run` is
    called like `TaskRun(task, node_name, log_limit, events, environment=,
    watchdog=)`; `start_watchdog` (None for none) like `Watchdog(node_name)`."""

    def __init__(self, store: Store, name: str, *, cap: int | None = None,
                 http_address: str | None = None, clock: Clock = SYSTEM_CLOCK,
                 start_run: Callable[..., Run] = TaskRun,
                 start_watchdog: Callable[[str], Watchdog] | None = Watchdog) -> None:
        self.store, self.name, self.clock = store, name, clock
        self.requested_cap, self.http_address = cap, http_address
        self.instance_id = uuid.uuid4().hex
        self.wake = Waker()
        self.events = TaskEvents(self.wake.fileno())
        self.environment = base_environment()
        self.watchdog: Watchdog | None = None
        self.settings = ClusterSettings()
        self.live: LiveState | None = None
        self.stop = Stopping(self)
        self.held = Held(self._start_run)
        self.checkins = CheckIns(self)
        self.exchange = Exchange(self)
        self.exit_code = 0
        self.done = False
        self.lock = None  # this host's lock on the name, once started
        self._run_factory, self._watchdog_factory = start_run, start_watchdog

    def _start_run(self, task: Task) -> Run:
        return self._run_factory(task, self.name, self.settings.task_log_limit, self.events,
                                 environment=self.environment, watchdog=self.watchdog)

    def start(self) -> None:
        """Take this host's lock for the name and register; Refused if a live
        process holds the name."""
        self.store.ignore_task_ends()  # before anything waits on the store
        self.settings = self.store.settings()
        self.lock = take_name(self.store, self.name)
        begun = self.clock.boottime()
        registered = register(self.store, self.lock, name=self.name, instance_id=self.instance_id,
                              heartbeat_interval=self.settings.heartbeat_interval,
                              cap=self.requested_cap, http_address=self.http_address)
        self.settings = registered.settings
        self.watchdog = self._watchdog_factory(self.name) if self._watchdog_factory else None
        now = self.clock.monotonic()
        self.checkins.renew(begun, now)
        self.set_live(registered.node, now)
        self.store.changed()
        announce(self.store, registered, self.instance_id)

    def set_live(self, node: Node | None = None, checked_in: float | None = None, **changes) -> None:
        """Publish a new snapshot of what the node knows of itself."""
        live = self.live
        if live is None:
            live = LiveState(name=self.name, instance_id=self.instance_id, task_cap=node.task_cap,
                             drain=node.drain, running=0,
                             heartbeat_interval=self.settings.heartbeat_interval,
                             last_check_in=checked_in, last_seen=node.last_seen)
        if node is not None:
            live = replace(live, task_cap=node.task_cap, drain=node.drain)
        if checked_in is not None:
            live = replace(live, last_check_in=checked_in, last_seen=node.last_seen if node else live.last_seen)
        self.live = replace(live, running=len(self.held.runs), running_tasks=self.held.running_tasks(),
                            heartbeat_interval=self.settings.heartbeat_interval,
                            shutting_down=self.stop.requested, **changes)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop.request_stop())

    def run(self) -> int:
        """Loop until stopped; returns the process's exit code."""
        change_fd = self.store.change_fd()
        pause = IDLE_POLL if change_fd is None else NOTIFIED_POLL
        try:
            while not self.done:
                self.run_once(self.clock.monotonic())
                if not self.done:
                    self._sleep(pause, change_fd)
        finally:
            self.stop.close()
        return self.exit_code

    def _sleep(self, pause: float, change_fd: int | None) -> None:
        """Until something happens: a task ends, a signal, a commit by
        others (unless this busy node answered one a moment ago), or a
        batch of task ends comes due."""
        now = self.clock.monotonic()
        wait = pause
        if self.exchange.throttled(now):
            wait, change_fd = min(wait, self.exchange.next_reaction - now), None
        if self.held.finishes:
            wait = min(wait, self.held.batch_due() - now)
        if self.watchdog:
            self.watchdog.send(everything=not self.held.runs)
        self.events.wait(wait, change_fd)

    def run_once(self, now: float) -> None:
        """One step at monotonic time `now`: fence if cut off, check in when
        due, end finished tasks, flush output, act on cancels and claims, and
        on a stop request."""
        self.checkins.fence(self.clock.boottime())  # after any gap (a late turn, a freeze), kill first
        self.stop.begin()
        if self.checkins.due(now):
            if self.checkins.check_in(now):
                self.exchange.look = True  # act on what it read (cap, drain) this turn
            if self.done:
                return
        self.held.collect(now)
        if self.live.running != len(self.held.runs):
            self.set_live()
        if self.exchange.flush_due(now):
            self.exchange.flush(now)
        self.exchange.watch(now)
        self.stop.step(now)

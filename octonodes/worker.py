"""The node loop: check in, claim, run, reap; `run_once()` is one step.

Three clocks for three jobs: monotonic time for intervals and deadlines;
`CLOCK_BOOTTIME` (`boottime()`, which counts a suspended host's sleep) for
the fence and the watchdog's lease; the store's `now()` for everything
stored. Signal handlers only set flags: the first asks for a warm stop
(finish running tasks, claim nothing), the second for a cold one (cancel
them). A node survives whatever a task does and whatever the database does;
a `finally` marks it stopped.

After any gap the node kills first (`_fence`), then checks in; after each
check-in it reconciles what it runs with what the database still gives it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

from . import __version__
from .audit import node_actor
from .errors import DatabaseError, DatabaseReplaced, NotFound, Refused
from .execute import TaskRun, base_environment
from .task_events import TaskEvents
from .task_result import KillReason, Outcome
from .livestate import LiveState
from .models import Node
from .waker import Waker
from .watchdog import Watchdog, boottime
from .settings import MAX_TASK_CAP, ClusterSettings, format_duration
from .store import Store
from .store.base import Finish, LogChunk, Registration

log = logging.getLogger("octonodes.node")

IDLE_POLL = 0.025
"""Without a change notification from the store, how often a node asks the
database (cheaply) whether anything changed: often enough that a new task
starts at once, seldom enough that an idle node costs next to no CPU
(docs/performance.md has the figures)."""
NOTIFIED_POLL = 0.25
"""With change notifications (inotify on the SQLite WAL, LISTEN/NOTIFY), the
loop still turns this often, for timeouts and escalations."""
LOG_FLUSH_INTERVAL = 0.5
RETRY_INTERVAL = 1.0
"""How soon a failed check-in is tried again."""
WORKER_BUSY_TIMEOUT = 1.0
"""A node waits at most this long for a lock, so its loop keeps turning."""
FINISH_BATCH_WINDOW = 0.004
"""While other tasks still run, how long a task's end may wait to be recorded
with theirs: one transaction records several ends and claims their
successors, and that transaction, not the task, is most of a node's cost."""
REACTION_INTERVAL = 0.02
"""While it runs tasks, at most this often a node looks at what others
committed (cancels, drain, cap, new tasks); its own task ends it handles at once."""
COLD_STOP_EXTRA = 5.0
"""After cancel_grace, how long a cold stop waits for the database before exiting."""
WAITING_LOG_INTERVAL = 5.0
"""While task ends cannot be recorded, how often the node says so."""


def lock_path(store: Store, name: str) -> Path:
    """The lock file a live node holds for its name on this host."""
    if store.kind == "sqlite":
        base = Path(store.display + "-locks")
    else:
        import hashlib
        import tempfile

        digest = hashlib.sha256(store.display.encode()).hexdigest()[:16]
        base = Path(tempfile.gettempdir()) / f"octonodes-{os.getuid()}" / digest
    return base / f"{name}.lock"


class Worker:
    """One `node run` process's work, over an open store."""

    def __init__(self, store: Store, name: str, *, cap: int | None = None,
                 http_address: str | None = None) -> None:
        self.store = store
        self.name = name
        self.requested_cap = cap
        self.http_address = http_address
        self.instance_id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.wake = Waker()
        self.events = TaskEvents(self.wake.fileno())
        self.environment = base_environment()
        self.watchdog: Watchdog | None = None
        self.runs: dict[int, TaskRun] = {}
        self.finishes: list[tuple[TaskRun, Outcome]] = []
        self.stop_requests = 0
        self.exit_code = 0
        self.done = False
        self.settings = ClusterSettings()
        self.live: LiveState | None = None
        self._lock = None
        self._next_check_in = 0.0
        self._next_log_flush = 0.0
        self._finishes_since = 0.0
        self._last_ok = 0.0  # boottime() when the last successful check-in began
        self._fence_note: dict | None = None  # a fence not yet in the audit trail
        self._waiting_logged = 0.0
        self._look = True
        self._cold_deadline: float | None = None
        self._failing_since: float | None = None
        self._pending_chunks: list[LogChunk] = []
        self._stop_begun = False
        self._next_reaction = 0.0
        self._claim_unsure = False  # a claim failed: it may have committed all the same

    # -- start --------------------------------------------------------------

    def start(self) -> None:
        """Take this host's lock for the name and register; Refused if a live
        process holds the name."""
        from filelock import FileLock, Timeout

        self.store.ignore_task_ends()  # before anything waits on the store
        self.settings = self.store.settings()
        path = lock_path(self.store, self.name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = FileLock(str(path))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            node = self._peek()
            holder = (f"pid {node.pid} on {node.host}, last seen {node.last_seen:%Y-%m-%d %H:%M:%S} UTC"
                      if node else "another process on this host")
            raise Refused(f"node {self.name} is held by a live process: {holder}") from None
        begun = boottime()
        try:
            registered = self.store.register(Registration(
                name=self.name, instance_id=self.instance_id, host=self.host, pid=os.getpid(),
                version=__version__, heartbeat_interval=self.settings.heartbeat_interval,
                task_cap=self.requested_cap, http_address=self.http_address, holder_gone=True))
        except BaseException:
            self._lock.release()
            raise
        self.settings = registered.settings
        self.watchdog = Watchdog(self.name)
        self._renew_lease(begun)
        now = time.monotonic()
        self._next_check_in = now + self.settings.heartbeat_interval
        self._set_live(registered.node, now)
        self.store.changed()
        if registered.took_over:
            log.warning("took over node %s from instance %s", self.name, registered.took_over)
        if registered.ended_tasks:
            log.warning("ended tasks left by the previous process: %s",
                        ", ".join(map(str, registered.ended_tasks)))
        log.info("node %s started (instance %s, pid %d, cap %d, drain %s, database %s)",
                 self.name, self.instance_id[:8], os.getpid(), registered.node.task_cap,
                 "on" if registered.node.drain else "off", self.store.display)

    def _peek(self) -> Node | None:
        try:
            return self.store.node(self.name)
        except Exception:
            return None

    def _set_live(self, node: Node | None = None, checked_in: float | None = None, **changes) -> None:
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
        running = tuple((r.task.id, r.task.name, r.task.started_at) for r in self.runs.values())
        self.live = replace(live, running=len(self.runs), running_tasks=running,
                            heartbeat_interval=self.settings.heartbeat_interval,
                            shutting_down=self.stop_requests > 0, **changes)

    # -- signals ------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requests += 1
        self.wake.set()

    # -- the loop -----------------------------------------------------------

    def run(self) -> int:
        """Loop until stopped; returns the process's exit code."""
        change_fd = self.store.change_fd()
        pause = IDLE_POLL if change_fd is None else NOTIFIED_POLL
        try:
            while not self.done:
                self.run_once()
                if not self.done:
                    self._sleep(pause, change_fd)
        finally:
            self._stop()
        return self.exit_code

    def _sleep(self, pause: float, change_fd: int | None) -> None:
        """Until something happens: a task ends, a signal, a commit by
        others (unless this busy node answered one a moment ago), or a
        batch of task ends comes due."""
        now = time.monotonic()
        wait = pause
        if self._throttled(now):
            wait, change_fd = min(wait, self._next_reaction - now), None
        if self.finishes:
            wait = min(wait, self._finishes_since + FINISH_BATCH_WINDOW - now)
        if self.watchdog:
            self.watchdog.send(everything=not self.runs)
        self.events.wait(wait, change_fd)

    def run_once(self) -> None:
        """One step: check in when due, fence if cut off, end finished tasks,
        flush output, act on cancels and claims, and handle a stop request."""
        now = time.monotonic()
        self._fence(boottime())  # after any gap (a late turn, a frozen process), kill first
        if self.stop_requests and not self._stop_begun:
            self._begin_stop()
        if now >= self._next_check_in:
            self._check_in(now)
            if self.done:
                return
        self._collect()
        if now >= self._next_log_flush or self._finishes_due(now):
            self._flush(now)
        self._watch(now)
        if self.stop_requests >= 2:
            self._cold_stop(now)
        if self.stop_requests and not self.runs and not self.finishes:
            self.done = True

    def _check_in(self, now: float) -> None:
        if self.watchdog:
            self.watchdog.check()
        begun = boottime()
        try:
            result = self.store.check_in(self.name, self.instance_id,
                                         shutting_down=self.stop_requests > 0,
                                         heartbeat_interval=self.settings.heartbeat_interval)
        except DatabaseReplaced as exc:
            self._db_trouble(now, exc, "check in")
            self._fence(boottime(), "lost its database (the file was deleted or replaced)")
            self._next_check_in = now + min(RETRY_INTERVAL, self.settings.heartbeat_interval)
            return
        except DatabaseError as exc:
            self._db_trouble(now, exc, "check in")
            self._next_check_in = now + min(RETRY_INTERVAL, self.settings.heartbeat_interval)
            return
        if result is None:
            log.error("node %s was deleted or taken over by another process; stopping its tasks",
                      self.name)
            for run in self.runs.values():
                run.kill(KillReason.ORPHANED, "the node was deleted or taken over while the task ran")
            self.exit_code = Refused.exit_code
            self.done = True
            return
        # A slow check-in may have outlived the lease: the watchdog has then
        # killed the tasks, and so must the node, before it renews the lease.
        self._fence(boottime())
        if self.live.fenced:
            log.info("reached the database again after %.1fs; claiming again",
                     boottime() - self._last_ok)
        elif self._failing_since is not None:
            log.info("reached the database again after %.1fs", now - self._failing_since)
        self._failing_since = None
        self.settings = result.settings
        self._renew_lease(begun)
        self._next_check_in = now + self.settings.heartbeat_interval
        self._set_live(result.node, now, fenced=False)
        self._look = True
        self._reconcile(now)
        self._note_fence()
        self._reap(now)

    def _renew_lease(self, begun: float) -> None:
        """The lease runs from before the check-in that renews it, so it never
        outlasts the node's last_seen by more than the fence threshold."""
        self._last_ok = begun
        if self.watchdog:
            self.watchdog.lease(begun + self._fence_after())

    def _reconcile(self, now: float) -> None:
        """Kill at once, and record nothing for, every task this process holds
        that the database no longer gives to this instance and attempt: the
        cluster ended or queued it again while this node was out of reach."""
        if not self.runs and not self.finishes:
            return
        try:
            owned = {(t.id, t.attempt) for t in self.store.own_active_tasks(self.name, self.instance_id)}
        except DatabaseError as exc:
            self._db_trouble(now, exc, "reconcile running tasks")
            return
        for task_id, run in self.runs.items():
            if (task_id, run.task.attempt) not in owned and not run.disowned:
                log.warning("task %d (attempt %d) is no longer this node's: the cluster ended it "
                            "or queued it again; killing it, recording nothing", task_id, run.task.attempt)
                run.disown()
        kept = []
        for run, outcome in self.finishes:
            if (run.task.id, run.task.attempt) in owned:
                kept.append((run, outcome))
            else:
                log.warning("task %d (attempt %d) ended %s, but the cluster had already ended it; "
                            "recording nothing", run.task.id, run.task.attempt, outcome.state.value)
        self.finishes = kept

    def _note_fence(self) -> None:
        """A fence is recorded once the database can be reached again."""
        if self._fence_note is None:
            return
        try:
            self.store.note_fenced(self.name, self.instance_id, self._fence_note)
        except DatabaseError as exc:
            log.warning("could not record the fence yet: %s", exc)
            return
        self._fence_note = None

    def _reap(self, now: float) -> None:
        try:
            reaped = self.store.reap(actor=node_actor(self.name))
        except DatabaseError as exc:
            self._db_trouble(now, exc, "reap")
            return
        for task_id in reaped.lost:
            log.warning("task %d failed: its node was lost", task_id)
        for task_id in reaped.requeued:
            log.warning("task %d queued again: its node was lost", task_id)
        for task_id in reaped.queue_timed_out:
            log.warning("task %d timed out in the queue", task_id)
        if reaped.pruned:
            log.info("pruned %d finished task(s) past task_retention", reaped.pruned)

    def _fence_after(self) -> float:
        return fence_after(self.settings.heartbeat_interval, self.settings.offline_after)

    def _fence(self, now: float, why: str | None = None) -> None:
        """Kill every task and claim nothing: once the lease (the last
        check-in plus the fence threshold, on `boottime()`) has run out, as
        the watchdog does on its own; or at once, `why` the database is lost."""
        if self.live.fenced:
            return
        if why is None:
            if now - self._last_ok < self._fence_after():
                return
            log.error("no check-in for %.1fs (offline_after is %s): killing %d task(s), "
                      "claiming nothing", now - self._last_ok,
                      format_duration(self.settings.offline_after), len(self.runs))
            why = f"could not reach the database for {now - self._last_ok:.0f}s"
        else:
            log.error("node %s %s: killing %d task(s), claiming nothing", self.name, why, len(self.runs))
        detail = f"node {self.name} {why}; the task was killed so it cannot run twice"
        for run in self.runs.values():
            run.kill(KillReason.FENCE, detail)
        self._fence_note = {"why": why, "cut_off_seconds": round(now - self._last_ok, 1),
                            "killed_tasks": sorted(self.runs)}
        self._set_live(fenced=True)

    def _collect(self) -> None:
        """Move tasks whose process has ended to the finish list."""
        for task_id, run in list(self.runs.items()):
            if run.finished() and run.disowned:
                del self.runs[task_id]
                log.info("task %d (attempt %d) ended; nothing recorded", task_id, run.task.attempt)
            elif run.finished():
                if not self.finishes:
                    self._finishes_since = time.monotonic()
                outcome = run.outcome()
                self.finishes.append((run, outcome))
                del self.runs[task_id]
                log.info("task %d ended %s%s", task_id, outcome.state.value,
                         f": {outcome.error}" if outcome.error else "")
        if self.live.running != len(self.runs):
            self._set_live()

    def _finishes_due(self, now: float) -> bool:
        """Record ends at once when nothing else runs (or when stopping);
        otherwise give the other tasks a few ms to end too."""
        if not self.finishes:
            return False
        return (not self.runs or self.stop_requests > 0
                or now - self._finishes_since >= FINISH_BATCH_WINDOW)

    def _flush(self, now: float) -> None:
        """Write gathered output and finished tasks in one transaction, and
        claim in the same one what their end made room for."""
        for run in list(self.runs.values()) + [r for r, _ in self.finishes]:
            data = run.take_output()
            if data:
                self._pending_chunks.append(LogChunk(run.task.id, run.task.attempt, data))
        finishes = [Finish(r.task.id, r.task.attempt, o.state, o.exit_code, o.error)
                    for r, o in self.finishes]
        try:
            if finishes:
                owned, claimed = self.store.exchange(self.name, self.instance_id, finishes,
                                                     self._pending_chunks, self._claim_room())
            else:
                owned, claimed = self.store.finish_tasks(self.instance_id, [], self._pending_chunks), []
        except DatabaseError as exc:
            self._db_trouble(now, exc, "record task output")
            if finishes:
                self._claim_unsure = self._look = True
                self._waiting(now, len(finishes), exc)
        else:
            for finish, still_owned in zip(finishes, owned):
                if not still_owned:
                    log.warning("task %d was already ended by the cluster; keeping its record",
                                finish.task_id)
            self._pending_chunks = []
            self.finishes = []
            self._start(claimed)
        self._next_log_flush = now + LOG_FLUSH_INTERVAL

    def _watch(self, now: float) -> None:
        """Timeouts and SIGKILL escalations; then, when the database changed,
        cancel requests, drain and cap, and claims."""
        for run in self.runs.values():
            run.escalate(now)
        if self._throttled(now):
            return
        try:
            changed = self.store.changed()
        except DatabaseError as exc:
            self._db_trouble(now, exc, "poll")
            return
        if not (changed or self._look):
            return
        self._next_reaction = now + REACTION_INTERVAL
        self._look = False
        try:
            if self._claim_unsure and not self.live.fenced and self.stop_requests < 2:
                self._adopt_unseen_claims()
            self._cancel_requested()
            if changed:
                self._set_live(self.store.node(self.name))
            self._claim()
        except DatabaseError as exc:
            self._db_trouble(now, exc, "claim")
            self._look = True
            self._claim_unsure = True
        except NotFound:
            self._next_check_in = 0.0  # our row is gone: the check-in will say so

    def _throttled(self, now: float) -> bool:
        """Others commit all the time on a busy cluster; answering each
        commit would keep a busy node from its own work, so it answers at
        most every REACTION_INTERVAL. An idle node answers at once: that is
        how a new task starts within a few ms."""
        return not self._look and bool(self.runs) and now < self._next_reaction

    def _cancel_requested(self) -> None:
        for task_id, attempt in self.store.cancel_requests(self.name, self.instance_id):
            run = self.runs.get(task_id)
            if run and run.task.attempt == attempt and run.term_sent_at is None:
                log.info("cancelling task %d (SIGTERM, SIGKILL after %s)", task_id,
                         format_duration(self.settings.cancel_grace))
                run.terminate(KillReason.CANCEL, self.settings.cancel_grace, "canceled")

    def _claim_room(self) -> int:
        """How many tasks this node may ask for now (the claim itself reads
        the cap and drain that hold in the database); 0 when it must not claim."""
        live = self.live
        if self.stop_requests or live.fenced or live.drain:
            return 0
        # The cap as last read (any commit makes the loop read it again): at
        # its cap, a node need not take the write lock to hear "no room".
        return max(0, min(live.task_cap, MAX_TASK_CAP) - len(self.runs))

    def _claim(self) -> None:
        # Tasks whose end is not recorded yet still count against the cap in
        # the database: their record (`_flush`) claims for them.
        room = 0 if self.finishes else self._claim_room()
        if room:
            self._start(self.store.claim(self.name, self.instance_id, room))

    def _start(self, tasks: list) -> None:
        if not tasks:
            return
        # One line a claim, however many tasks it took: a busy node's log
        # (and its CPU) should not be mostly claims.
        described = [f"{t.id} (attempt {t.attempt}): {t.name}" for t in tasks]
        if len(tasks) == 1:
            log.info("claimed task %s", described[0])
        else:
            log.info("claimed %d tasks: %s", len(tasks), "; ".join(described))
        if self.watchdog:
            self.watchdog.starting([task.id for task in tasks])
        for task in tasks:
            self._run(task)
        self._set_live()

    def _run(self, task) -> None:
        self.runs[task.id] = TaskRun(task, self.name, self.settings.task_log_limit, self.events,
                                     environment=self.environment, watchdog=self.watchdog)

    def _adopt_unseen_claims(self) -> None:
        """A claim can commit on the server and still fail here, when the
        connection breaks before the answer arrives; its tasks would then stay
        Executing on this live node for ever. Run what the database says this
        instance owns and the loop never started (no one else can have run it)."""
        known = set(self.runs) | {run.task.id for run, _ in self.finishes}
        for task in self.store.own_active_tasks(self.name, self.instance_id):
            if task.id not in known:
                log.warning("task %d was claimed as the connection broke; running it now "
                            "(attempt %d): %s", task.id, task.attempt, task.name)
                if self.watchdog:
                    self.watchdog.starting([task.id])
                self._run(task)
        self._claim_unsure = False
        self._set_live()

    def _db_trouble(self, now: float, exc: DatabaseError, doing: str) -> None:
        if self._failing_since is None:
            self._failing_since = now
            log.error("cannot %s: %s; retrying", doing, exc)
        self._set_live()
        self._fence(boottime())

    def _waiting(self, now: float, ends: int, exc: DatabaseError) -> None:
        """Say every few seconds what a node that cannot record its task
        ends waits for (a full disk keeps it from stopping)."""
        if now - self._waiting_logged >= WAITING_LOG_INTERVAL:
            self._waiting_logged = now
            log.warning("waiting to record %d task end(s): %s", ends, exc)

    # -- stopping -----------------------------------------------------------

    def _begin_stop(self) -> None:
        self._stop_begun = True
        if self.runs:
            log.info("stop requested: claiming nothing; waiting for %d running task(s) "
                     "(signal again to cancel them)", len(self.runs))
        else:
            log.info("stop requested: stopping: nothing running")
        self._set_live()
        self._next_check_in = 0.0

    def _cold_stop(self, now: float) -> None:
        if self._cold_deadline is None:
            log.warning("second stop request: cancelling %d running task(s)", len(self.runs))
            self._cold_deadline = now + self.settings.cancel_grace + COLD_STOP_EXTRA
            for run in self.runs.values():
                run.terminate(KillReason.SHUTDOWN, self.settings.cancel_grace)
        elif now >= self._cold_deadline:
            log.error("giving up on %d task record(s) the database did not take",
                      len(self.finishes))
            self.finishes.clear()
            self.done = True

    def _stop(self) -> None:
        """Always runs: kill what still runs, record what we can, mark stopped."""
        for run in self.runs.values():
            run.kill(KillReason.SHUTDOWN)
        deadline = time.monotonic() + 2
        while self.runs and time.monotonic() < deadline:
            if self.watchdog:
                self.watchdog.send(everything=True)
            self.events.wait(0.05)
            for run in self.runs.values():
                run.escalate(time.monotonic())
            self._collect()
        try:
            self._flush(time.monotonic())
            if self.exit_code != Refused.exit_code:
                self.store.mark_stopped(self.name, self.instance_id)
            log.info("node %s stopped", self.name)
        except DatabaseError as exc:
            log.error("could not record the stop: %s", exc)
        finally:
            self._set_live(stopped=True)
            self.events.close()
            if self.watchdog:
                self.watchdog.close()
            if self._lock is not None:
                self._lock.release()


def fence_after(heartbeat_interval: float, offline_after: float) -> float:
    """How long after its last check-in began a node (and its watchdog) kills
    every task: well before anyone else may call it lost (offline_after), and
    late enough that one slow or failed check-in (a lock held for
    WORKER_BUSY_TIMEOUT) does not fence a healthy node: offline_after less a
    check-in interval and the lock wait, but at least halfway between the
    interval and offline_after (which exceeds twice the interval)."""
    return max(offline_after - heartbeat_interval - WORKER_BUSY_TIMEOUT,
               (heartbeat_interval + offline_after) / 2)

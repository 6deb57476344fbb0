"""What a node writes and reads between check-ins: its tasks' output and
ends (recorded with the claim of their successors, in one transaction),
and, when the database changed, cancels, drain, cap and new claims.
"""

from __future__ import annotations

import logging

from ..errors import DatabaseError, NotFound
from ..settings import format_duration
from ..task_result import KillReason

log = logging.getLogger("octonodes.node")

LOG_FLUSH_INTERVAL = 0.5
REACTION_INTERVAL = 0.02
"""While it runs tasks, at most this often a node looks at what others
committed (cancels, drain, cap, new tasks); its own task ends it handles at once."""
WAITING_LOG_INTERVAL = 5.0
"""While task ends cannot be recorded, how often the node says so."""


class Exchange:
    """The recording and claiming side of a node's loop (`node` is its `Worker`)."""

    def __init__(self, node) -> None:
        self.node = node
        self.look = True  # look at the database at the next turn, changed or not
        self.next_flush = 0.0
        self.next_reaction = 0.0
        self.claim_unsure = False  # a claim failed: it may have committed all the same
        self._chunks: list = []  # output not recorded yet
        self._waiting_logged = 0.0

    def flush_due(self, now: float) -> bool:
        stopping = self.node.stop.requested
        return now >= self.next_flush or self.node.held.finishes_due(now, stopping=stopping)

    def flush(self, now: float) -> None:
        """Write gathered output and finished tasks in one transaction, and
        claim in the same one what their end made room for."""
        node, held = self.node, self.node.held
        self._chunks += held.take_output()
        finishes = held.finish_records()
        try:
            if finishes:
                owned, claimed = node.store.exchange(node.name, node.instance_id, finishes,
                                                     self._chunks, self._room())
            else:
                owned, claimed = node.store.finish_tasks(node.instance_id, [], self._chunks), []
        except DatabaseError as exc:
            node.checkins.trouble(now, exc, "record task output")
            if finishes:
                self.claim_unsure = self.look = True
                self._waiting(now, len(finishes), exc)
        else:
            for finish, still_owned in zip(finishes, owned):
                if not still_owned:
                    log.warning("task %d was already ended by the cluster; keeping its record",
                                finish.task_id)
            self._chunks = []
            held.finishes = []
            self._start(claimed)
        self.next_flush = now + LOG_FLUSH_INTERVAL

    def watch(self, now: float) -> None:
        """Timeouts and SIGKILL escalations; then, when the database changed,
        cancel requests, drain and cap, and claims."""
        node = self.node
        node.held.escalate(now)
        if self.throttled(now):
            return
        try:
            changed = node.store.changed()
        except DatabaseError as exc:
            node.checkins.trouble(now, exc, "poll")
            return
        if not (changed or self.look):
            return
        self.next_reaction = now + REACTION_INTERVAL
        self.look = False
        try:
            if self.claim_unsure and not node.live.fenced and not node.stop.cold:
                self._adopt_unseen_claims()
            self._cancel_requested()
            if changed:
                node.set_live(node.store.node(node.name))
            self._claim()
        except DatabaseError as exc:
            node.checkins.trouble(now, exc, "claim")
            self.look = True
            self.claim_unsure = True
        except NotFound:
            node.checkins.soon()  # our row is gone: the check-in will say so

    def throttled(self, now: float) -> bool:
        """Others commit all the time on a busy cluster; answering each
        commit would keep a busy node from its own work, so it answers at
        most every REACTION_INTERVAL. An idle node answers at once: that is
        how a new task starts within a few ms."""
        return not self.look and bool(self.node.held.runs) and now < self.next_reaction

    def _cancel_requested(self) -> None:
        node = self.node
        for task_id, attempt in node.store.cancel_requests(node.name, node.instance_id):
            run = node.held.runs.get(task_id)
            if run and run.task.attempt == attempt and run.term_sent_at is None:
                log.info("cancelling task %d (SIGTERM, SIGKILL after %s)", task_id,
                         format_duration(node.settings.cancel_grace))
                run.terminate(KillReason.CANCEL, node.settings.cancel_grace, "canceled")

    def _room(self) -> int:
        """How many tasks this node may ask for now (the claim itself reads
        the cap and drain that hold in the database); 0 when it must not claim."""
        live = self.node.live
        return self.node.held.room(live.task_cap,
                                   closed=self.node.stop.requested or live.fenced or live.drain)

    def _claim(self) -> None:
        # Tasks whose end is not recorded yet still count against the cap in
        # the database: their record (`flush`) claims for them.
        node = self.node
        room = 0 if node.held.finishes else self._room()
        if room:
            self._start(node.store.claim(node.name, node.instance_id, room))

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
        self._run(tasks)
        self.node.set_live()

    def _run(self, tasks: list) -> None:
        """Start `tasks`, the watchdog told of them first (one write). None
        once the lease has run out (a node frozen while its claim was on its
        way): the cluster may have given up on them since; after the next
        check-in the node runs those still its own (`_adopt_unseen_claims`)."""
        node = self.node
        node.checkins.fence(node.clock.boottime())
        if node.live.fenced:
            log.warning("the lease ran out as %d task(s) were claimed: starting them only "
                        "if they are still this node's after its next check-in", len(tasks))
            self.claim_unsure = True
            return
        if node.watchdog:
            node.watchdog.starting([task.id for task in tasks])
        node.held.start(tasks)

    def _adopt_unseen_claims(self) -> None:
        """A claim can commit on the server and still fail here, when the
        connection breaks before the answer arrives, or come back once the
        lease has run out (`_run` then starts nothing); its tasks would then
        stay Executing on this live node for ever. Run what the database says
        this instance owns and the loop never started (no one else can have
        run it)."""
        node = self.node
        known = node.held.known()
        unseen = [t for t in node.store.own_active_tasks(node.name, node.instance_id)
                  if t.id not in known]
        for task in unseen:
            log.warning("task %d was claimed but never started (the answer was lost, or came "
                        "past the lease); running it now (attempt %d): %s",
                        task.id, task.attempt, task.name)
        self.claim_unsure = False
        if unseen:
            self._run(unseen)
        node.set_live()

    def _waiting(self, now: float, ends: int, exc: DatabaseError) -> None:
        """Say every few seconds what a node that cannot record its task
        ends waits for (a full disk keeps it from stopping)."""
        if now - self._waiting_logged >= WAITING_LOG_INTERVAL:
            self._waiting_logged = now
            log.warning("waiting to record %d task end(s): %s", ends, exc)

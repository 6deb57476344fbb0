"""The tasks a node process holds: those running, and those that ended and
whose end the database has not taken yet.

No store and no clock here: the loop passes in the time and what the
database says, and records what `finish_records` and `take_output` give.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

from ..models import Task
from ..settings import MAX_TASK_CAP
from ..store.base import Finish, LogChunk
from ..task_result import KillReason, Outcome

log = logging.getLogger("octonodes.node")

FINISH_BATCH_WINDOW = 0.004
"""While other tasks still run, how long a task's end may wait to be recorded
with theirs: one transaction records several ends and claims their
successors, and that transaction, not the task, is most of a node's cost."""


class Run(Protocol):
    """What the loop uses of a task's run (`execute.TaskRun`)."""

    task: Task
    disowned: bool
    term_sent_at: float | None

    def finished(self) -> bool: ...
    def outcome(self) -> Outcome: ...
    def take_output(self) -> bytes: ...
    def kill(self, reason: KillReason, detail: str | None = None) -> None: ...
    def terminate(self, reason: KillReason, grace: float, detail: str | None = None) -> None: ...
    def escalate(self, now: float) -> None: ...
    def disown(self) -> None: ...


class Held:
    """This process's tasks: `runs` by task id, and `finishes` (a run and
    its outcome) not recorded yet, the oldest collected at `finishes_since`."""

    def __init__(self, start_run: Callable[[Task], Run]) -> None:
        self.runs: dict[int, Run] = {}
        self.finishes: list[tuple[Run, Outcome]] = []
        self.finishes_since = 0.0
        self._start_run = start_run

    @property
    def empty(self) -> bool:
        return not self.runs and not self.finishes

    def start(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.runs[task.id] = self._start_run(task)

    def known(self) -> set[int]:
        """The ids of every task held, running or ended."""
        return set(self.runs) | {run.task.id for run, _ in self.finishes}

    def running_tasks(self) -> tuple:
        """(id, name, started_at) of each running task, for the live state."""
        return tuple((r.task.id, r.task.name, r.task.started_at) for r in self.runs.values())

    def collect(self, now: float) -> None:
        """Move tasks whose process has ended to the finish list (a disowned
        one is dropped: its end is not this node's to record)."""
        for task_id, run in list(self.runs.items()):
            if run.finished() and run.disowned:
                del self.runs[task_id]
                log.info("task %d (attempt %d) ended; nothing recorded", task_id, run.task.attempt)
            elif run.finished():
                if not self.finishes:
                    self.finishes_since = now
                outcome = run.outcome()
                self.finishes.append((run, outcome))
                del self.runs[task_id]
                log.info("task %d ended %s%s", task_id, outcome.state.value,
                         f": {outcome.error}" if outcome.error else "")

    def finishes_due(self, now: float, *, stopping: bool) -> bool:
        """Record ends at once when nothing else runs (or when stopping);
        otherwise give the other tasks a few ms to end too."""
        if not self.finishes:
            return False
        return not self.runs or stopping or now - self.finishes_since >= FINISH_BATCH_WINDOW

    def batch_due(self) -> float:
        """When the ends held now are due to be recorded with others."""
        return self.finishes_since + FINISH_BATCH_WINDOW

    def room(self, cap: int, *, closed: bool) -> int:
        """How many more tasks fit under `cap` (as last read: at its cap a
        node need not take the write lock to hear "no room"); 0 when
        `closed` (stopping, fenced or drained)."""
        if closed:
            return 0
        return max(0, min(cap, MAX_TASK_CAP) - len(self.runs))

    def take_output(self) -> list[LogChunk]:
        """The output every held task gathered since the last call."""
        chunks = []
        for run in list(self.runs.values()) + [r for r, _ in self.finishes]:
            data = run.take_output()
            if data:
                chunks.append(LogChunk(run.task.id, run.task.attempt, data))
        return chunks

    def finish_records(self) -> list[Finish]:
        return [Finish(r.task.id, r.task.attempt, o.state, o.exit_code, o.error)
                for r, o in self.finishes]

    def reconcile(self, owned: set[tuple[int, int]]) -> None:
        """Kill at once, and record nothing for, every task held whose
        (id, attempt) is not in `owned`, what the database still gives this
        instance: the cluster ended it or queued it again meanwhile."""
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

    def kill(self, reason: KillReason, detail: str | None = None) -> None:
        for run in self.runs.values():
            run.kill(reason, detail)

    def terminate(self, reason: KillReason, grace: float) -> None:
        for run in self.runs.values():
            run.terminate(reason, grace)

    def escalate(self, now: float) -> None:
        """Timeouts, and SIGKILL after a SIGTERM's grace."""
        for run in self.runs.values():
            run.escalate(now)

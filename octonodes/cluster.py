"""The Python API: everything the CLI does, as methods on `Cluster`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Iterator, Sequence

from . import audit
from .cluster_access import ClusterAccess
from .cluster_packages import ClusterPackages
from .errors import TimedOut, UsageError
from .health import DEFAULT_WARN_WAIT, CheckResult, assess
from .models import (Node, NodeStatus, Task, TaskState, validate_cap, validate_command,
                     validate_name, validate_retries, validate_seconds, validate_task_id,
                     validate_text)
from .queue import QueueState, queue_state
from .settings import ClusterSettings, format_duration
from .store import Store, open_store
from .store.base import Clock, QueueSummary, TaskQuery, TaskSpec

POLL_INTERVAL = 0.05
"""How often a waiting command looks for a change it cannot be told about."""


def open(db: str | None = None, *, create: bool = False, clock: Clock | None = None) -> "Cluster":  # noqa: A001
    """Open the cluster whose database `db` names (a path, `sqlite:///…`,
    `postgresql://…`), else `OCTONODES_DB`, else the default file."""
    return Cluster(open_store(db, create=create, clock=clock))


@dataclass(frozen=True)
class Initialized:
    """What `Cluster.initialize` did: the schema version before (None for a
    new database) and after, and whether it made a new file (else it used
    an existing one, empty or not)."""

    before: int | None
    after: int
    new_file: bool = True


class Cluster(ClusterAccess, ClusterPackages):
    """A cluster's nodes, tasks and settings, through its database; its API
    keys, sessions and audit trail (`ClusterAccess`) and its package store
    (`ClusterPackages`) are methods here too.

    Every method that changes something records an event in the same
    transaction. They take keyword-only `actor` (who: by default
    `OCTONODES_ACTOR`, else `user@host`) and, where a change may be
    explained, `reason` (at most 500 characters).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def db(self) -> str:
        """Which database this is, for humans (no password)."""
        return self.store.display

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return self.store.now()

    def initialize(self) -> "Initialized":
        """Create or upgrade the schema, one process at a time."""
        before, after = self.store.initialize()
        return Initialized(before, after, new_file=self.store.created)

    # -- settings -----------------------------------------------------------

    def settings(self) -> ClusterSettings:
        return self.store.settings()

    def stored_settings(self) -> dict[str, str]:
        return self.store.stored_settings()

    def set_setting(self, key: str, value: str, *, actor: str | None = None) -> None:
        self.store.set_setting(key, value, audit.change(actor))

    # -- nodes --------------------------------------------------------------

    def nodes(self, statuses: Iterable[NodeStatus | str] = ()) -> list[Node]:
        wanted = {NodeStatus(s) for s in statuses}
        return [n for n in self.store.nodes() if not wanted or n.status in wanted]

    def node(self, name: str, *, with_tasks: bool = True) -> Node:
        return self.store.node(validate_name(name), with_tasks=with_tasks)

    def drain(self, name: str, *, actor: str | None = None, reason: str | None = None) -> bool:
        """Turn drain on; True if it was off. The node keeps the reason, the
        actor and the time until it is undrained."""
        change = audit.change(actor, reason)
        return not self.store.set_drain(validate_name(name), True, change)

    def undrain(self, name: str, *, actor: str | None = None, reason: str | None = None) -> bool:
        """Turn drain off; True if it was on."""
        change = audit.change(actor, reason)
        return self.store.set_drain(validate_name(name), False, change)

    def set_cap(self, name: str, cap: int, *, actor: str | None = None,
                reason: str | None = None) -> int:
        """Set a node's task cap; returns the previous one."""
        change = audit.change(actor, reason)
        return self.store.set_cap(validate_name(name), validate_cap(cap), change)

    def delete(self, name: str, force: bool = False, *, actor: str | None = None,
               reason: str | None = None) -> list[int]:
        """Remove a node (refused while online or busy unless `force`); returns
        the ids of the tasks `force` failed."""
        change = audit.change(actor, reason)
        return self.store.delete_node(validate_name(name), force=force, change=change)

    def wait_idle(self, name: str, timeout: float | None = None,
                  progress: Callable[[Node], None] | None = None, *,
                  cancel_at_timeout: bool = False,
                  cancelled: Callable[[list[Task]], None] | None = None,
                  actor: str | None = None, reason: str | None = None) -> Node:
        """Block until nothing runs on the node; TimedOut past `timeout`
        seconds. With `cancel_at_timeout`, past `timeout` cancel what still
        runs there instead (`cancelled` hears which tasks; `reason` goes on
        each cancel's event) and wait, without a deadline, for those tasks
        to end. `progress` hears the node at each look."""
        validate_name(name)
        try:
            return self._wait_idle(name, timeout, progress)
        except TimedOut:
            if not cancel_at_timeout:
                raise
        tasks = self.store.node(name, with_tasks=True).active_tasks or []
        for task in tasks:
            self.cancel(task.id, actor=actor, reason=reason)
        if cancelled:
            cancelled(tasks)
        return self._wait_idle(name, None, progress)

    def _wait_idle(self, name: str, timeout: float | None,
                   progress: Callable[[Node], None] | None) -> Node:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            node = self.store.node(name, with_tasks=True)
            if progress:
                progress(node)
            if not node.active_tasks:
                return node
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"{len(node.active_tasks)} task(s) still running on {name}")
            self._pause(deadline, 0.25)

    # -- tasks --------------------------------------------------------------

    def add_task(self, command: Sequence[str], *, name: str | None = None,
                 timeout: float | None = None, queue_timeout: float | None = None,
                 retries: int = 0, actor: str | None = None) -> Task:
        """Queue one task; returns it."""
        return self.add_tasks([TaskSpec(command=command, name=name, timeout=timeout,
                                        queue_timeout=queue_timeout, retries=retries)],
                              actor=actor)[0]

    def add_tasks(self, commands: Iterable[Sequence[str] | TaskSpec], *,
                  actor: str | None = None) -> list[Task]:
        """Queue many tasks in one transaction (one event for the batch);
        returned in order."""
        specs = [_checked(c if isinstance(c, TaskSpec) else TaskSpec(command=c)) for c in commands]
        return self.store.add_tasks(specs, audit.change(actor))

    def task(self, task_id: int) -> Task:
        return self.store.task(validate_task_id(task_id))

    def tasks(self, *, node: str | None = None, states: Iterable[TaskState | str] = (),
              limit: int | None = 50) -> list[Task]:
        """Tasks, newest first."""
        if limit is not None and limit < 1:
            raise UsageError(f"invalid limit {limit!r}: it must be 1 or more")
        validate_text("node", node)
        return self.store.tasks(node=node, states=[TaskState(s) for s in states], limit=limit)

    def task_page(self, query: TaskQuery = TaskQuery(), *, skip: int = 0,
                  take: int = 30) -> tuple[int, list[Task]]:
        """How many tasks `query` selects, and `take` of them after the first
        `skip`, newest first (the REST API's paged listings)."""
        if skip < 0 or take < 0:
            raise UsageError(f"invalid skip {skip!r} or take {take!r}: they must be 0 or more")
        for label, text in (("node", query.node), ("name", query.name),
                            ("partial name", query.name_contains)):
            validate_text(label, text)
        return self.store.task_page(query, skip, take)

    def cancel(self, task_id: int, *, actor: str | None = None,
               reason: str | None = None) -> tuple[Task, bool]:
        """Queued ends Canceled at once; Executing becomes Cancelling and its
        node stops it. Returns the task and whether this call changed it."""
        return self.store.cancel(validate_task_id(task_id), audit.change(actor, reason))

    def wait(self, task_id: int, timeout: float | None = None) -> Task:
        """Block until the task has ended and return it; TimedOut past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task_id = validate_task_id(task_id)
        while True:
            task = self.store.task(task_id)
            if task.ended:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"task {task_id} is still {task.state} after {format_duration(timeout)}")
            self._pause(deadline, POLL_INTERVAL)

    def log(self, task_id: int, *, follow: bool = False) -> Iterator[bytes]:
        """A task's output; with `follow`, keep yielding until the task ends."""
        self.store.task(validate_task_id(task_id))
        after = 0
        while True:
            ended = follow and self.store.task(task_id).ended
            for seq, data in self.store.read_log(task_id, after):
                after = seq
                yield data
            if not follow or ended:
                return
            self._pause(None, 0.2)

    def log_chunks(self, task_id: int, after: int = 0) -> list[tuple[int, bytes]]:
        """A task's output after chunk number `after`: (number, bytes), in order."""
        return self.store.read_log(task_id, after)

    def _pause(self, deadline: float | None, interval: float) -> None:
        """Until someone commits, `interval` passes or the deadline comes."""
        left = interval if deadline is None else min(interval, max(0.0, deadline - time.monotonic()))
        self.store.wait_for_change(left)

    def queue_summary(self) -> QueueSummary:
        return self.store.queue_summary()

    def queue(self, nodes: Iterable[Node] | None = None) -> QueueState:
        """The queue at a glance: queued, oldest wait, paused (no node can
        claim), free slots; `nodes` as just read, to save reading them again."""
        nodes = self.store.nodes() if nodes is None else nodes
        return queue_state(self.store.queue_summary(), nodes, self.store.now())

    # -- monitoring ---------------------------------------------------------

    def check(self, warn_wait: float = DEFAULT_WARN_WAIT, *,
              warn_drained: bool = False) -> CheckResult:
        """The cluster's health for cron and monitoring (`octonodes check`;
        the rules are `health.assess`'s). A node drained with a reason is
        planned maintenance: a note, not a warning, unless `warn_drained`."""
        nodes = self.store.nodes()
        return assess(nodes, self.queue(nodes), self.store.now(), warn_wait=warn_wait,
                      warn_drained=warn_drained)


def _checked(spec: TaskSpec) -> TaskSpec:
    """A task to queue, every field checked (UsageError names the first bad one)."""
    return TaskSpec(command=validate_command(spec.command),
                    name=validate_text("a task's name", spec.name),
                    timeout=validate_seconds("timeout", spec.timeout),
                    queue_timeout=validate_seconds("queue timeout", spec.queue_timeout),
                    retries=validate_retries(spec.retries))

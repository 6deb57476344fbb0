"""The storage interface: every named operation the library needs.

Nothing above this package knows which database it talks to; SQLite and
PostgreSQL each implement `Store`. Every write that concerns a task a node
runs is conditional on the node, its instance and the attempt, so a node cut
off from the cluster can never overwrite what the others decided.

What the operations take and return (`Registration`, `Finish`, `Reaped`,
...) are the dataclasses of `records`; they are imported here too, so
callers import them with the interface.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Callable, Iterable

from ..audit import Action, Change, Event, EventFilter
from ..models import Node, Task, TaskState
from ..roles import Role
from ..settings import ClusterSettings
from .records import (LAST_USE_PRECISION, ApiKey, CheckIn, Finish, LogChunk, QueueSummary,
                      Reaped, Registered, Registration, TaskQuery, TaskSpec)

__all__ = ["Store", "Clock", "CHANGE_POLL", "LAST_USE_PRECISION", "ApiKey", "CheckIn", "Finish",
           "LogChunk", "QueueSummary", "Reaped", "Registered", "Registration", "TaskQuery",
           "TaskSpec"]

Clock = Callable[[], datetime]

CHANGE_POLL = 0.05
"""How often a waiting command asks a store without notifications for changes."""


class Store(ABC):
    """A cluster's database. Open one with `octonodes.store.open_store`."""

    kind: str
    """`sqlite` or `postgresql`."""
    display: str
    """Where it is, for humans: a file path or a URL without its password."""
    created: bool = True
    """False when `init` found an existing empty file to make the database in."""

    # -- time and lifecycle -------------------------------------------------

    @abstractmethod
    def now(self) -> datetime:
        """The cluster's clock: local UTC for SQLite, the server's for PostgreSQL
        (or the clock a test injected)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def reopen(self) -> "Store":
        """A new connection to the same database with the same clock, for
        another thread (the node's HTTP handlers). Reads only what the
        constructor set, so it may be called from any thread."""

    @abstractmethod
    def changed(self) -> bool:
        """Cheap: may something a node or a waiter acts on (a task queued,
        cancelled or ended, drain, cap, a node registered or stopped, a
        setting) have changed since the last call? The store's own writes
        don't count. May say True spuriously, never False after such a change."""

    def ignore_task_ends(self) -> None:
        """Let `changed()` stay quiet when all that changed is that tasks
        ended. A node needs no wake-up for that: its own ends it knows, and
        others' make no room on it; on a busy cluster they come all the time.
        Call it before anything waits on the store (`changed`, `change_fd`,
        `wait_for_change`). A backend that cannot tell one commit from
        another (SQLite) keeps saying True."""

    def change_fd(self) -> int | None:
        """A file descriptor that becomes readable when `changed()` may say
        True (a node waits on it instead of polling), or None. The same
        descriptor for the store's life, so it can be taken once before a
        loop; `changed()` consumes what it signals and tells the truth."""
        return None

    def set_lock_wait(self, seconds: float) -> None:
        """How long a statement waits for another writer's lock before it
        fails; a node keeps this short so its loop keeps turning."""

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a commit by someone else; True
        when one came. Backends with notifications override this; the default
        asks `changed()` every CHANGE_POLL seconds."""
        deadline = time.monotonic() + timeout
        while not self.changed():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(CHANGE_POLL, left))
        return True

    # -- schema -------------------------------------------------------------

    @abstractmethod
    def schema_version(self) -> int | None:
        """The database's schema version; None when it has no schema yet."""

    @abstractmethod
    def check_schema(self) -> None:
        """SchemaMismatch unless this code can use the schema."""

    def prepare_for_node(self) -> None:
        """`node run` may give a new database its schema, but upgrades nothing."""
        if self.schema_version() is None:
            self.initialize()
        else:
            self.check_schema()

    @abstractmethod
    def initialize(self) -> tuple[int | None, int]:
        """Create or upgrade the schema, one process at a time. Returns the
        version before (None for a new database) and after."""

    # -- settings -----------------------------------------------------------

    @abstractmethod
    def settings(self) -> ClusterSettings: ...

    @abstractmethod
    def stored_settings(self) -> dict[str, str]:
        """Only the keys someone has set, as stored."""

    @abstractmethod
    def set_setting(self, key: str, value: str, change: Change | None = None) -> None:
        """Validate `value` against the other settings in one transaction and
        store it, with its event (none when the value stays the same)."""

    # -- nodes --------------------------------------------------------------

    @abstractmethod
    def nodes(self) -> list[Node]:
        """All nodes, by name, with status derived at `now()`."""

    @abstractmethod
    def node(self, name: str, *, with_tasks: bool = False) -> Node:
        """One node (NotFound if absent); `active_tasks` filled when asked."""

    @abstractmethod
    def register(self, reg: Registration) -> Registered:
        """Register or take back a name. Refused while another live instance
        holds it; a holder that is offline (or proven gone on this host) is
        taken over, and the tasks it left are ended as lost."""

    @abstractmethod
    def check_in(self, name: str, instance_id: str, *, shutting_down: bool,
                 heartbeat_interval: float) -> CheckIn | None:
        """Record that this instance is alive. None when the row was deleted or
        taken over by another instance: the caller must stop."""

    @abstractmethod
    def mark_stopped(self, name: str, instance_id: str) -> None:
        """A clean stop (recorded once, as the node's own event)."""

    @abstractmethod
    def note_fenced(self, name: str, instance_id: str, details: dict) -> None:
        """Record, once it can, that the node fenced itself while cut off."""

    # Every change below records its event in the same transaction, with
    # `change` (who and why; the default actor when None), and records none
    # when nothing changed.

    @abstractmethod
    def set_drain(self, name: str, on: bool, change: Change | None = None) -> bool:
        """Returns the previous drain flag. NotFound for an unknown node.
        Drain on keeps who turned it on, why and when; drain off clears them."""

    @abstractmethod
    def set_cap(self, name: str, cap: int, change: Change | None = None) -> int:
        """Returns the previous cap. NotFound for an unknown node."""

    @abstractmethod
    def delete_node(self, name: str, *, force: bool, change: Change | None = None) -> list[int]:
        """Remove a node; Refused while online or with active tasks unless
        `force`, which fails its active tasks as "node deleted" (their ids)."""

    # -- tasks --------------------------------------------------------------

    @abstractmethod
    def add_tasks(self, specs: Iterable[TaskSpec], change: Change | None = None) -> list[Task]:
        """Queue many tasks in one transaction, one event for the batch;
        returned in order."""

    @abstractmethod
    def task(self, task_id: int) -> Task:
        """One task (NotFound if absent)."""

    @abstractmethod
    def tasks(self, *, node: str | None = None, states: Iterable[TaskState] = (),
              limit: int | None = 50) -> list[Task]:
        """Newest first."""

    @abstractmethod
    def task_page(self, query: TaskQuery, offset: int, limit: int) -> tuple[int, list[Task]]:
        """How many tasks `query` selects, and `limit` of them from `offset`,
        newest first."""

    @abstractmethod
    def cancel(self, task_id: int, change: Change | None = None) -> tuple[Task, bool]:
        """Queued -> Canceled; Executing -> Cancelling. Returns the task after
        and whether this call changed it (False for an already ended or
        cancelling task)."""

    @abstractmethod
    def claim(self, name: str, instance_id: str, limit: int) -> list[Task]:
        """Claim up to `limit` queued tasks, oldest first, for this instance,
        reading drain, cap and liveness inside the same transaction."""

    @abstractmethod
    def cancel_requests(self, name: str, instance_id: str) -> list[tuple[int, int]]:
        """(task id, attempt) of this instance's tasks in Cancelling."""

    @abstractmethod
    def append_logs(self, instance_id: str, chunks: Iterable[LogChunk]) -> None:
        """Append output in one transaction; chunks for an attempt this
        instance no longer owns are dropped."""

    @abstractmethod
    def finish_task(self, task_id: int, instance_id: str, attempt: int, state: TaskState,
                    *, exit_code: int | None = None, error: str | None = None) -> bool:
        """End a task this instance runs. False when it no longer owns it."""

    def finish_tasks(self, instance_id: str, finishes: list[Finish],
                     chunks: Iterable[LogChunk] = ()) -> list[bool]:
        """Append output, then end tasks this instance runs, in as few
        transactions as the backend can; whether each was still owned."""
        self.append_logs(instance_id, chunks)
        return [self.finish_task(f.task_id, instance_id, f.attempt, f.state,
                                 exit_code=f.exit_code, error=f.error) for f in finishes]

    def exchange(self, name: str, instance_id: str, finishes: list[Finish],
                 chunks: Iterable[LogChunk], claim_limit: int) -> tuple[list[bool], list[Task]]:
        """What a busy node does most: record what ended and claim what its
        cap now has room for (as `claim`), in one transaction where the
        backend can. Returns (whether each finish was still owned, claimed)."""
        owned = self.finish_tasks(instance_id, finishes, chunks)
        return owned, self.claim(name, instance_id, claim_limit) if claim_limit > 0 else []

    @abstractmethod
    def own_active_tasks(self, name: str, instance_id: str) -> list[Task]:
        """This instance's tasks still Executing or Cancelling in the database."""

    @abstractmethod
    def read_log(self, task_id: int, after: int = 0) -> list[tuple[int, bytes]]:
        """(sequence, bytes) chunks after sequence `after`, in order."""

    @abstractmethod
    def reap(self, actor: str | None = None) -> Reaped:
        """Housekeeping any node does: end lost nodes' tasks (or requeue those
        with retries left), time out tasks waiting too long, prune old ones,
        record nodes found lost (`actor`: the node that found them), and
        prune events past `event_retention`."""

    @abstractmethod
    def queue_summary(self) -> QueueSummary: ...

    # -- API keys (schema version 2) ------------------------------------------

    @abstractmethod
    def add_api_key(self, name: str, key_hash: str, role: Role = Role.VIEWER,
                    change: Change | None = None) -> ApiKey:
        """Store a new key's hash under `name`; Refused if the name is taken
        (revoked keys keep their names)."""

    @abstractmethod
    def api_keys(self) -> list[ApiKey]:
        """All keys, revoked ones too, by name."""

    @abstractmethod
    def revoke_api_key(self, name: str, change: Change | None = None) -> bool:
        """Revoke a key; True if this call revoked it, False if it already was.
        NotFound for an unknown name."""

    @abstractmethod
    def api_key_by_hash(self, *key_hashes: str) -> ApiKey | None:
        """The key whose hash is one of these, revoked or not; None if none."""

    @abstractmethod
    def note_api_key_use(self, name: str, precision: float) -> None:
        """Set the key's last use to now, unless it is already within `precision` seconds."""

    # -- the audit trail (schema version 3 on SQLite, 5 on PostgreSQL) ------------

    @abstractmethod
    def events(self, where: EventFilter) -> list[Event]:
        """Events that match, newest first."""

    @abstractmethod
    def count_events(self, where: EventFilter) -> int:
        """How many events match, without `where`'s limit and offset (for a
        task, a batch whose ids skip it counts too)."""

    @abstractmethod
    def record(self, change: Change, action: Action, target: str, *,
               during: Callable[[], None] | None = None, **fields) -> None:
        """Record an event for a change made outside the database (a package
        pushed or deleted): `during()` makes it inside the event's
        transaction, and if it raises the event is rolled back."""

    # -- web sessions (schema version 4 on SQLite, 6 on PostgreSQL) ------------

    @abstractmethod
    def web_secret(self) -> str:
        """The cluster's key for signing session cookies, made on first use."""

    @abstractmethod
    def add_web_session(self, token_hash: str, key_name: str, idle_limit: float) -> None:
        """Record a new session of the key `key_name` (dropping ended ones
        and those idle longer than `idle_limit` seconds)."""

    @abstractmethod
    def web_session(self, token_hash: str, idle_limit: float,
                    touch_after: float | None) -> ApiKey | None:
        """The key of a session not ended, used within `idle_limit` seconds,
        whose key is not revoked; else None. Marks it used now when it was
        last marked more than `touch_after` seconds ago (None: never)."""

    @abstractmethod
    def end_web_session(self, token_hash: str) -> bool:
        """End a session; True if it was open."""

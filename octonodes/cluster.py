"""The Python API: everything the CLI does, as methods on `Cluster`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator, Sequence

from . import audit
from .audit import Action, Event, EventFilter
from .errors import DatabaseError, NotFound, TimedOut, UsageError
from .models import (Node, NodeStatus, OfflineReason, Task, TaskState, validate_cap,
                     validate_name)
from .roles import Role, parse_role
from .settings import MAX_RETRIES, MAX_TASK_ID, ClusterSettings, format_duration
from .store import Store, open_store
from .store.base import LAST_USE_PRECISION, ApiKey, Clock, QueueSummary, TaskQuery, TaskSpec

if TYPE_CHECKING:
    from .packages import Package, PackageFolder, PackageName
    from .queue import QueueState
    from .sessions import Sessions

FOLLOW_LOOK_BACK = 1000
"""Event ids `follow_events` reads again (see there)."""
POLL_INTERVAL = 0.05
"""How often a waiting command looks for a change it cannot be told about."""
MAX_TASK_SECONDS = 10 * 365 * 86400
"""The longest timeout or queue timeout a task may have (ten years)."""


def open(db: str | None = None, *, create: bool = False, clock: Clock | None = None) -> "Cluster":  # noqa: A001
    """Open the cluster whose database `db` names (a path, `sqlite:///…`,
    `postgresql://…`), else `OCTONODES_DB`, else the default file."""
    return Cluster(open_store(db, create=create, clock=clock))


class CheckCode:
    OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
    NAMES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


@dataclass
class CheckResult:
    """What `octonodes check` reports: a monitoring-plugin code and lines."""

    code: int
    summary: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What is fine but worth saying: nodes drained with a reason (planned maintenance)."""
    nodes: list[Node] = field(default_factory=list)
    queue: "QueueState | None" = None

    @property
    def status(self) -> str:
        return CheckCode.NAMES[self.code]


def _validate_command(command: Sequence[str]) -> list[str]:
    if isinstance(command, str) or not command or not all(isinstance(a, str) for a in command):
        raise UsageError("a task's command is a non-empty list of strings (program and arguments)")
    for arg in command:
        _validate_text("a task's command", arg)
    return list(command)


def _validate_text(label: str, text: str | None) -> str | None:
    """Text a database can keep and a program can be given: no NUL, and
    valid Unicode (no lone surrogates, which JSON can spell)."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{label} is not valid Unicode text") from None
        if "\0" in text:
            raise UsageError(f"{label} cannot contain a NUL character")
    return text


def _validate_seconds(label: str, value: float | None) -> float | None:
    if value is not None and not 0 < value <= MAX_TASK_SECONDS:
        raise UsageError(f"invalid {label} {value!r}: it must be more than zero seconds "
                         f"and at most {MAX_TASK_SECONDS} (ten years)")
    return value


@dataclass(frozen=True)
class Initialized:
    """What `Cluster.initialize` did: the schema version before (None for a
    new database) and after, and whether it made a new file (else it used
    an existing one, empty or not)."""

    before: int | None
    after: int
    new_file: bool = True


class Cluster:
    """A cluster's nodes, tasks and settings, through its database.

    Every method that changes something records an event in the same
    transaction. They take keyword-only `actor` (who: by default
    `OCTONODES_ACTOR`, else `user@host`) and, where a change may be
    explained, `reason` (at most 500 characters).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._sessions: "Sessions | None" = None

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
        return self.add_tasks([TaskSpec(
            command=_validate_command(command), name=_validate_text("a task's name", name),
            timeout=_validate_seconds("timeout", timeout),
            queue_timeout=_validate_seconds("queue timeout", queue_timeout),
            retries=self._retries(retries))], actor=actor)[0]

    @staticmethod
    def _retries(retries: int) -> int:
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
            raise UsageError(f"invalid retries {retries!r}: it must be a whole number "
                             f"from 0 to {MAX_RETRIES}")
        return retries

    def add_tasks(self, commands: Iterable[Sequence[str] | TaskSpec], *,
                  actor: str | None = None) -> list[Task]:
        """Queue many tasks in one transaction (one event for the batch);
        returned in order."""
        specs = [c if isinstance(c, TaskSpec) else TaskSpec(command=_validate_command(c))
                 for c in commands]
        for spec in specs:
            self._retries(spec.retries)
        return self.store.add_tasks(specs, audit.change(actor))

    def task(self, task_id: int) -> Task:
        return self.store.task(_task_id(task_id))

    def tasks(self, *, node: str | None = None, states: Iterable[TaskState | str] = (),
              limit: int | None = 50) -> list[Task]:
        """Tasks, newest first."""
        if limit is not None and limit < 1:
            raise UsageError(f"invalid limit {limit!r}: it must be 1 or more")
        return self.store.tasks(node=node, states=[TaskState(s) for s in states], limit=limit)

    def task_page(self, query: TaskQuery = TaskQuery(), *, skip: int = 0,
                  take: int = 30) -> tuple[int, list[Task]]:
        """How many tasks `query` selects, and `take` of them after the first
        `skip`, newest first (the REST API's paged listings)."""
        if skip < 0 or take < 0:
            raise UsageError(f"invalid skip {skip!r} or take {take!r}: they must be 0 or more")
        for label, text in (("node", query.node), ("name", query.name),
                            ("partial name", query.name_contains)):
            _validate_text(label, text)
        return self.store.task_page(query, skip, take) if take else \
            (self.store.task_page(query, 0, 0)[0], [])

    def cancel(self, task_id: int, *, actor: str | None = None,
               reason: str | None = None) -> tuple[Task, bool]:
        """Queued ends Canceled at once; Executing becomes Cancelling and its
        node stops it. Returns the task and whether this call changed it."""
        return self.store.cancel(_task_id(task_id), audit.change(actor, reason))

    def wait(self, task_id: int, timeout: float | None = None) -> Task:
        """Block until the task has ended and return it; TimedOut past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task_id = _task_id(task_id)
        while True:
            task = self.store.task(task_id)
            if task.ended:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"task {task_id} is still {task.state} after {format_duration(timeout)}")
            self._pause(deadline, POLL_INTERVAL)

    def log(self, task_id: int, *, follow: bool = False) -> Iterator[bytes]:
        """A task's output; with `follow`, keep yielding until the task ends."""
        self.store.task(_task_id(task_id))
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

    def queue(self, nodes: Iterable[Node] | None = None) -> "QueueState":
        """The queue at a glance: queued, oldest wait, paused (no node can
        claim), free slots; `nodes` as just read, to save reading them again."""
        from .queue import queue_state

        nodes = self.store.nodes() if nodes is None else nodes
        return queue_state(self.store.queue_summary(), nodes, self.store.now())

    # -- API keys and packages (the nodes' HTTP API) ------------------------

    def add_api_key(self, name: str, role: Role | str = Role.VIEWER, *,
                    actor: str | None = None) -> tuple[ApiKey, str]:
        """Make a new API key with `role`; returns its record and the key
        itself, which is never stored (only its hash) and cannot be shown again."""
        from .apikeys import generate_key, hash_key, validate_key_name

        name, role = validate_key_name(name), parse_role(role)
        change = audit.change(actor)
        key = generate_key()
        return self.store.add_api_key(name, hash_key(key), role, change), key

    def api_keys(self) -> list[ApiKey]:
        """Every key's record (name, role, created, last used, revoked), revoked ones too."""
        return self.store.api_keys()

    def revoke_api_key(self, name: str, *, actor: str | None = None) -> bool:
        """Revoke a key at once; True if it was active. NotFound for an unknown name."""
        from .apikeys import validate_key_name

        return self.store.revoke_api_key(validate_key_name(name), audit.change(actor))

    def verify_api_key(self, key: str) -> ApiKey | None:
        """The record (name, role) of an active key; None for a malformed,
        unknown or revoked one. Looked up at every call, so a revocation
        holds from its commit. Notes the key's last use (once a minute)."""
        from .apikeys import hash_key, legacy_hash, well_formed

        if not well_formed(key):
            return None
        found = self.store.api_key_by_hash(hash_key(key), legacy_hash(key))
        if found is None or found.revoked:
            return None
        now = self.store.now()
        if found.last_used_at is None or \
                (now - found.last_used_at).total_seconds() >= LAST_USE_PRECISION:
            try:
                self.store.note_api_key_use(found.name, LAST_USE_PRECISION)
            except DatabaseError:
                pass  # a busy database must not refuse the request: the note is a courtesy
        return found

    # -- the audit trail --------------------------------------------------------

    def events(self, *, node: str | None = None, task: int | None = None,
               actions: Iterable[Action | str] = (), actor: str | None = None,
               since: datetime | float | None = None, after_id: int | None = None,
               limit: int | None = 50) -> list[Event]:
        """Audit events, newest first. `since` is a time, or seconds before now;
        `actor` matches any part of the actor, ignoring case."""
        if limit is not None and limit < 1:
            raise UsageError(f"invalid limit {limit!r}: it must be 1 or more")
        if isinstance(since, (int, float)):
            since = self.store.now() - timedelta(seconds=_validate_seconds("since", since))
        where = EventFilter(
            node=validate_name(node) if node is not None else None, task=task,
            actions=tuple(audit.parse_action(a) for a in actions), actor=actor or None,
            since=since, after_id=after_id, limit=limit)
        return self.store.events(where)

    def event_page(self, *, node: str | None = None, task: int | None = None,
                   actor: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, skip: int = 0,
                   take: int = 30) -> tuple[int, list[Event]]:
        """How many events match, and `take` of them after the first `skip`,
        newest first (the REST API's paged listing)."""
        if skip < 0 or take < 0:
            raise UsageError(f"invalid skip {skip!r} or take {take!r}: they must be 0 or more")
        _validate_text("actor", actor)
        where = EventFilter(node=validate_name(node) if node is not None else None, task=task,
                            actor=actor or None, since=since, until=until, limit=take,
                            offset=skip)
        if task is not None:  # a batch's ids may skip the task: only reading them tells
            every = self.store.events(replace(where, limit=None, offset=0))
            return len(every), every[skip:skip + take]
        return self.store.count_events(where), self.store.events(where) if take else []

    def event(self, event_id: int) -> Event:
        """One event; NotFound if there is none with that id (or it aged out)."""
        found = self.store.events(EventFilter(after_id=event_id - 1, before_id=event_id + 1,
                                              limit=1))
        if not found:
            raise NotFound(f"no event with id {event_id}")
        return found[0]

    def newest_event_id(self) -> int:
        """The id of the newest event (0 when none): where following starts."""
        newest = self.store.events(EventFilter(limit=1))
        return newest[0].id if newest else 0

    def follow_events(self, after_id: int, *, poll: float = 1.0, **filters) -> Iterator[Event]:
        """The events after `after_id` that match, oldest first, as they are
        recorded, forever: woken by each commit, as `log(follow=True)` is.
        Looks back FOLLOW_LOOK_BACK ids each time, because on PostgreSQL a
        transaction may commit after another that took a later id."""
        seen: set[int] = set()
        last = after_id
        while True:
            fresh = self.events(**filters, after_id=max(after_id, last - FOLLOW_LOOK_BACK),
                                limit=None)
            for event in reversed(fresh):
                if event.id not in seen:
                    seen.add(event.id)
                    last = max(last, event.id)
                    yield event
            seen = {i for i in seen if i > last - FOLLOW_LOOK_BACK}
            self._pause(None, poll)

    def sessions(self) -> "Sessions":
        """The web page's sessions (sign-in, checks, sign-out)."""
        from .sessions import Sessions

        if self._sessions is None:
            self._sessions = Sessions(self.store)
        return self._sessions

    def package_folder(self) -> "PackageFolder":
        """The shared package store (the `package_store` setting, or beside
        the SQLite file); PackageStoreUnavailable when there is none."""
        from .packages import PackageFolder, folder_for

        return PackageFolder(folder_for(self.store.kind, self.store.display,
                                        self.settings().package_store))

    def packages(self) -> list["Package"]:
        """What the package store holds, by file name."""
        return self.package_folder().packages()

    def delete_package(self, file_name: str, *, actor: str | None = None,
                       reason: str | None = None) -> "Package":
        """Remove a package from the store (NotFound if absent), recorded in
        the audit trail in the transaction that removes it; returns it."""
        from .packages import parse_file_name

        folder = self.package_folder()
        name = parse_file_name(file_name)
        found = folder.find(name)
        if found is None:
            raise NotFound(f"no package {file_name!r} in the store")
        self.record(Action.PACKAGE_DELETE, name.file_name, actor=actor, reason=reason,
                    during=lambda: folder.delete(name),
                    details={"package_id": found.package_id, "version": found.version,
                             "size": found.size, "sha256": found.sha256})
        return found

    def record(self, action: Action | str, target: str, *, actor: str | None = None,
               reason: str | None = None, details: dict | None = None,
               during: Callable[[], None] | None = None) -> None:
        """Record a change made outside the database (the package store):
        `during()` makes it inside the event's transaction; if it raises,
        the event is not recorded."""
        self.store.record(audit.change(actor, reason), audit.parse_action(str(action)), target,
                          details=details, during=during)

    def package_page(self, contains: str = "", *, skip: int = 0,
                     take: int = 30) -> tuple[int, list["Package"]]:
        """How many packages have `contains` in their id (case-insensitive),
        and `take` of them after the first `skip`, by file name; only the
        page's files are looked at beyond the folder's listing."""
        folder = self.package_folder()
        names = folder.names(contains)
        page = [folder.find(name) for name in names[skip:skip + take]]
        return len(names), [p for p in page if p is not None]

    def package(self, key: str) -> "Package":
        """One stored package, by `<PackageId>.<Version>` (`Acme.Web.1.2.3`);
        NotFound if the store has none."""
        folder = self.package_folder()
        found = folder.find(folder.named(key))
        if found is None:
            raise NotFound(f"no package {key} in the package store")
        return found

    def open_package(self, key: str) -> tuple["PackageName", BinaryIO]:
        """A stored package's name and its file, open for reading."""
        folder = self.package_folder()
        name = folder.named(key)
        return name, folder.open(name)

    # -- monitoring ---------------------------------------------------------

    def check(self, warn_wait: float = 600.0, *, warn_drained: bool = False) -> CheckResult:
        """The cluster's health for cron and monitoring (`octonodes check`). A
        node drained with a reason is planned maintenance: a note, not a
        warning, unless `warn_drained`."""
        nodes = self.store.nodes()
        queue = self.queue(nodes)
        now = self.store.now()
        critical, warning, notes = [], [], []
        for node in nodes:
            if node.status is NodeStatus.OFFLINE:
                if node.offline_reason is OfflineReason.LOST:
                    critical.append(f"{node.name} is lost (last seen {_ago(now, node.last_seen)})")
                else:
                    warning.append(f"{node.name} is stopped")
            elif node.status in (NodeStatus.DRAINING, NodeStatus.DRAINED):
                said = f"{node.name} is {node.status.value.lower()}"
                if node.drain and node.drain_reason and not warn_drained:
                    notes.append(f"{said} for maintenance: {node.drain_reason} "
                                 f"({node.drained_by or 'unknown'}, {_ago(now, node.drained_at)})")
                else:
                    warning.append(said)
        if queue.queued and queue.paused:
            critical.append(f"{queue.queued} task(s) queued and no online node can take them")
        elif queue.oldest_queued_at and now - queue.oldest_queued_at > timedelta(seconds=warn_wait):
            warning.append(f"tasks queued longer than {format_duration(warn_wait)} "
                           f"(oldest {_ago(now, queue.oldest_queued_at)})")
        if not nodes:
            warning.append("no nodes are registered")
        code = CheckCode.CRITICAL if critical else CheckCode.WARNING if warning else CheckCode.OK
        counts: dict[str, int] = {}
        for node in nodes:
            counts[node.status.value] = counts.get(node.status.value, 0) + 1
        tally = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "no nodes"
        problems = critical + warning
        head = "; ".join(problems) if problems else tally
        if notes:
            head += f"; {len(notes)} node(s) in planned maintenance"
        summary = f"OCTONODES {CheckCode.NAMES[code]} - {head} | {tally}; {queue.queued} queued"
        return CheckResult(code=code, summary=summary, problems=problems, notes=notes,
                           nodes=nodes, queue=queue)


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, (now - then).total_seconds())
    return f"{format_duration(round(seconds)) if seconds >= 1 else '0s'} ago"


def _task_id(task_id: int) -> int:
    """A task id the database could hold; NotFound for one it cannot."""
    if isinstance(task_id, int) and not 0 < task_id <= MAX_TASK_ID:
        raise NotFound(f"no task with id {task_id}")
    return task_id

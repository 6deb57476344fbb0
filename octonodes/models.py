"""Nodes and tasks as the library hands them out, and how a status is derived.

A node's status is never stored: it follows from its last check-in, its drain
flag, whether it is shutting down and how many tasks it runs, read at one
instant of the store's clock.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Sequence

from .errors import NotFound, UsageError
from .settings import MAX_RETRIES, MAX_TASK_CAP, MAX_TASK_ID, MAX_TASK_SECONDS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class NodeStatus(StrEnum):
    RUNNING = "Running"
    DRAINING = "Draining"
    DRAINED = "Drained"
    OFFLINE = "Offline"


class OfflineReason(StrEnum):
    STOPPED = "stopped"
    LOST = "lost"


class TaskState(StrEnum):
    QUEUED = "Queued"
    EXECUTING = "Executing"
    CANCELLING = "Cancelling"
    SUCCESS = "Success"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TIMED_OUT = "TimedOut"

    @property
    def active(self) -> bool:
        """Claimed by a node and not yet ended."""
        return self in ACTIVE_STATES

    @property
    def ended(self) -> bool:
        return self in ENDED_STATES


ACTIVE_STATES = frozenset({TaskState.EXECUTING, TaskState.CANCELLING})
ENDED_STATES = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELED, TaskState.TIMED_OUT}
)


def validate_name(name: str, what: str = "node") -> str:
    """A node's (or an API key's, ...) name: 1-64 of `A-Z a-z 0-9 . _ -`,
    starting with a letter or digit."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_cap(cap: int) -> int:
    if not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= MAX_TASK_CAP:
        raise UsageError(f"invalid task cap {cap!r}: it must be an integer from 0 to {MAX_TASK_CAP}")
    return cap


def validate_command(command: Sequence[str]) -> list[str]:
    """A task's command: a non-empty list of text arguments."""
    if isinstance(command, str) or not command or not all(isinstance(a, str) for a in command):
        raise UsageError("a task's command is a non-empty list of strings (program and arguments)")
    for arg in command:
        validate_text("a task's command", arg)
    return list(command)


def validate_text(label: str, text: str | None) -> str | None:
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


def validate_seconds(label: str, value: float | None) -> float | None:
    """A task's timeout or queue timeout, or a look back: none, or more than
    zero seconds and at most MAX_TASK_SECONDS."""
    if value is not None and not 0 < value <= MAX_TASK_SECONDS:
        raise UsageError(f"invalid {label} {value!r}: it must be more than zero seconds "
                         f"and at most {MAX_TASK_SECONDS} (ten years)")
    return value


def validate_retries(retries: int) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        raise UsageError(f"invalid retries {retries!r}: it must be a whole number "
                         f"from 0 to {MAX_RETRIES}")
    return retries


def validate_task_id(task_id: int) -> int:
    """A task id the database could hold; NotFound for one it cannot."""
    if isinstance(task_id, int) and not 0 < task_id <= MAX_TASK_ID:
        raise NotFound(f"no task with id {task_id}")
    return task_id


def offline_threshold(offline_after: float, heartbeat_interval: float | None) -> float:
    """Seconds without a check-in after which a node is Offline: never less
    than twice the node's own check-in interval."""
    return max(offline_after, 2 * (heartbeat_interval or 0))


def is_offline(*, now: datetime, last_seen: datetime | None, stopped: bool,
               offline_after: float, heartbeat_interval: float | None) -> bool:
    """The offline rule: a node is Offline once it stopped, or when its last
    check-in is more than its threshold before `now` (exactly the threshold
    is still online). `store.common.offline_sql` says the same in SQL."""
    if stopped or last_seen is None:
        return True
    return now - last_seen > timedelta(seconds=offline_threshold(offline_after, heartbeat_interval))


def derive_status(*, offline: bool, drain: bool, shutting_down: bool, running: int) -> NodeStatus:
    """The status a node shows, given whether it is offline. Offline wins over drain."""
    if offline:
        return NodeStatus.OFFLINE
    if drain or shutting_down:
        return NodeStatus.DRAINING if running else (
            NodeStatus.DRAINED if drain else NodeStatus.DRAINING
        )
    return NodeStatus.RUNNING


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a `Z`, as every JSON document of octonodes writes a time."""
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass
class Task:
    """One task: its command, where and how it ran, how it ended."""

    id: int
    name: str
    command: list[str]
    state: TaskState
    node: str | None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    timeout: float | None = None
    queue_timeout: float | None = None
    retries: int = 0
    attempt: int = 0
    instance: str | None = None

    @property
    def ended(self) -> bool:
        return self.state.ended

    def to_json(self) -> dict:
        doc = asdict(self)
        doc.pop("instance")
        doc["state"] = str(self.state)
        for key in ("queued_at", "started_at", "finished_at"):
            doc[key] = iso(doc[key])
        return doc


@dataclass
class Node:
    """One node as read at one instant: stored fields plus its derived status."""

    name: str
    status: NodeStatus
    last_seen: datetime | None
    task_cap: int
    tasks: int
    drain: bool
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    shutting_down: bool = False
    version: str | None = None
    host: str | None = None
    pid: int | None = None
    http_address: str | None = None
    heartbeat_interval: float | None = None
    instance_id: str | None = None
    offline_reason: OfflineReason | None = None
    offline_since: datetime | None = None
    drain_reason: str | None = None
    drained_by: str | None = None
    drained_at: datetime | None = None
    """While drain is on: why, who turned it on, and when (None when unknown:
    drained by a version that did not record it)."""
    active_tasks: list[Task] | None = field(default=None)

    @property
    def online(self) -> bool:
        return self.status is not NodeStatus.OFFLINE

    def to_json(self) -> dict:
        doc = {
            "name": self.name,
            "status": str(self.status),
            "last_seen": iso(self.last_seen),
            "task_cap": self.task_cap,
            "tasks": self.tasks,
            "drain": self.drain,
            "drain_reason": self.drain_reason,
            "drained_by": self.drained_by,
            "drained_at": iso(self.drained_at),
            "offline_reason": str(self.offline_reason) if self.offline_reason else None,
            "offline_since": iso(self.offline_since),
            "started_at": iso(self.started_at),
            "stopped_at": iso(self.stopped_at),
            "shutting_down": self.shutting_down,
            "version": self.version,
            "host": self.host,
            "pid": self.pid,
            "http_address": self.http_address,
            "heartbeat_interval": self.heartbeat_interval,
            "instance_id": self.instance_id,
        }
        if self.active_tasks is not None:
            doc["active_tasks"] = [t.to_json() for t in self.active_tasks]
        return doc


def make_node(row: dict, *, now: datetime, running: int, offline_after: float) -> Node:
    """Build a Node from stored fields (times as aware datetimes), deriving its status."""
    stopped = row.get("stopped_at") is not None
    offline = is_offline(now=now, last_seen=row.get("last_seen"), stopped=stopped,
                         offline_after=offline_after,
                         heartbeat_interval=row.get("heartbeat_interval"))
    status = derive_status(offline=offline, drain=bool(row["drain"]),
                           shutting_down=bool(row.get("shutting_down")), running=running)
    reason = since = None
    if status is NodeStatus.OFFLINE:
        if stopped:
            reason, since = OfflineReason.STOPPED, row["stopped_at"]
        else:
            reason = OfflineReason.LOST
            last_seen = row.get("last_seen")
            threshold = offline_threshold(offline_after, row.get("heartbeat_interval"))
            since = last_seen + timedelta(seconds=threshold) if last_seen else None
    return Node(
        name=row["name"],
        status=status,
        last_seen=row.get("last_seen"),
        task_cap=row["task_cap"],
        tasks=running,
        drain=bool(row["drain"]),
        started_at=row.get("started_at"),
        stopped_at=row.get("stopped_at"),
        shutting_down=bool(row.get("shutting_down")),
        version=row.get("version"),
        host=row.get("host"),
        pid=row.get("pid"),
        http_address=row.get("http_address"),
        heartbeat_interval=row.get("heartbeat_interval"),
        instance_id=row.get("instance_id"),
        offline_reason=reason,
        offline_since=since,
        # Only while drain is on: an older version may have undrained the
        # node without clearing them.
        drain_reason=row.get("drain_reason") if row["drain"] else None,
        drained_by=row.get("drained_by") if row["drain"] else None,
        drained_at=row.get("drained_at") if row["drain"] else None,
    )

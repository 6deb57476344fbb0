"""What the store's operations take and return: small frozen dataclasses
with no behaviour beyond reading themselves out (`ApiKey.to_json`).

`octonodes.store.base` imports every one of them for the `Store` interface,
so callers may import them from either module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..models import Node, TaskState, iso
from ..roles import Role
from ..settings import ClusterSettings


@dataclass(frozen=True)
class TaskSpec:
    """What `add_task` queues."""

    command: list[str]
    name: str | None = None
    timeout: float | None = None
    queue_timeout: float | None = None
    retries: int = 0


@dataclass(frozen=True)
class TaskQuery:
    """Which tasks a paged listing selects (every given condition holds)."""

    node: str | None = None
    states: tuple[TaskState, ...] = ()
    ids: tuple[int, ...] = ()
    name: str | None = None
    name_contains: str | None = None  # case-insensitive


@dataclass(frozen=True)
class Registration:
    """Who a `node run` process is, as it registers its name."""

    name: str
    instance_id: str
    host: str
    pid: int
    version: str
    heartbeat_interval: float
    task_cap: int | None = None  # None keeps the stored cap (or the default)
    http_address: str | None = None
    holder_gone: bool = False  # the lock file proved a same-host holder dead


@dataclass(frozen=True)
class Registered:
    node: Node
    settings: ClusterSettings
    took_over: str | None = None  # the instance id replaced, if any
    ended_tasks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class CheckIn:
    """What a node learns when it checks in: its own row and the settings."""

    node: Node
    settings: ClusterSettings


@dataclass(frozen=True)
class LogChunk:
    task_id: int
    attempt: int
    data: bytes


@dataclass(frozen=True)
class Finish:
    """How one attempt of a task ended, as its node reports it."""

    task_id: int
    attempt: int
    state: TaskState
    exit_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Reaped:
    """What one pass of housekeeping ended: ids per outcome."""

    lost: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    queue_timed_out: list[int] = field(default_factory=list)
    pruned: int = 0


@dataclass(frozen=True)
class QueueSummary:
    queued: int
    oldest_queued_at: datetime | None


@dataclass(frozen=True)
class ApiKey:
    """An API key's record: its name and dates, never the key itself (only
    its hash is stored, and the store never hands the hash out)."""

    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    role: Role = Role.ADMIN
    last_used_at: datetime | None = None
    """When a request last came with it, to within LAST_USE_PRECISION."""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict:
        return {"name": self.name, "role": str(self.role), "created_at": iso(self.created_at),
                "last_used_at": iso(self.last_used_at),
                "revoked": self.revoked, "revoked_at": iso(self.revoked_at)}


LAST_USE_PRECISION = 60.0
"""Seconds: a key's last use is written at most this often, so a busy
client costs one write a minute, not one a request."""

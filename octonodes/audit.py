"""The audit trail's vocabulary: events, their actions, actors and reasons.

Every change to the cluster is an event, written by the store in the same
transaction as the change. An event says when (the store's
clock), who (the actor), what (the action), to what (the target: a node, a
task or a batch of tasks, a key, a setting, a package), the old and new
values (`details`) and why (the reason the actor gave, if any). No command
edits or deletes an event; they age out after `event_retention`.

Actors: `user@host` for the command line and the Python API
(`OCTONODES_ACTOR` overrides it, for automation), `key NAME (address)` for
the HTTP API, `node NAME` for what the cluster does by itself.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .errors import UsageError
from .models import iso

ENV_ACTOR = "OCTONODES_ACTOR"
MAX_REASON = 500
"""Characters a reason may have."""
MAX_ACTOR = 200


class Action(StrEnum):
    NODE_DRAIN = "node.drain"
    NODE_UNDRAIN = "node.undrain"
    NODE_CAP = "node.cap"
    NODE_DELETE = "node.delete"
    NODE_REGISTER = "node.register"
    NODE_TAKE_OVER = "node.take-over"
    NODE_STOP = "node.stop"
    NODE_LOST = "node.lost"
    NODE_FENCE = "node.fence"
    TASK_ADD = "task.add"
    TASK_CANCEL = "task.cancel"
    SETTING_SET = "setting.set"
    APIKEY_ADD = "apikey.add"
    APIKEY_REVOKE = "apikey.revoke"
    PACKAGE_PUSH = "package.push"
    PACKAGE_OVERWRITE = "package.overwrite"
    PACKAGE_DELETE = "package.delete"


@dataclass(frozen=True)
class Change:
    """Who makes a change and why, as the store records it."""

    actor: str
    reason: str | None = None


@dataclass
class Event:
    """One recorded change."""

    id: int
    at: datetime
    actor: str
    action: Action
    target: str
    node: str | None = None
    task_first: int | None = None
    task_last: int | None = None
    """The task, or the first and last ids of a batch (`details["task_ranges"]`
    lists a batch's runs when its ids are not one)."""
    details: dict = field(default_factory=dict)
    reason: str | None = None

    def concerns_task(self, task_id: int) -> bool:
        if self.task_first is None or not self.task_first <= task_id <= self.task_last:
            return False
        spans = self.details.get("task_ranges")
        return not spans or any(a <= task_id <= b for a, b in spans)

    def to_json(self) -> dict:
        return {
            "id": self.id, "at": iso(self.at),
            "actor": self.actor, "action": str(self.action), "target": self.target,
            "node": self.node, "task_first": self.task_first, "task_last": self.task_last,
            "details": self.details, "reason": self.reason,
        }


@dataclass(frozen=True)
class EventFilter:
    """What `events` selects; every field narrows."""

    node: str | None = None
    task: int | None = None
    actions: tuple[Action, ...] = ()
    actor: str | None = None  # a substring of the actor, case-insensitive
    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None  # only events newer than this id (for --follow)
    before_id: int | None = None  # only events older than this id
    limit: int | None = 50
    offset: int = 0  # skip this many of the newest that match


def default_actor() -> str:
    """`OCTONODES_ACTOR`, else `user@host`."""
    given = os.environ.get(ENV_ACTOR, "").strip()
    if given:
        return given[:MAX_ACTOR]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def change(actor: str | None, reason: str | None = None) -> Change:
    """Who (the default actor when None) and why, checked."""
    return Change(actor=validate_actor(actor) if actor else default_actor(),
                  reason=validate_reason(reason))


def validate_reason(reason: str | None) -> str | None:
    """A reason: kept as given, at most MAX_REASON characters; blank is none."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise UsageError("a reason is text")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is {len(reason)} characters long; "
                         f"the limit is {MAX_REASON}")
    if any(ord(c) < 32 and c not in "\t\n" for c in reason):
        raise UsageError("the reason holds control characters")
    return reason or None


def validate_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > MAX_ACTOR:
        raise UsageError(f"an actor is 1-{MAX_ACTOR} characters of text")
    return actor.strip()


def parse_action(text: str) -> Action:
    try:
        return Action(text.strip().lower())
    except ValueError:
        raise UsageError(f"unknown action {text!r}; the actions are: "
                         f"{', '.join(a.value for a in Action)}") from None


def node_actor(name: str) -> str:
    """The actor of what a node does by itself."""
    return f"node {name}"

"""What each page shows, read from the cluster in one call: plain data that
the templates lay out. Each view's `fingerprint` tells a page whether what
it shows has changed (the time it was read aside), so an open page costs a
tiny answer when nothing has."""

from __future__ import annotations

import hashlib
from functools import cached_property
from dataclasses import dataclass, field, fields
from datetime import datetime

from ..audit import Action, Event
from ..cluster import Cluster
from ..models import Node, OfflineReason, Task, TaskState
from ..settings import SETTINGS, ClusterSettings
from ..store.base import QueueSummary

TASKS_SHOWN = 50
EVENTS_SHOWN = 100


@dataclass(frozen=True)
class View:
    now: datetime

    @cached_property
    def fingerprint(self) -> str:
        shown = tuple(getattr(self, f.name) for f in fields(self) if f.name != "now")
        return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NodesView(View):
    nodes: list[Node]
    queue: QueueSummary

    @property
    def lost(self) -> list[Node]:
        return [n for n in self.nodes if n.offline_reason is OfflineReason.LOST]


@dataclass(frozen=True)
class NodeView(View):
    node: Node


@dataclass(frozen=True)
class TasksView(View):
    tasks: list[Task]
    node_names: list[str]
    states: tuple[str, ...] = ()
    node: str | None = None


@dataclass(frozen=True)
class TaskView(View):
    task: Task


@dataclass(frozen=True)
class EventsView(View):
    events: list[Event]
    node_names: list[str]
    node: str | None = None
    action: str | None = None
    actor: str | None = None


@dataclass(frozen=True)
class SettingsView(View):
    settings: ClusterSettings
    stored: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> list[tuple[str, str, str, bool]]:
        """(key, value in force, help, whether someone set it)."""
        return [(key, s.format(getattr(self.settings, key)), s.help, key in self.stored)
                for key, s in SETTINGS.items()]


def nodes_view(cluster: Cluster) -> NodesView:
    return NodesView(now=cluster.now(), nodes=cluster.nodes(), queue=cluster.queue_summary())


def node_view(cluster: Cluster, name: str) -> NodeView:
    return NodeView(now=cluster.now(), node=cluster.node(name, with_tasks=True))


def tasks_view(cluster: Cluster, states: tuple[str, ...], node: str | None) -> TasksView:
    return TasksView(now=cluster.now(), tasks=cluster.tasks(node=node, states=states,
                                                           limit=TASKS_SHOWN),
                     node_names=[n.name for n in cluster.nodes()], states=states, node=node)


def task_view(cluster: Cluster, task_id: int) -> TaskView:
    return TaskView(now=cluster.now(), task=cluster.task(task_id))


def events_view(cluster: Cluster, node: str | None, action: str | None,
                actor: str | None) -> EventsView:
    return EventsView(now=cluster.now(), node_names=[n.name for n in cluster.nodes()],
                      events=cluster.events(node=node, actions=[action] if action else (),
                                            actor=actor, limit=EVENTS_SHOWN),
                      node=node, action=action, actor=actor)


def settings_view(cluster: Cluster) -> SettingsView:
    return SettingsView(now=cluster.now(), settings=cluster.settings(),
                        stored=cluster.stored_settings())


@dataclass(frozen=True)
class LogPart:
    """Output of a task after chunk `after` up to chunk `last`, and whether
    the task had ended before it was read (so nothing more will come)."""

    text: str
    last: int
    ended: bool


def log_part(cluster: Cluster, task_id: int, after: int = 0) -> LogPart:
    ended = cluster.task(task_id).ended  # first: output read after it is complete
    chunks = cluster.log_chunks(task_id, after)
    last = chunks[-1][0] if chunks else after
    return LogPart(text=b"".join(data for _, data in chunks).decode("utf-8", "replace"),
                   last=last, ended=ended)


STATE_NAMES = [s.value for s in TaskState]
ACTION_NAMES = [a.value for a in Action]

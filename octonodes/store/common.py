"""What both backends say and decide the same way: error texts, row shapes."""

from __future__ import annotations

from datetime import datetime

from ..models import TaskState

ACTIVE = (TaskState.EXECUTING.value, TaskState.CANCELLING.value)

ERROR_CANCELED_QUEUED = "canceled before a node picked it up"
ERROR_NODE_DELETED = "node {node} was deleted while the task ran"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def lost_error(node: str, last_seen: datetime | None) -> str:
    return f"node {node} was lost (last seen {when(last_seen)})"


def requeued_note(node: str, attempt: int, last_seen: datetime | None) -> str:
    return (f"attempt {attempt} was lost with node {node} (last seen {when(last_seen)}); "
            "queued again")


def queue_timeout_error(seconds: float) -> str:
    from ..settings import format_duration

    return f"no node picked it up within {format_duration(seconds)} (queue timeout)"


def default_task_name(command: list[str]) -> str:
    import shlex

    name = shlex.join(command)
    return name if len(name) <= 80 else name[:77] + "..."

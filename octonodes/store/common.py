"""What both backends say and decide the same way: error texts, row shapes."""

from __future__ import annotations

from datetime import datetime

from ..errors import Refused
from ..models import Node, TaskState

ACTIVE = (TaskState.EXECUTING.value, TaskState.CANCELLING.value)

ERROR_CANCELED_QUEUED = "canceled before a node picked it up"
ERROR_NODE_DELETED = "node {node} was deleted while the task ran"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def take_over(node: Node, instance_id: str, host: str, holder_gone: bool) -> str | None:
    """Whether a `node run` (instance, host) may register a name whose row
    is `node`: Refused while another live process holds it, unless that
    holder is on this host and its process is gone. Returns the instance
    taken over (one that never stopped cleanly), or None."""
    other = node.instance_id and node.instance_id != instance_id
    if other and node.online and not (holder_gone and node.host == host):
        raise Refused(f"node {node.name} is held by a live process: pid {node.pid} on "
                      f"{node.host}, last seen {when(node.last_seen)}")
    return node.instance_id if other and not node.stopped_at else None


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

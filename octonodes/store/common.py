"""What both backends say and decide the same way: error texts, row shapes."""

from __future__ import annotations

from datetime import datetime

from ..audit import Action
from ..errors import Refused, SchemaMismatch
from ..models import Node, Task, TaskState

ERROR_CANCELED_QUEUED = "canceled before a node picked it up"
ERROR_NODE_DELETED = "node {node} was deleted while the task ran"


def offline_sql(now: str, offline_after: str, *, greatest: str, seconds: str,
                n: str = "n") -> str:
    """The offline rule (`models.is_offline`) in SQL, for the node row `n` at
    the time `now`, with the `offline_after` setting in seconds: both SQL
    texts, each store's reap and PostgreSQL's exchange use this one
    expression. `greatest` is the dialect's two-argument maximum, `seconds`
    what turns a number into a duration to subtract from a time."""
    return (f"({n}.stopped_at IS NOT NULL OR {n}.last_seen IS NULL OR {n}.last_seen < {now}"
            f" - {greatest}({offline_after}, 2 * coalesce({n}.heartbeat_interval, 0)){seconds})")


def check_schema_version(meta: dict[str, str] | None, supported: int, missing: str) -> None:
    """SchemaMismatch unless code at schema version `supported` can use a
    database whose meta table says `meta` (None: no schema yet, `missing`)."""
    if meta is None:
        raise SchemaMismatch(missing)
    version = int(meta.get("schema_version", 0))
    if version < supported:
        raise SchemaMismatch(
            f"the database schema is out of date (version {version}, this octonodes "
            f"needs {supported}); run `octonodes init` to upgrade it")
    if version > supported and int(meta.get("min_compatible", version)) > supported:
        raise SchemaMismatch(
            f"the database schema (version {version}) is newer than this octonodes "
            f"understands ({supported}); upgrade octonodes")


def refuse_delete(node: Node) -> None:
    """Refused while the node is online or runs tasks (`--force` skips this)."""
    if node.online:
        raise Refused(f"node {node.name} is online ({node.status}); stop it first, or use --force")
    if node.tasks:
        raise Refused(
            f"node {node.name} has {node.tasks} active task(s); wait for them, or use --force")


def requeues(state: TaskState, attempt: int, retries: int) -> bool:
    """Whether a lost node's task is queued again (else it fails): only an
    Executing task with retries left; a task being cancelled ends."""
    return state is TaskState.EXECUTING and attempt <= retries


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


# -- what the audit trail records of each change (both backends alike) -----------

def registered_event(node: Node, reg, took_over: str | None, ended: list[int]) -> dict:
    details = {"instance": reg.instance_id, "host": reg.host, "pid": reg.pid,
               "version": reg.version, "task_cap": node.task_cap, "drain": node.drain}
    if took_over:
        details["took_over"] = took_over
    if ended:
        details["ended_tasks"] = ended
    return dict(action=Action.NODE_TAKE_OVER if took_over else Action.NODE_REGISTER,
                target=node.name, node=node.name, task_ids=ended, details=details)


def deleted_event(node: Node, force: bool, failed: list[int]) -> dict:
    return dict(action=Action.NODE_DELETE, target=node.name, node=node.name, task_ids=failed,
                details={"force": force, "status": str(node.status), "failed_tasks": sorted(failed)})


def added_event(tasks: list[Task]) -> dict:
    ids = [t.id for t in tasks]
    target = f"task {ids[0]}" if len(ids) == 1 else f"{len(ids)} tasks, {min(ids)}-{max(ids)}"
    details: dict = {"count": len(ids)}
    if len(tasks) == 1:
        details.update(name=tasks[0].name, command=tasks[0].command)
    return dict(action=Action.TASK_ADD, target=target, task_ids=ids, details=details)


def canceled_event(before: Task, after: Task) -> dict:
    return dict(action=Action.TASK_CANCEL, target=f"task {before.id}", node=before.node,
                task_ids=[before.id], details={"old": str(before.state), "new": str(after.state)})


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with `\\` as the escape."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"

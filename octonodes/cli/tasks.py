"""Task commands: add, list, show, log, cancel, wait."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..models import TaskState
from ..settings import parse_duration
from .app import (MAX_WHOLE_NUMBER, JsonOption, ReasonOption, Typer, app, checked_reason,
               enum_values, integer, print_json, whole_number)
from .complete import enum_words, node_names

task_app = Typer(help="Queue tasks and follow them.", no_args_is_help=True)
app.add_typer(task_app, name="task")

TaskId = Annotated[int, typer.Argument(
    metavar="ID", parser=integer("task id"), help="The task's id.", show_default=False)]
Duration = "DURATION"


@task_app.command("add")
def add(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(
        metavar="-- COMMAND [ARG]...", help="The command to run and its arguments, after `--`.",
        show_default=False)],
    name: Annotated[Optional[str], typer.Option(
        "--name", metavar="NAME", help="A name to show for the task. [default: the command]")] = None,
    timeout: Annotated[Optional[str], typer.Option(
        "--timeout", metavar=Duration,
        help="Kill it and end it TimedOut after running this long (90s, 5m, 2h).")] = None,
    queue_timeout: Annotated[Optional[str], typer.Option(
        "--queue-timeout", metavar=Duration,
        help="End it TimedOut if no node picks it up within this long. "
             "[default: the queue_timeout setting]")] = None,
    retries: Annotated[int, typer.Option(
        "--retries", metavar="N", parser=whole_number("retries", 0),
        help="Queue it again up to N times if its node is lost (at-least-once).")] = 0,
    json: JsonOption = False,
) -> None:
    """Queue a task; print its id.

    Example: octonodes task add --name backup --timeout 1h -- /usr/local/bin/backup --full
    """
    task = ctx.obj.cluster().add_task(
        command, name=name,
        timeout=parse_duration(timeout) if timeout else None,
        queue_timeout=parse_duration(queue_timeout) if queue_timeout else None,
        retries=retries,
    )
    if json:
        print_json(task.to_json())
    else:
        print(task.id)


@task_app.command("list")
def list_tasks(
    ctx: typer.Context,
    node: Annotated[Optional[str], typer.Option(
        "--node", metavar="NODE", autocompletion=node_names,
        help="Only tasks that ran on this node.")] = None,
    state: Annotated[Optional[list[str]], typer.Option(
        "--state", "-s", metavar="STATE", callback=enum_values(TaskState),
        autocompletion=enum_words(TaskState),
        help="Only tasks in this state: Queued, Executing, Cancelling, Success, Failed, "
             "Canceled or TimedOut. Repeat it or list several: -s Failed,TimedOut")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", metavar="N", parser=whole_number("limit", 1, MAX_WHOLE_NUMBER),
        help="At most N tasks.")] = 50,
    json: JsonOption = False,
) -> None:
    """Tasks, newest first.

    Example: octonodes task list --state Failed --limit 10
    """
    cluster = ctx.obj.cluster()
    tasks = cluster.tasks(node=node, states=state or (), limit=limit)
    if json:
        print_json([t.to_json() for t in tasks])
        return
    from ..render import emit, tasks_table

    emit(tasks_table(tasks, cluster.now()))


@task_app.command("show")
def show_task(ctx: typer.Context, task_id: TaskId, json: JsonOption = False) -> None:
    """One task in full.

    Example: octonodes task show 42
    """
    cluster = ctx.obj.cluster()
    task = cluster.task(task_id)
    if json:
        print_json(task.to_json())
        return
    from ..render import emit, task_detail

    emit(task_detail(task, cluster.now()))


@task_app.command("log")
def task_log(
    ctx: typer.Context,
    task_id: TaskId,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing output until the task ends; Ctrl-C stops (exit 130).")] = False,
) -> None:
    """A task's output (stdout and stderr, merged).

    Example: octonodes task log 42 --follow
    """
    out = sys.stdout.buffer
    for chunk in ctx.obj.cluster().log(task_id, follow=follow):
        out.write(chunk)
        out.flush()


@task_app.command("cancel")
def cancel(ctx: typer.Context, task_id: TaskId, reason: ReasonOption = None) -> None:
    """Cancel a task: a queued one at once; a running one is stopped by its node
    (SIGTERM, then SIGKILL after cancel_grace).

    Example: octonodes task cancel 42 --reason "wrong branch"
    """
    reason = checked_reason(reason)
    task, changed = ctx.obj.cluster().cancel(task_id, reason=reason)
    if not changed:
        if task.ended:
            print(f"task {task.id} has already ended ({task.state})")
        else:
            print(f"task {task.id} is already cancelling")
    elif task.state is TaskState.CANCELED:
        print(f"task {task.id} canceled")
    else:
        print(f"task {task.id} is cancelling on {task.node}")


@task_app.command("wait")
def wait(
    ctx: typer.Context,
    task_id: TaskId,
    timeout: Annotated[Optional[str], typer.Option(
        "--timeout", metavar=Duration, help="Give up (exit 5) after this long (90s, 5m, 2h).")] = None,
    json: JsonOption = False,
) -> None:
    """Block until a task ends: exit 0 Success, 1 any other end, 5 at the timeout.

    Ctrl-C stops waiting (exit 130); the task goes on.

    Example: octonodes task wait 42 --timeout 10m
    """
    seconds = parse_duration(timeout) if timeout else None
    task = ctx.obj.cluster().wait(task_id, timeout=seconds)
    if json:
        print_json(task.to_json())
    else:
        detail = f" (exit code {task.exit_code})" if task.exit_code not in (None, 0) else ""
        print(f"task {task.id} {task.state}{detail}" + (f": {task.error}" if task.error else ""))
    raise typer.Exit(0 if task.state is TaskState.SUCCESS else 1)

"""The task API, in Octopus's shape (`ServerTasks-<n>` ids, its field names):

- `GET /api/tasks[?skip&take&states=&node=&name=&partialName=&ids=]`: a page
  of tasks, newest first;
- `GET /api/tasks/{id}`, `/{id}/details` (with the log), `/{id}/raw` (the
  log as text);
- `POST /api/tasks`: queue one (`{Name, Description, Arguments: {Command:
  [...]}, Timeout, QueueTimeout, Retries}`), 201;
- `POST /api/tasks/{id}/cancel`: cancel it (idempotent), the task after.

Each is also served under `/api/Spaces-1/`. The work is `Cluster`'s.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import NotFound, UsageError
from ..models import Task, TaskState
from ..settings import parse_duration
from ..store.base import TaskQuery
from .collections import (SPACE_ID, check_fields, database_page, json_object, listed,
                          numbered_id)
from .context import context_of
from ..models import iso

PREFIX = "ServerTasks-"
TASKS = "/api/tasks"
TEMPLATE = TASKS + "{/id}{?skip,take,ids,partialName,states,node,name}"
CREATE_FIELDS = {"Name", "Description", "Arguments", "Timeout", "QueueTimeout", "Retries",
                 "SpaceId"}
ARGUMENT_FIELDS = {"Command"}
ACTIVITY_STATUS = {
    TaskState.QUEUED: "Pending", TaskState.EXECUTING: "Running", TaskState.CANCELLING: "Running",
    TaskState.SUCCESS: "Success", TaskState.FAILED: "Failed", TaskState.TIMED_OUT: "Failed",
    TaskState.CANCELED: "Canceled",
}


def task_id(text: str) -> int:
    return numbered_id(PREFIX, text, "task")


def duration_text(seconds: float) -> str:
    """Octopus's human duration: "less than a second", "12 seconds", "3 minutes"."""
    if seconds < 1:
        return "less than a second"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return ""  # not reached


def _error_message(task: Task) -> str | None:
    if task.error:
        return task.error
    if task.state is TaskState.FAILED and task.exit_code is not None:
        return f"the command exited with code {task.exit_code}"
    return None


def task_resource(task: Task) -> dict:
    tid = f"{PREFIX}{task.id}"
    link = f"{TASKS}/{tid}"
    duration = None
    if task.started_at:
        duration = duration_text(((task.finished_at or datetime.now(UTC)) - task.started_at)
                                 .total_seconds())
    return {
        "Id": tid, "SpaceId": SPACE_ID, "Name": task.name, "Description": task.name,
        "State": str(task.state), "IsCompleted": task.ended,
        "FinishedSuccessfully": task.state is TaskState.SUCCESS,
        "HasWarningsOrErrors": task.state in (TaskState.FAILED, TaskState.TIMED_OUT),
        "ErrorMessage": _error_message(task), "QueueTime": iso(task.queued_at),
        "StartTime": iso(task.started_at), "CompletedTime": iso(task.finished_at),
        "Duration": duration, "ServerNode": task.node,
        "HasBeenPickedUpByProcessor": task.started_at is not None,
        "HasPendingInterruptions": False, "CanRerun": False,
        "Arguments": {"Command": task.command, "Timeout": task.timeout,
                      "QueueTimeout": task.queue_timeout, "Retries": task.retries},
        "ExitCode": task.exit_code, "Attempt": task.attempt,
        "Links": {"Self": link, "Details": f"{link}/details", "Raw": f"{link}/raw",
                  "Cancel": f"{link}/cancel"},
    }


def _query(request: Request) -> TaskQuery:
    states = []
    for text in listed(request, "states"):
        match = next((s for s in TaskState if s.value.lower() == text.lower()), None)
        if match is None:
            raise UsageError(f"invalid state {text!r}: use " + ", ".join(s.value for s in TaskState))
        states.append(match)
    ids = []
    for text in listed(request, "ids"):
        try:
            ids.append(task_id(text))
        except NotFound:
            raise UsageError(f"invalid task id {text!r}: ids are {PREFIX}<number>") from None
    node = request.query_params.get("node") or None
    if node and node.lower().startswith("octopusservernodes-"):
        node = node[len("OctopusServerNodes-"):]
    return TaskQuery(node=node, states=tuple(states), ids=tuple(ids),
                     name=request.query_params.get("name") or None,
                     name_contains=request.query_params.get("partialName") or None)


async def list_tasks(request: Request) -> JSONResponse:
    query = _query(request)
    return JSONResponse(await database_page(
        request, "ServerTask", TEMPLATE,
        lambda c, page: c.task_page(query, skip=page.skip, take=page.take), task_resource))


async def get_task(request: Request) -> JSONResponse:
    number = task_id(request.path_params["id"])
    return JSONResponse(task_resource(await context_of(request).call(lambda c: c.task(number))))


def _log_text(cluster, number: int) -> tuple[Task, bytes]:
    task = cluster.task(number)
    return task, b"".join(cluster.log(number))


async def task_details(request: Request) -> JSONResponse:
    number = task_id(request.path_params["id"])
    task, log = await context_of(request).call(lambda c: _log_text(c, number))
    text = log.decode("utf-8", errors="replace")
    occurred = iso(task.started_at or task.queued_at)
    activity = {
        "Id": f"{PREFIX}{task.id}", "Name": task.name, "Started": iso(task.started_at),
        "Ended": iso(task.finished_at), "Status": ACTIVITY_STATUS[task.state], "Children": [],
        "ShowAtSummaryLevel": True, "ProgressPercentage": 100 if task.ended else 0,
        "ProgressMessage": str(task.state),
        "LogElements": [{"Category": "Info", "OccurredAt": occurred, "MessageText": line}
                        for line in text.splitlines()],
    }
    return JSONResponse({
        "Task": task_resource(task),
        "Progress": {"ProgressPercentage": 100 if task.ended else 0,
                     "EstimatedTimeRemaining": None},
        "PhysicalLogSize": len(log), "ActivityLogs": [activity], "Log": text,
        "Links": {"Self": f"{TASKS}/{PREFIX}{task.id}/details"},
    })


async def task_raw(request: Request) -> Response:
    number = task_id(request.path_params["id"])
    _task, log = await context_of(request).call(lambda c: _log_text(c, number))
    return Response(log, media_type="text/plain; charset=utf-8")


def _seconds(doc: dict, field: str) -> float | None:
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{field} must be seconds (a number) or a duration like 90s, 5m, 2h")
    try:
        return parse_duration(value)
    except UsageError as exc:
        raise UsageError(f"{field}: {exc}") from None


def _new_task(doc: dict) -> dict:
    """What `POST /api/tasks` asks for, as `Cluster.add_task`'s arguments."""
    check_fields(doc, CREATE_FIELDS, "a task")
    if doc.get("SpaceId") not in (None, SPACE_ID):
        raise UsageError(f"unknown SpaceId {doc['SpaceId']!r}: the one space is {SPACE_ID}")
    arguments = doc.get("Arguments")
    if not isinstance(arguments, dict):
        raise UsageError('Arguments must be an object: {"Command": ["program", "arg", ...]}')
    check_fields(arguments, ARGUMENT_FIELDS, "Arguments")
    command = arguments.get("Command")
    if (not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
            or not command[0]):
        raise UsageError("Arguments.Command must be a non-empty list of strings "
                         "(the program and its arguments)")
    name = doc.get("Name") or doc.get("Description")
    if name is not None and not isinstance(name, str):
        raise UsageError("Name and Description must be strings")
    retries = doc.get("Retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise UsageError(f"Retries must be a whole number, not {retries!r}")
    return {"command": command, "name": name or None, "timeout": _seconds(doc, "Timeout"),
            "queue_timeout": _seconds(doc, "QueueTimeout"), "retries": retries}


async def create_task(request: Request) -> JSONResponse:
    wanted = _new_task(await json_object(request))
    actor = request.state.actor
    task = await context_of(request).call(lambda c: c.add_task(**wanted, actor=actor))
    resource = task_resource(task)
    return JSONResponse(resource, status_code=201, headers={"Location": resource["Links"]["Self"]})


async def cancel_task(request: Request) -> JSONResponse:
    number = task_id(request.path_params["id"])
    actor = request.state.actor
    task, _changed = await context_of(request).call(lambda c: c.cancel(number, actor=actor))
    return JSONResponse(task_resource(task))


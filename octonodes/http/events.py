"""The audit trail in Octopus's shape (`Events-<n>`):

- `GET /api/events[?skip&take&regarding=&users=&from=&to=]`: a page of
  events, newest first. `regarding` names a node (`OctopusServerNodes-<name>`)
  and/or a task (`ServerTasks-<n>`), comma-separated; `users` is part of the
  actor (any case); `from` and `to` are ISO 8601 times (UTC unless they say);
- `GET /api/events/{id}`: one event.

Each is also served under `/api/Spaces-1/`. The work is `Cluster`'s.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..audit import Event
from ..errors import NotFound, UsageError
from .collections import database_page, listed, numbered_id
from .context import context_of
from ..models import iso
from .nodes import PREFIX as NODE_PREFIX
from .nodes import node_name
from .tasks import PREFIX as TASK_PREFIX
from .tasks import task_id

PREFIX = "Events-"
EVENTS = "/api/events"
TEMPLATE = EVENTS + "{/id}{?skip,take,regarding,users,from,to}"
RELATED_LIMIT = 100
"""Task ids listed at most in an event's RelatedDocumentIds (a batch can be large)."""


def _related(event: Event) -> list[str]:
    related = [f"{NODE_PREFIX}{event.node}"] if event.node else []
    if event.task_first is not None:
        spans = event.details.get("task_ranges") or [[event.task_first, event.task_last]]
        ids = (n for first, last in spans for n in range(first, last + 1))
        related += [f"{TASK_PREFIX}{n}" for _, n in zip(range(RELATED_LIMIT), ids)]
    if "package_id" in event.details and "version" in event.details:
        related.append(f"packages-{event.details['package_id']}.{event.details['version']}")
    return related


def event_resource(event: Event) -> dict:
    eid = f"{PREFIX}{event.id}"
    message = f"{event.actor}: {event.action} {event.target}"
    return {
        "Id": eid, "Category": str(event.action), "Message": message,
        "Occurred": iso(event.at), "Username": event.actor, "Details": event.details,
        "RelatedDocumentIds": _related(event), "Comments": event.reason,
        "Links": {"Self": f"{EVENTS}/{eid}"},
    }


def _time(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace(" ", "+"))  # a `+` unescaped in a URL
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"invalid {name} {text!r}: an ISO 8601 time from year 1 to 9999, "
                         "e.g. 2026-11-26T14:00:00Z") from None


def _regarding(request: Request) -> dict:
    found: dict = {}
    for document in listed(request, "regarding"):
        if document.lower().startswith(NODE_PREFIX.lower()) and "node" not in found:
            found["node"] = node_name(document)
        elif document.lower().startswith(TASK_PREFIX.lower()) and "task" not in found:
            try:
                found["task"] = task_id(document)
            except NotFound:
                raise UsageError(f"invalid task id {document!r} in regarding") from None
        else:
            raise UsageError(f"regarding takes one {NODE_PREFIX}<name> and/or one "
                             f"{TASK_PREFIX}<n>, not {document!r}")
    return found


async def list_events(request: Request) -> JSONResponse:
    regarding = _regarding(request)
    users = listed(request, "users")
    if len(users) > 1:
        raise UsageError("users takes one actor (or part of one)")
    since, until = _time(request, "from"), _time(request, "to")
    return JSONResponse(await database_page(
        request, "Event", TEMPLATE,
        lambda c, page: c.event_page(**regarding, actor=users[0] if users else None, since=since,
                                     until=until, skip=page.skip, take=page.take),
        event_resource))


async def get_event(request: Request) -> JSONResponse:
    number = numbered_id(PREFIX, request.path_params["id"], "event")
    return JSONResponse(event_resource(await context_of(request).call(lambda c: c.event(number))))

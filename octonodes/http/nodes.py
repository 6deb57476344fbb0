"""The nodes API (API key required; the roles are in `server`), with
Octopus's names and shapes:

- `GET /api/octopusservernodes`: every node, as a collection (`Items`);
- `GET /api/octopusservernodes/{name}`: one node;
- `GET /api/octopusservernodes/{name}/details`: the node and its running tasks;
- `PUT /api/octopusservernodes/{name}`: `IsInMaintenanceMode` (drain) and/or
  `MaxConcurrentTasks` (task cap), with `DrainReason` kept as the reason;
  other fields of the resource are ignored, so a client may send back what
  it read;
- `DELETE /api/octopusservernodes/{name}`: the CLI's guards (409 while the
  node is online or has active tasks).

Everything goes through `Cluster`, in a worker thread.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..cluster import Cluster
from ..errors import UsageError
from ..models import Node, Task
from ..models import iso

DRAIN_FIELD = "IsInMaintenanceMode"
REASON_FIELD = "DrainReason"
CAP_FIELD = "MaxConcurrentTasks"
MAX_BODY = 64 * 1024
"""Bytes a PUT may send; 413 past it."""


def node_resource(node: Node) -> dict:
    return {
        "Id": f"OctopusServerNodes-{node.name}",
        "Name": node.name,
        "IsInMaintenanceMode": node.drain,
        "IsOffline": not node.online,
        "LastSeen": iso(node.last_seen),
        "MaxConcurrentTasks": node.task_cap,
        "RunningTaskCount": node.tasks,
        "Version": node.version,
        "Status": str(node.status),
        "OfflineReason": str(node.offline_reason) if node.offline_reason else None,
        "Host": node.host,
        "HttpAddress": node.http_address,
        "StartedAt": iso(node.started_at),
        "DrainReason": node.drain_reason,
        "DrainedBy": node.drained_by,
        "DrainedAt": iso(node.drained_at),
    }


def task_resource(task: Task) -> dict:
    return {
        "Id": task.id, "Name": task.name, "State": str(task.state), "Node": task.node,
        "Command": task.command, "Attempt": task.attempt, "QueueTime": iso(task.queued_at),
        "StartTime": iso(task.started_at),
    }


def _context(request: Request):
    return request.app.state.context


async def list_nodes(request: Request) -> JSONResponse:
    nodes = await _context(request).call(lambda c: c.nodes())
    items = [node_resource(n) for n in nodes]
    return JSONResponse({"ItemType": "OctopusServerNode", "TotalResults": len(items),
                         "ItemsPerPage": len(items), "Items": items})


async def get_node(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    node = await _context(request).call(lambda c: c.node(name, with_tasks=False))
    return JSONResponse(node_resource(node))


async def node_details(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    node = await _context(request).call(lambda c: c.node(name, with_tasks=True))
    return JSONResponse({"Node": node_resource(node),
                         "RunningTasks": [task_resource(t) for t in node.active_tasks or []]})


async def _changes(request: Request) -> tuple[bool | None, int | None, str | None]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the request body is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        raise UsageError("the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise UsageError("the request body must be a JSON object")
    drain, cap = doc.get(DRAIN_FIELD), doc.get(CAP_FIELD)
    if drain is None and cap is None:
        raise UsageError(f"nothing to change: send {DRAIN_FIELD} (true or false) "
                         f"and/or {CAP_FIELD} (0-1000)")
    if drain is not None and not isinstance(drain, bool):
        raise UsageError(f"{DRAIN_FIELD} must be true or false, not {drain!r}")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)):
        raise UsageError(f"{CAP_FIELD} must be an integer from 0 to 1000, not {cap!r}")
    reason = doc.get(REASON_FIELD)
    if reason is not None and not isinstance(reason, str):
        raise UsageError(f"{REASON_FIELD} must be text, not {reason!r}")
    return drain, cap, reason


async def update_node(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    drain, cap, reason = await _changes(request)
    actor = request.state.actor

    def apply(cluster: Cluster) -> Node:
        cluster.node(name, with_tasks=False)  # 404 before anything changes
        if cap is not None:
            cluster.set_cap(name, cap, actor=actor, reason=reason)
        if drain is not None:
            change = cluster.drain if drain else cluster.undrain
            change(name, actor=actor, reason=reason)
        return cluster.node(name, with_tasks=False)

    return JSONResponse(node_resource(await _context(request).call(apply)))


async def delete_node(request: Request) -> Response:
    name = request.path_params["name"]
    actor = request.state.actor
    await _context(request).call(lambda c: c.delete(name, force=False, actor=actor))
    return Response(status_code=204)

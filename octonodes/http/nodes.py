"""The nodes API, with Octopus's names and shapes. Every `{id}` is the
node's id, `OctopusServerNodes-<name>`, or its bare name.

- `GET /api/octopusservernodes[?skip&take]`: a page of nodes;
- `GET /api/octopusservernodes/all`: every node, as a plain list;
- `GET /api/octopusservernodes/summary`: every node's status, running tasks
  and cap, and the queue (queued count, oldest queued time);
- `GET /api/octopusservernodes/{id}`: one node;
- `GET /api/octopusservernodes/{id}/details`: the node and its running tasks;
- `PUT /api/octopusservernodes/{id}`: the resource as `GET` returned it,
  changed: `IsInMaintenanceMode` (drain), `MaxConcurrentTasks` (task cap)
  and `DrainReason` (kept when this request turns drain on; a drained node
  keeps the reason it was drained with) are written; the other fields are the node's own
  (`READ_ONLY` must keep their values, `LIVE` ones are ignored as they
  move by themselves); any other field is refused, by name;
- `DELETE /api/octopusservernodes/{id}`: the CLI's guards (409 while the
  node is online or has active tasks).

Everything goes through `Cluster`, in a worker thread.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..cluster import Cluster
from ..errors import UsageError
from ..models import Node
from .collections import check_fields, json_object, paged
from .context import context_of
from ..models import iso
from .tasks import task_resource

PREFIX = "OctopusServerNodes-"
NODES = "/api/octopusservernodes"
TEMPLATE = NODES + "{/id}{?skip,take}"
DRAIN_FIELD = "IsInMaintenanceMode"
CAP_FIELD = "MaxConcurrentTasks"
REASON_FIELD = "DrainReason"
WRITABLE = {DRAIN_FIELD, CAP_FIELD, REASON_FIELD}
READ_ONLY = {"Id", "Name", "Version", "Host", "HttpAddress", "StartedAt"}
LIVE = {"IsOffline", "LastSeen", "RunningTaskCount", "Status", "OfflineReason", "OfflineSince",
        "DrainedBy", "DrainedAt", "Links"}


def node_resource(node: Node) -> dict:
    nid = f"{PREFIX}{node.name}"
    return {
        "Id": nid,
        "Name": node.name,
        "IsInMaintenanceMode": node.drain,
        "IsOffline": not node.online,
        "LastSeen": iso(node.last_seen),
        "MaxConcurrentTasks": node.task_cap,
        "RunningTaskCount": node.tasks,
        "Version": node.version,
        "Status": str(node.status),
        "OfflineReason": str(node.offline_reason) if node.offline_reason else None,
        "OfflineSince": iso(node.offline_since),
        "DrainReason": node.drain_reason,
        "DrainedBy": node.drained_by,
        "DrainedAt": iso(node.drained_at),
        "Host": node.host,
        "HttpAddress": node.http_address,
        "StartedAt": iso(node.started_at),
        "Links": {"Self": f"{NODES}/{nid}", "Details": f"{NODES}/{nid}/details"},
    }


def node_name(text: str) -> str:
    """The node a path's `{id}` names: `OctopusServerNodes-node-1` or `node-1`."""
    return text[len(PREFIX):] if text.lower().startswith(PREFIX.lower()) else text


async def list_nodes(request: Request) -> JSONResponse:
    nodes = await context_of(request).call(lambda c: c.nodes())
    return JSONResponse(paged(request, "OctopusServerNode", [node_resource(n) for n in nodes],
                              TEMPLATE))


async def all_nodes(request: Request) -> JSONResponse:
    nodes = await context_of(request).call(lambda c: c.nodes())
    return JSONResponse([node_resource(n) for n in nodes])


async def cluster_summary(request: Request) -> JSONResponse:
    nodes, queue = await context_of(request).call(lambda c: (c.nodes(), c.queue_summary()))
    return JSONResponse({
        "Nodes": [{key: resource[key] for key in (
            "Id", "Name", "Status", "IsOffline", "IsInMaintenanceMode", "MaxConcurrentTasks",
            "RunningTaskCount", "LastSeen", "Links")} for resource in map(node_resource, nodes)],
        "QueuedTaskCount": queue.queued,
        "OldestQueuedTaskTime": iso(queue.oldest_queued_at),
        "Links": {"Self": f"{NODES}/summary"},
    })


async def get_node(request: Request) -> JSONResponse:
    name = node_name(request.path_params["id"])
    node = await context_of(request).call(lambda c: c.node(name, with_tasks=False))
    return JSONResponse(node_resource(node))


async def node_details(request: Request) -> JSONResponse:
    name = node_name(request.path_params["id"])
    node = await context_of(request).call(lambda c: c.node(name, with_tasks=True))
    return JSONResponse({"Node": node_resource(node),
                         "RunningTasks": [task_resource(t) for t in node.active_tasks or []],
                         "Links": {"Self": f"{NODES}/{PREFIX}{node.name}/details"}})


def _changes(doc: dict) -> tuple[bool | None, int | None, str | None]:
    """The writable fields of a PUT body, checked (None: not sent)."""
    check_fields(doc, WRITABLE | READ_ONLY | LIVE, "a node")
    drain, cap, reason = doc.get(DRAIN_FIELD), doc.get(CAP_FIELD), doc.get(REASON_FIELD)
    if drain is None and cap is None:
        raise UsageError(f"nothing to change: send {DRAIN_FIELD} (true or false, with "
                         f"{REASON_FIELD} when it drains) and/or {CAP_FIELD} (0-1000)")
    if drain is not None and not isinstance(drain, bool):
        raise UsageError(f"{DRAIN_FIELD} must be true or false, not {drain!r}")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)):
        raise UsageError(f"{CAP_FIELD} must be an integer from 0 to 1000, not {cap!r}")
    if reason is not None and not isinstance(reason, str):
        raise UsageError(f"{REASON_FIELD} must be a string, not {reason!r}")
    return drain, cap, reason


def _check_read_only(doc: dict, node: Node) -> None:
    current = node_resource(node)
    changed = sorted(k for k in READ_ONLY & set(doc) if doc[k] != current[k])
    if changed:
        raise UsageError(f"read-only field(s) of node {node.name} cannot be changed: "
                         + ", ".join(changed))


async def update_node(request: Request) -> JSONResponse:
    name = node_name(request.path_params["id"])
    doc = await json_object(request)
    drain, cap, reason = _changes(doc)
    actor = request.state.actor

    def apply(cluster: Cluster) -> Node:
        _check_read_only(doc, cluster.node(name, with_tasks=False))  # 404 before any change
        if cap is not None:
            cluster.set_cap(name, cap, actor=actor)
        if drain is not None:
            if drain:
                cluster.drain(name, actor=actor, reason=reason)
            else:
                cluster.undrain(name, actor=actor)
        return cluster.node(name, with_tasks=False)

    return JSONResponse(node_resource(await context_of(request).call(apply)))


async def delete_node(request: Request) -> Response:
    name = node_name(request.path_params["id"])
    actor = request.state.actor
    await context_of(request).call(lambda c: c.delete(name, force=False, actor=actor))
    return Response(status_code=204)

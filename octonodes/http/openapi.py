"""`GET /api/openapi.json`: an OpenAPI 3.0 document of every route the node
serves, built from the app's own route list (so no route can be missing),
with each route's role (`x-octonodes-role`) and the shapes in `schemas.py`.
An API operation is described by `OPERATIONS[route.name]`; a page or form
of the web interface appears from its docstring, answering HTML behind a
signed-in session.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import __version__
from .schemas import SCHEMAS, json_of, ref

ERROR = {"application/json": {"schema": ref("Error")}}
KEY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Octopus-ApiKey"},
    "NuGetApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-NuGet-ApiKey"},
    "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "ApiKey"},
}
WEB_SCHEMES = {"WebSession": {"type": "apiKey", "in": "cookie", "name": "octonodes_session"}}
PAGING = [
    {"name": "skip", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                               "maximum": 2147483647}},
    {"name": "take", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                               "maximum": 2147483647, "default": 30}},
]


def _query(*names: str) -> list[dict]:
    return [{"name": n, "in": "query", "schema": {"type": "string"}} for n in names]


def _op(summary: str, response: dict | None = None, *, params: list | None = None,
        body: str | None = None, status: str = "200", errors: tuple[int, ...] = ()) -> dict:
    op: dict = {"summary": summary, "parameters": params or [],
                "responses": {status: {"description": summary, **({"content": response}
                                                                    if response else {})}}}
    for code in errors:
        op["responses"][str(code)] = {"description": "an error", "content": ERROR}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    return op


TEXT = {"text/plain": {"schema": {"type": "string"}}}
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"fileToUpload": {"type": "string", "format": "binary"}},
    "required": ["fileToUpload"]}}}}

OPERATIONS: dict[str, dict] = {
    "ping": {**_op("this node's health, for load balancers", json_of("NodePing")), "responses": {
        code: {"description": why, "content": json_of("NodePing")} for code, why in (
            ("200", "online, drain off"), ("418", "drain on"),
            ("503", "starting, shutting down, or cut off from its database"))}},
    "metrics": _op("the cluster in the Prometheus text format", TEXT, errors=(503,)),
    "root": _op("the root document", json_of("Root")),
    "openapi_document": _op("this document", {"application/json": {"schema": {"type": "object"}}}),
    "list_spaces": _op("the spaces (one: Spaces-1, Default)", json_of("SpaceCollection"),
                       params=PAGING + _query("partialName", "ids"), errors=(400,)),
    "all_spaces": _op("every space, as a list",
                      {"application/json": {"schema": {"type": "array", "items": ref("Space")}}}),
    "get_space": _op("one space", json_of("Space"), errors=(404,)),
    "space_home": _op("the space's root document", json_of("SpaceHome")),
    "list_nodes": _op("a page of nodes", json_of("NodeCollection"), params=PAGING, errors=(400,)),
    "all_nodes": _op("every node, as a list",
                     {"application/json": {"schema": {"type": "array", "items": ref("Node")}}}),
    "cluster_summary": _op("every node's status, tasks and cap, and the queue",
                           json_of("ClusterSummary")),
    "get_node": _op("one node", json_of("Node"), errors=(400, 404)),
    "update_node": _op("drain on/off, task cap, drain reason", json_of("Node"), body="NodeUpdate",
                       errors=(400, 404, 409, 413)),
    "delete_node": _op("remove an offline, idle node", status="204", errors=(400, 404, 409)),
    "node_details": _op("one node and its running tasks", json_of("NodeDetails"),
                        errors=(400, 404)),
    "list_tasks": _op("a page of tasks, newest first", json_of("TaskCollection"),
                      params=PAGING + _query("states", "node", "name", "partialName", "ids"),
                      errors=(400,)),
    "create_task": _op("queue a task", json_of("Task"), body="NewTask", status="201",
                       errors=(400, 413)),
    "get_task": _op("one task", json_of("Task"), errors=(404,)),
    "task_details": _op("one task and its log", json_of("TaskDetails"), errors=(404,)),
    "task_raw": _op("a task's log, as text", TEXT, errors=(404,)),
    "cancel_task": _op("cancel a task (idempotent)", json_of("Task"), errors=(404,)),
    "list_packages": _op("a page of packages", json_of("PackageCollection"),
                         params=PAGING + _query("filter"), errors=(400, 503)),
    "get_package": _op("one package", json_of("Package"), errors=(404, 503)),
    "download_package": _op("a package's file, streamed", BINARY, errors=(404, 503)),
    "delete_package": _op("remove a package", status="204", errors=(404, 503)),
    "upload": {**_op("push a package (multipart/form-data, one file part)", json_of("Package"),
                     params=[{"name": "overwriteMode", "in": "query", "schema": {
                         "type": "string",
                         "enum": ["FailIfExists", "OverwriteExisting", "IgnoreIfExists"]}}],
                     errors=(400, 409, 503, 507)),
               "requestBody": UPLOAD_BODY},
    "list_events": _op("a page of audit events, newest first", json_of("EventCollection"),
                       params=PAGING + _query("regarding", "users", "from", "to"),
                       errors=(400,)),
    "get_event": _op("one audit event", json_of("Event"), errors=(404,)),
}


def _operation(route: Route, method: str) -> dict:
    if not (route.path.startswith("/api") or route.path == "/metrics"):
        return _web_operation(route, method)
    op = OPERATIONS[route.name]
    path_words = re.sub(r"\W+", "_", route.path).strip("_")
    op = {**op, "operationId": f"{route.name}_{method}_{path_words}",
          "parameters": list(op["parameters"]) + _path_parameters(route)}
    role = getattr(route, "role", None)
    op["x-octonodes-role"] = role.value if role is not None else None
    responses = dict(op["responses"])
    responses.setdefault("default", {"description": "an error", "content": ERROR})
    if role is not None:
        op["security"] = [{name: []} for name in KEY_SCHEMES]
        for code, why in ((401, "no API key"), (403, "an unknown key, or one without the role")):
            responses[str(code)] = {"description": why, "content": ERROR}
    else:
        op["security"] = []
    op["responses"] = responses
    return op


def _path_parameters(route: Route) -> list[dict]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)]


def _web_operation(route: Route, method: str) -> dict:
    """A page or form of the web interface: HTML, redirects and error pages,
    behind a signed-in session (the cookie) rather than a key."""
    role = getattr(route, "role", None)
    path_words = re.sub(r"\W+", "_", route.path).strip("_") or "root"
    summary = (route.endpoint.__doc__ or route.name).strip().splitlines()[0]
    return {"summary": summary, "tags": ["web"],
            "operationId": f"web_{route.name}_{method}_{path_words}",
            "parameters": _path_parameters(route),
            "x-octonodes-role": role.value if role is not None else None,
            "security": [{"WebSession": []}] if role is not None else [],
            "responses": {"default": {"description": "an HTML page, a redirect or an error"}}}


def build_document(routes: list) -> dict:
    paths: dict[str, dict] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.methods:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, method.lower())
    return {
        "openapi": "3.0.3",
        "info": {"title": "octonodes", "version": __version__,
                 "description": "A node's REST API, in Octopus Deploy's shape (docs/api.md)."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": KEY_SCHEMES | WEB_SCHEMES},
    }


async def openapi_document(request: Request) -> JSONResponse:
    """The OpenAPI document of this API."""
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = request.app.state.openapi = build_document(request.app.routes)
    return JSONResponse(document)

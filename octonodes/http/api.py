"""The REST API's routes, in Octopus's shape, each with the role it needs
(docs/access.md, docs/api.md): this table is what a key of each role may do.

Space-scoped paths (tasks, packages, events) are served both under
`/api/Spaces-1/` and without the space. Order matters where a literal
segment shares a place with an `{id}` (`/all`, `/summary`): it comes first.
"""

from __future__ import annotations

from starlette.routing import Route

from ..roles import Role
from . import events, nodes, package_files, root, tasks
from .access import route
from .collections import SPACE_ID, SPACE_PREFIXES
from .openapi import openapi_document
from .packages import upload

NODES = nodes.NODES
VIEWER, OPERATOR, ADMIN, PACKAGES = Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.PACKAGES


def _space_scoped(prefix: str) -> list[Route]:
    return [
        route(f"{prefix}/tasks", tasks.list_tasks, methods=["GET"], role=VIEWER),
        route(f"{prefix}/tasks", tasks.create_task, methods=["POST"], role=OPERATOR),
        route(f"{prefix}/tasks/{{id}}", tasks.get_task, methods=["GET"], role=VIEWER),
        route(f"{prefix}/tasks/{{id}}/details", tasks.task_details, methods=["GET"], role=VIEWER),
        route(f"{prefix}/tasks/{{id}}/raw", tasks.task_raw, methods=["GET"], role=VIEWER),
        route(f"{prefix}/tasks/{{id}}/cancel", tasks.cancel_task, methods=["POST"], role=OPERATOR),
        route(f"{prefix}/packages", package_files.list_packages, methods=["GET"], role=PACKAGES),
        route(f"{prefix}/packages/raw", upload, methods=["POST"], role=PACKAGES),
        route(f"{prefix}/packages/{{id}}", package_files.get_package, methods=["GET"],
              role=PACKAGES),
        route(f"{prefix}/packages/{{id}}", package_files.delete_package, methods=["DELETE"],
              role=ADMIN),
        route(f"{prefix}/packages/{{id}}/raw", package_files.download_package, methods=["GET"],
              role=PACKAGES),
        route(f"{prefix}/events", events.list_events, methods=["GET"], role=VIEWER),
        route(f"{prefix}/events/{{id}}", events.get_event, methods=["GET"], role=VIEWER),
    ]


def api_routes() -> list[Route]:
    """Every REST API route but the ping (the server lists that first)."""
    return [
        route("/api", root.root, methods=["GET"], role=None),
        route("/api/openapi.json", openapi_document, methods=["GET"], role=None),
        route("/api/spaces", root.list_spaces, methods=["GET"], role=PACKAGES),
        route("/api/spaces/all", root.all_spaces, methods=["GET"], role=PACKAGES),
        route("/api/spaces/{id}", root.get_space, methods=["GET"], role=PACKAGES),
        route(f"/api/{SPACE_ID}", root.space_home, methods=["GET"], role=PACKAGES),
        route(NODES, nodes.list_nodes, methods=["GET"], role=VIEWER),
        route(f"{NODES}/all", nodes.all_nodes, methods=["GET"], role=VIEWER),
        route(f"{NODES}/summary", nodes.cluster_summary, methods=["GET"], role=VIEWER),
        route(f"{NODES}/{{id}}", nodes.get_node, methods=["GET"], role=VIEWER),
        route(f"{NODES}/{{id}}", nodes.update_node, methods=["PUT"], role=OPERATOR),
        route(f"{NODES}/{{id}}", nodes.delete_node, methods=["DELETE"], role=ADMIN),
        route(f"{NODES}/{{id}}/details", nodes.node_details, methods=["GET"], role=VIEWER),
        *(r for prefix in SPACE_PREFIXES for r in _space_scoped(prefix)),
    ]

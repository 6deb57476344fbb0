"""Where Octopus's clients start: the root document and the one space.

- `GET /api`: `{Application, Version, ApiVersion, InstallationId, Links}`,
  what `Client.create` reads first;
- `GET /api/spaces[?partialName=&ids=&skip=&take=]`, `/api/spaces/all`,
  `/api/spaces/Spaces-1`: the single space, `Spaces-1`, named `Default`;
- `GET /api/Spaces-1`: the space's own root document (its links).
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import __version__
from ..errors import NotFound
from . import events, nodes, package_files, tasks
from .collections import SPACE_ID, listed, paged
from .context import context_of

APPLICATION = "octonodes"
API_VERSION = "3.0.0"
SPACE_NAME = "Default"
IN_SPACE, OUTSIDE = f"/api/{SPACE_ID}/", "/api/"
ROOT_LINKS = {
    "Self": "/api",
    "Spaces": "/api/spaces{/id}{?skip,take,ids,partialName}",
    "SpaceHome": "/api/{spaceId}",
    "OctopusServerNodes": nodes.TEMPLATE,
    "OctopusServerClusterSummary": f"{nodes.NODES}/summary",
    "OctopusServerNodePing": f"{nodes.NODES}/ping",
    "Tasks": tasks.TEMPLATE,
    "Packages": package_files.TEMPLATE.replace(IN_SPACE, OUTSIDE, 1),
    "PackageUpload": "/api/packages/raw{?overwriteMode}",
    "Events": events.TEMPLATE,
    "OpenApi": "/api/openapi.json",
}
SPACE_LINKS = {name: ROOT_LINKS[name].replace(OUTSIDE, IN_SPACE, 1)
               for name in ("Tasks", "Packages", "PackageUpload", "Events")}
"""The space-scoped resources, as the space's root document links them."""


def installation_id(database: str) -> str:
    """One id per cluster, the same from every node: derived from where its
    database is (without any password)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"octonodes:{database}"))


async def root(request: Request) -> JSONResponse:
    database = context_of(request).worker.store.display
    return JSONResponse({"Application": APPLICATION, "Version": __version__,
                         "ApiVersion": API_VERSION, "InstallationId": installation_id(database),
                         "Links": ROOT_LINKS})


def space_resource() -> dict:
    return {"Id": SPACE_ID, "Name": SPACE_NAME, "Slug": SPACE_NAME.lower(),
            "Description": "The one space of an octonodes cluster", "IsDefault": True,
            "TaskQueueStopped": False, "SpaceManagersTeams": [], "SpaceManagersTeamMembers": [],
            "Links": {"Self": f"/api/spaces/{SPACE_ID}", "SpaceHome": f"/api/{SPACE_ID}"}}


def _matches(request: Request) -> bool:
    partial = request.query_params.get("partialName", "")
    ids = listed(request, "ids")
    return partial.lower() in SPACE_NAME.lower() and (not ids or SPACE_ID in ids)


async def list_spaces(request: Request) -> JSONResponse:
    items = [space_resource()] if _matches(request) else []
    return JSONResponse(paged(request, "Space", items, ROOT_LINKS["Spaces"]))


async def all_spaces(request: Request) -> JSONResponse:
    return JSONResponse([space_resource()])


async def get_space(request: Request) -> JSONResponse:
    if request.path_params["id"] != SPACE_ID:
        raise NotFound(f"no space {request.path_params['id']!r}: the one space is {SPACE_ID}")
    return JSONResponse(space_resource())


async def space_home(request: Request) -> JSONResponse:
    return JSONResponse({"Links": {"Self": f"/api/{SPACE_ID}", **SPACE_LINKS}})

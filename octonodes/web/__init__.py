"""The Nodes page in a browser, served by every node that listens.

Server-rendered (Jinja2) pages with a vendored htmx; no build step, nothing
fetched from elsewhere. `routes()` is added to the node's HTTP app; each
route declares the role it needs (`access.page`).
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles

from ..errors import OctonodesError
from ..http.access import mount
from ..http.errors import status_for
from ..roles import Role
from . import actions, pages, signin
from .access import page
from .live import LiveViews, RenderedParts
from .templating import STATIC


class WebState:
    """What the page keeps per node process."""

    def __init__(self) -> None:
        self.views = LiveViews()
        self.parts = RenderedParts()


def _errors_shown(endpoint):
    """An error from the cluster becomes a page saying it (the CLI's words),
    with the status the REST API gives it."""

    @functools.wraps(endpoint)
    async def shown(request: Request) -> Response:
        try:
            return await endpoint(request)
        except OctonodesError as exc:
            return pages.error_page(request, status_for(exc), str(exc))

    return shown


class _Static(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update({k: v for k, v in pages.SECURITY_HEADERS.items()
                                 if k != "Cache-Control"})
        return response


def routes() -> list[BaseRoute]:
    """The page's routes, each with the role it needs (`route.role`)."""
    viewer, operator, admin = Role.VIEWER, Role.OPERATOR, Role.ADMIN
    table = [
        ("/", pages.nodes_page(), "GET", viewer, False),
        ("/live/nodes", pages.nodes_page(live=True), "GET", viewer, True),
        ("/nodes/{name}", pages.node_page(), "GET", viewer, False),
        ("/live/nodes/{name}", pages.node_page(live=True), "GET", viewer, True),
        ("/tasks", pages.tasks_page(), "GET", viewer, False),
        ("/live/tasks", pages.tasks_page(live=True), "GET", viewer, True),
        ("/tasks/{task_id}", pages.task_page(), "GET", viewer, False),
        ("/live/tasks/{task_id}", pages.task_page(live=True), "GET", viewer, True),
        ("/live/tasks/{task_id}/log", pages.task_log, "GET", viewer, True),
        ("/events", pages.events_page(), "GET", viewer, False),
        ("/live/events", pages.events_page(live=True), "GET", viewer, True),
        ("/settings", pages.settings_page, "GET", viewer, False),
        ("/nodes/{name}/drain", actions.drain, "POST", operator, False),
        ("/nodes/{name}/undrain", actions.undrain, "POST", operator, False),
        ("/nodes/{name}/cap", actions.set_cap, "POST", operator, False),
        ("/nodes/{name}/delete", actions.delete, "POST", admin, False),
        ("/tasks/{task_id}/cancel", actions.cancel, "POST", operator, False),
        ("/settings", actions.set_setting, "POST", admin, False),
        ("/signout", signin.sign_out, "POST", viewer, False),
        ("/signin", signin.sign_in_form, "GET", None, False),
        ("/signin", signin.sign_in, "POST", None, False),
    ]
    built: list[BaseRoute] = [page(path, _errors_shown(endpoint), methods=(method,), role=role,
                                   refresh=refresh)
                              for path, endpoint, method, role, refresh in table]
    return built + [mount("/static", _Static(directory=STATIC), name="static")]

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

from ..errors import DatabaseError, NotFound, OctonodesError, Refused, UsageError
from ..http.access import mount
from ..roles import Role
from . import actions, pages, signin
from .access import page
from .live import LiveViews, RenderedParts
from .templating import STATIC

ERROR_STATUS = ((NotFound, 404), (Refused, 409), (UsageError, 400), (DatabaseError, 503))
"""The HTTP status of each kind of error a page or a control meets."""


class WebState:
    """What the page keeps per node process."""

    def __init__(self) -> None:
        self.views = LiveViews()
        self.parts = RenderedParts()


def _errors_shown(endpoint):
    """An error from the cluster becomes a page saying it (the CLI's words)."""

    @functools.wraps(endpoint)
    async def shown(request: Request) -> Response:
        try:
            return await endpoint(request)
        except OctonodesError as exc:
            status = next((s for kind, s in ERROR_STATUS if isinstance(exc, kind)), 500)
            return pages.error_page(request, status, str(exc))

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

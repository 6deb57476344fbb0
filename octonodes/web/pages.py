"""The pages: each reads its view (shared by the node's open pages, see
`live`) and lays it out. A page's live part is also served under `/live`:
there it answers 204 when nothing has changed since the page's
fingerprint (`v`), else the part anew."""

from __future__ import annotations

from typing import Callable, Hashable
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..cluster import Cluster
from ..errors import UsageError
from ..http.context import context_of
from ..roles import Role, allows
from . import views
from .access import session_of
from .live import REFRESH
from .templating import render

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LIVE_PREFIX = "/live"


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def common(request: Request) -> dict:
    """What every page's frame needs: who is signed in and what they may do."""
    session = session_of(request)
    role = session.key.role
    return {"key_name": session.key.name, "role": role, "csrf_token": session.csrf_token,
            "can_operate": allows(role, Role.OPERATOR), "can_admin": allows(role, Role.ADMIN),
            "here": _page_url(request),
            "refresh_ms": int(REFRESH * 1000)}


def _page_url(request: Request) -> str:
    """The page a request is about: its own path, or for a live part the
    page it belongs to (the address a control sends the browser back to)."""
    path = request.url.path
    if path.startswith(LIVE_PREFIX + "/"):
        path = path[len(LIVE_PREFIX):]
        path = "/" if path == "/nodes" else path
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "v"])
    return f"{path}?{query}" if query else path


def _live_url(request: Request, fingerprint: str) -> str:
    path = request.url.path
    if not path.startswith(LIVE_PREFIX + "/"):
        path = LIVE_PREFIX + (path if path != "/" else "/nodes")
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "v"]
    return f"{path}?{urlencode(query + [('v', fingerprint)])}"


async def _show(request: Request, key: Hashable, load: Callable[[Cluster], views.View],
                template: str, live: bool, **values) -> Response:
    view = await request.app.state.web.views.get(context_of(request), key, load)
    if live and request.query_params.get("v") == view.fingerprint:
        return Response(status_code=204, headers=SECURITY_HEADERS)
    values.update(common(request), view=view, live_url=_live_url(request, view.fingerprint))
    if not live:
        return html(render(template, **values))
    # Every open page of a view gets the same part but for its CSRF token:
    # rendered once per change, the token put in afterwards.
    parts = request.app.state.web.parts
    token, values["csrf_token"] = values["csrf_token"], parts.placeholder
    shown = (template, view.fingerprint, values["role"], values["here"])
    part = parts.get(shown) or parts.keep(shown, render(f"live_{template}", **values))
    return html(part.replace(parts.placeholder, token))


def _states(request: Request) -> tuple[str, ...]:
    wanted = tuple(request.query_params.getlist("state"))
    unknown = [s for s in wanted if s not in views.STATE_NAMES]
    if unknown:
        raise UsageError(f"unknown task state {unknown[0]!r}; the states are: "
                         f"{', '.join(views.STATE_NAMES)}")
    return wanted


def task_id_of(request: Request) -> int:
    text = request.path_params["task_id"]
    if not text.isdigit() or len(text) > 18:
        raise UsageError(f"invalid task id {text!r}: it is a whole number")
    return int(text)


def nodes_page(live: bool = False):
    async def nodes(request: Request) -> Response:
        return await _show(request, "nodes", views.nodes_view, "nodes.html", live,
                           page_title="Nodes")
    return nodes


def node_page(live: bool = False):
    async def node(request: Request) -> Response:
        name = request.path_params["name"]
        return await _show(request, ("node", name), lambda c: views.node_view(c, name),
                           "node.html", live, page_title=f"Node {name}")
    return node


def tasks_page(live: bool = False):
    async def tasks(request: Request) -> Response:
        states, node = _states(request), request.query_params.get("node") or None
        return await _show(request, ("tasks", states, node),
                           lambda c: views.tasks_view(c, states, node), "tasks.html", live,
                           page_title="Tasks", state_names=views.STATE_NAMES)
    return tasks


def task_page(live: bool = False):
    async def task(request: Request) -> Response:
        task_id = task_id_of(request)
        log = None if live else await context_of(request).call(lambda c: views.log_part(c, task_id))
        return await _show(request, ("task", task_id), lambda c: views.task_view(c, task_id),
                           "task.html", live, page_title=f"Task {task_id}", log=log)
    return task


def events_page(live: bool = False):
    async def events(request: Request) -> Response:
        query = request.query_params
        node, action = query.get("node") or None, query.get("action") or None
        actor = (query.get("actor") or "").strip()[:200] or None
        return await _show(request, ("events", node, action, actor),
                           lambda c: views.events_view(c, node, action, actor), "events.html",
                           live, page_title="Events", action_names=views.ACTION_NAMES)
    return events


async def task_log(request: Request) -> Response:
    """New output of a task after chunk `after`, appended to the page's log;
    once the task has ended and all of it is shown, the page stops asking."""
    task_id = task_id_of(request)
    after = request.query_params.get("after", "0")
    after = int(after) if after.isdigit() and len(after) < 12 else 0
    log = await context_of(request).call(lambda c: views.log_part(c, task_id, after))
    if not log.text and not log.ended:
        return Response(status_code=204, headers=SECURITY_HEADERS)
    return html(render("log_more.html", log=log, task_id=task_id, refresh_ms=int(REFRESH * 1000)))


async def settings_page(request: Request) -> Response:
    view = await context_of(request).call(views.settings_view)
    return html(render("settings.html", view=view, page_title="Settings", **common(request)))


def error_page(request: Request, status: int, message: str) -> Response:
    values = common(request) if hasattr(request.state, "session") else {}
    referer = urlsplit(request.headers.get("referer", ""))
    back = referer.path if referer.netloc == request.url.netloc and referer.path else "/"
    return html(render("error.html", status=status, message=message, page_title="Error",
                       back=back, **values), status)

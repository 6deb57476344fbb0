"""What the page's controls do: each calls one `Cluster` method, as the key
that signed in (the audit trail's actor), with the reason given, and sends
the browser back to the page it came from. A refusal (the CLI's guards)
shows the CLI's message."""

from __future__ import annotations

from typing import Callable

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..cluster import Cluster
from ..errors import UsageError
from ..http.context import context_of
from .pages import SECURITY_HEADERS, common, html, task_id_of
from .templating import render

PROMPT_HEADER = "HX-Prompt"
"""Where htmx puts the answer to a control's prompt (the drain toggle's reason)."""


def local_path(target: str | None) -> str:
    """Where to go back to: a path on this site, never elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _reason(request: Request, form: FormData) -> str | None:
    text = form.get("reason") or request.headers.get(PROMPT_HEADER) or ""
    return str(text).strip() or None


async def _act(request: Request, change: Callable[[Cluster, str, str | None], object]) -> Response:
    form = await request.form()
    who, why = request.state.actor, _reason(request, form)
    await context_of(request).call(lambda c: change(c, who, why))
    request.app.state.web.views.forget()
    return RedirectResponse(local_path(form.get("next")), status_code=303,
                            headers=SECURITY_HEADERS)


def _cap(text: object) -> int | object:
    text = str(text or "").strip()
    return int(text) if text.lstrip("-").isdigit() and len(text) < 10 else text


async def drain(request: Request) -> Response:
    name = request.path_params["name"]
    return await _act(request, lambda c, who, why: c.drain(name, actor=who, reason=why))


async def undrain(request: Request) -> Response:
    name = request.path_params["name"]
    return await _act(request, lambda c, who, why: c.undrain(name, actor=who, reason=why))


async def set_cap(request: Request) -> Response:
    name = request.path_params["name"]
    cap = _cap((await request.form()).get("cap"))
    return await _act(request, lambda c, who, why: c.set_cap(name, cap, actor=who, reason=why))


async def delete(request: Request) -> Response:
    """Only once confirmed: the page's dialog sends `confirmed` (the node's
    name); without it (no script) a page asks first."""
    name = request.path_params["name"]
    form = await request.form()
    if form.get("confirmed") != name:
        return html(render("confirm_delete.html", name=name, page_title=f"Delete {name}?",
                           back=local_path(form.get("next")), **common(request)))
    return await _act(request, lambda c, who, why: c.delete(name, actor=who, reason=why))


async def cancel(request: Request) -> Response:
    task_id = task_id_of(request)
    return await _act(request, lambda c, who, why: c.cancel(task_id, actor=who, reason=why))


async def set_setting(request: Request) -> Response:
    form = await request.form()
    key, value = str(form.get("key") or ""), str(form.get("value") or "").strip()
    if not key:
        raise UsageError("name the setting to change")
    return await _act(request, lambda c, who, why: c.set_setting(key, value, actor=who))

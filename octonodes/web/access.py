"""Who may see and do what on the web page: every page route is built by
`page`, which checks the session cookie, the role the route needs and, on
every state-changing request, the CSRF token.

- No session (or an ended, idle or forged one): a page sends the browser to
  the sign-in page; a request made by the page itself (a refresh, a form
  sent by htmx) gets 401, with `HX-Redirect` so htmx goes there too.
- A session whose key lacks the role: 403 naming the role it would need.
- A POST without the session's CSRF token (form field `csrf_token` or
  header `X-CSRF-Token`): 403.

The session travels in a cookie that is HttpOnly, SameSite=Strict, and
Secure when the request came over TLS (directly, or as `X-Forwarded-Proto`
from a trusted proxy).
"""

from __future__ import annotations

import functools
from typing import Awaitable, Callable
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..http.access import client_address, from_trusted_proxy
from ..http.context import context_of
from ..roles import Role, allows
from ..sessions import Session

COOKIE = "octonodes_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SIGN_IN = "/signin"
SAFE_METHODS = ("GET", "HEAD")

Endpoint = Callable[[Request], Awaitable[Response]]


def over_tls(request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https" and from_trusted_proxy(request)


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(COOKIE, value, path="/", httponly=True,
                        samesite="strict", secure=over_tls(request))


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=over_tls(request))


def _signed_out(request: Request) -> Response:
    # A page's own request (htmx) names the page the browser shows: come back there.
    shown = urlsplit(request.headers.get("hx-current-url", ""))
    back = shown.path if shown.path and shown.netloc == request.url.netloc else request.url.path
    target = f"{SIGN_IN}?next={quote(back)}"
    if request.method in SAFE_METHODS and "hx-request" not in request.headers:
        return RedirectResponse(target, status_code=303)
    return Response("sign in first", status_code=401, headers={"HX-Redirect": target},
                    media_type="text/plain")


async def _csrf_token_sent(request: Request) -> str | None:
    sent = request.headers.get(CSRF_HEADER)
    if sent:
        return sent
    form = await request.form()  # starlette caches it for the endpoint
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


def session_of(request: Request) -> Session:
    """The request's session (set by `page` before the endpoint runs)."""
    return request.state.session


def page(path: str, endpoint: Endpoint, *, methods: tuple[str, ...] = ("GET",),
         role: Role | None, refresh: bool = False) -> Route:
    """A route of the web page that needs a signed-in key with `role` (None:
    open to anyone, such as the sign-in page). `refresh` marks a route the
    page calls by itself to stay live: it does not count as use of the
    session, so an open page does not keep a session alive forever."""

    if role is None:
        guarded = endpoint
    else:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            cookie = request.cookies.get(COOKIE, "")
            session = None
            if cookie:
                session = await context_of(request).call(
                    lambda c: c.sessions().check(cookie, used=not refresh))
            if session is None:
                return _signed_out(request)
            if not allows(session.key.role, role):
                return Response(f"this needs the {role} role", status_code=403,
                                media_type="text/plain")
            if request.method not in SAFE_METHODS:
                sent = await _csrf_token_sent(request)
                if not session.csrf_ok(sent):
                    return Response("the CSRF token is missing or wrong; reload the page",
                                    status_code=403, media_type="text/plain")
            request.state.session = session
            request.state.api_key = session.key
            request.state.actor = f"key {session.key.name} ({client_address(request)})"
            return await guarded.endpoint(request)

        guarded.needed_role = role  # type: ignore[attr-defined]
        guarded.endpoint = endpoint  # type: ignore[attr-defined]  (a test may swap it for a probe)
        guarded.signed_in = True  # type: ignore[attr-defined]  (a session, not an API key)

    route = Route(path, guarded, methods=list(methods))
    route.role = role
    return route

"""Signing in with an API key, and out.

The sign-in form has its own CSRF guard, as no session exists yet: a
random value in a short-lived cookie that the form must repeat (a page
elsewhere can neither read the cookie nor set it). Keys with the
`packages` role cannot sign in: they read nothing the page shows.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..http.context import context_of
from ..roles import Role
from ..sessions import same_secret
from .access import COOKIE, clear_session_cookie, over_tls, set_session_cookie
from .actions import local_path
from .pages import SECURITY_HEADERS, html
from .templating import render

SIGN_IN_COOKIE = "octonodes_signin"
SIGN_IN_FORM_LIFE = 3600
MAX_FORM = 16 * 1024
"""Bytes a sign-in form may have (a key, a token, a path)."""


def _form(request: Request, status: int = 200, message: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = html(render("signin.html", page_title="Sign in", signin_token=token,
                           next=local_path(request.query_params.get("next")), message=message),
                    status)
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=SIGN_IN_FORM_LIFE, path="/signin",
                        httponly=True, samesite="strict", secure=over_tls(request))
    return response


async def sign_in_form(request: Request) -> Response:
    return _form(request)


async def _small_form(request: Request) -> dict[str, str] | None:
    """The sign-in form's fields, read without trusting its size (anyone may
    post here); None past MAX_FORM bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def sign_in(request: Request) -> Response:
    form = await _small_form(request)
    if form is None:
        return _form(request, 413, "The sign-in form was too large.")
    sent, expected = str(form.get("signin_token") or ""), request.cookies.get(SIGN_IN_COOKIE, "")
    if not sent or not expected or not same_secret(sent, expected):
        return _form(request, 403, "The sign-in form expired; please try again.")
    key_text = str(form.get("api_key") or "").strip()

    def start(cluster):
        key = cluster.verify_api_key(key_text)
        if key is None or key.role is Role.PACKAGES:
            return key, None
        return key, cluster.sessions().start(key)

    key, cookie = await context_of(request).call(start)
    if key is None:
        return _form(request, 403, "That API key is unknown or revoked.")
    if cookie is None:
        return _form(request, 403, "Keys with the packages role cannot use the page.")
    response = RedirectResponse(local_path(str(form.get("next") or "/")), status_code=303,
                                headers=SECURITY_HEADERS)
    set_session_cookie(request, response, cookie)
    response.delete_cookie(SIGN_IN_COOKIE, path="/signin")
    return response


async def sign_out(request: Request) -> Response:
    cookie = request.cookies.get(COOKIE, "")
    await context_of(request).call(lambda c: c.sessions().end(cookie))
    response = RedirectResponse("/signin", status_code=303, headers=SECURITY_HEADERS)
    clear_session_cookie(request, response)
    return response

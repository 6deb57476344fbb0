"""API keys on requests: the `X-Octopus-ApiKey` header, as Octopus reads it.

401 without a key, 403 with one that is malformed, unknown or revoked. Each
request looks its key up (by hash) in the database, so a revocation holds
from the moment it is committed. Keys are never logged.
"""

from __future__ import annotations

import functools
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from .errors import error_response

API_KEY_HEADER = "X-Octopus-ApiKey"

Endpoint = Callable[[Request], Awaitable[Response]]


def authenticated(endpoint: Endpoint) -> Endpoint:
    """Let the request through to `endpoint` only with an active API key."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        key = request.headers.get(API_KEY_HEADER, "").strip()
        if not key:
            return error_response(401, f"an API key is required in the {API_KEY_HEADER} header "
                                       "(make one with `octonodes apikey add NAME`)")
        context = request.app.state.context
        if await context.call(lambda cluster: cluster.verify_api_key(key)) is None:
            return error_response(403, "the API key is unknown or revoked")
        return await endpoint(request)

    return guarded

"""Library errors as HTTP answers: one JSON shape, one status per error class.

The body follows Octopus: `{"ErrorMessage": "...", "Errors": ["..."]}`.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import DatabaseError, NotFound, OctonodesError, Refused, TimedOut, UsageError
from ..packages import PackageStoreUnavailable, StorageFull

log = logging.getLogger("octonodes.http")

STATUS_BY_ERROR: tuple[tuple[type[OctonodesError], int], ...] = (
    (StorageFull, 507),
    (PackageStoreUnavailable, 503),
    (UsageError, 400),
    (NotFound, 404),
    (Refused, 409),
    (TimedOut, 504),
    (DatabaseError, 503),
)
"""First match wins, so subclasses come before their bases."""


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"ErrorMessage": message, "Errors": [message]}, status_code=status,
                        headers=headers)


def status_for(exc: OctonodesError) -> int:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(exc, cls)), 500)


async def octonodes_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)  # type: ignore[arg-type]
    if status >= 500:
        log.warning("%s %s: %d %s", request.method, request.url.path, status, exc)
    return error_response(status, str(exc))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


EXCEPTION_HANDLERS = {OctonodesError: octonodes_error, HTTPException: http_error}

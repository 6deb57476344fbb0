"""`GET /api/octopusservernodes/ping`: the load balancer's health check.

No authentication, and no database: the answer comes from the worker's
`live` snapshot alone, so it stays fast while the database is locked or the
node runs at its cap.

- 503 while the node is starting, shutting down (a warm stop: it finishes
  its tasks but takes no new traffic), stopped, fenced, or when its last
  successful check-in is older than twice its check-in interval;
- 418 while drain is on (online, but out of rotation);
- 200 otherwise.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..livestate import LiveState
from ..models import derive_status, iso
from .context import context_of

UNAVAILABLE, DRAINED, OK = 503, 418, 200
NO_STORE = {"Cache-Control": "no-store"}


def is_offline(live: LiveState) -> bool:
    """The node is offline in its own view: stopped, fenced or without a
    recent check-in (which reads the clock: decide it once a request)."""
    return live.stopped or live.fenced or not live.healthy()


def ping_status(live: LiveState, offline: bool) -> int:
    if offline or live.shutting_down:
        return UNAVAILABLE
    return DRAINED if live.drain else OK


def ping_body(live: LiveState, offline: bool) -> dict:
    """The node as `octonodes list` would show it, from its own view."""
    return {
        "Id": f"OctopusServerNodes-{live.name}",
        "Name": live.name,
        "IsInMaintenanceMode": live.drain,
        "IsOffline": offline,
        "LastSeen": iso(live.last_seen),
        "MaxConcurrentTasks": live.task_cap,
        "RunningTaskCount": live.running,
        "Version": live.version,
        "Status": str(derive_status(offline=offline, drain=live.drain,
                                    shutting_down=live.shutting_down, running=live.running)),
    }


async def ping(request: Request) -> JSONResponse:
    worker = context_of(request).worker
    live = worker.live  # one frozen snapshot: read it once
    if live is None:
        return JSONResponse({"Name": worker.name, "IsOffline": True, "Status": "Starting"},
                            status_code=UNAVAILABLE, headers=NO_STORE)
    offline = is_offline(live)
    return JSONResponse(ping_body(live, offline), status_code=ping_status(live, offline),
                        headers=NO_STORE)

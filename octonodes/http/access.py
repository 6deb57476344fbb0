"""Who may call what: every route of the app is made by `route` (or `mount`),
which declares the role it needs, so the app's route list is the role table.

- `role=None`: public (the load balancer's ping, the sign-in page, static
  files, the metrics);
- otherwise the request needs an active API key whose role `allows` it
  (`octonodes.roles`): 401 without a key, 403 with a malformed, unknown or
  revoked one, 403 naming the role needed when the key's role falls short.

A key comes in the `X-Octopus-ApiKey` header, the `X-NuGet-ApiKey` header
(package pushes) or the `ApiKey` query parameter (which leaks into access
logs); other sources (a signed session) may be added to KEY_SOURCES. Each
request looks its key up (by hash) in the database, so a revocation holds
on every node from the moment it is committed. Keys are never logged.

A request let through carries `request.state.api_key` (the key's record:
`.name`, `.role`) and `request.state.actor`, `key NAME (address)`, which is
what the audit trail records of the changes it makes. The address is the
peer's, or, when the peer is one of the `trusted_proxies` (a setting), the
client that `X-Forwarded-For` names: the last address in it that is not
itself a trusted proxy. From anyone else the header is ignored, since any
client can write it. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) matches
a trusted IPv4 network as the IPv4 address it carries.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ..roles import Role, allows
from .context import context_of
from .errors import error_response

API_KEY_HEADER = "X-Octopus-ApiKey"
NUGET_KEY_HEADER = "X-NuGet-ApiKey"
API_KEY_PARAMETER = "ApiKey"
FORWARDED_FOR = "X-Forwarded-For"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Endpoint = Callable[[Request], Awaitable[Response]]


def _from_headers(request: Request) -> str | None:
    return (request.headers.get(API_KEY_HEADER) or request.headers.get(NUGET_KEY_HEADER)
            or request.query_params.get(API_KEY_PARAMETER))


KEY_SOURCES: list[Callable[[Request], str | None]] = [_from_headers]
"""Where a request's key may come from, asked in order; the first key found is used."""


def route(path: str, endpoint: Endpoint, *, methods: Iterable[str], role: Role | None,
          name: str | None = None) -> Route:
    """A Starlette route that lets a request reach `endpoint` only with a key
    whose role allows `role` (any request when `role` is None). The role is
    kept on the route as `route.role`."""
    methods = [m.upper() for m in methods]
    handler = endpoint if role is None else _guarded(
        endpoint, Role(role), read=set(methods) <= READ_METHODS)
    made = Route(path, handler, methods=methods, name=name or endpoint.__name__)
    made.role = None if role is None else Role(role)  # type: ignore[attr-defined]
    return made


def mount(path: str, app: Any, *, role: Role | None = None, name: str | None = None) -> Mount:
    """A mounted app (static files): public only, so it declares `role=None`."""
    if role is not None:
        raise ValueError("a mount is public; guard each route with `route(...)` instead")
    made = Mount(path, app=app, name=name)
    made.role = None  # type: ignore[attr-defined]
    return made


def _guarded(endpoint: Endpoint, needed: Role, *, read: bool) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        key = next((k.strip() for k in (source(request) for source in KEY_SOURCES) if k), "")
        if not key:
            return error_response(401, f"an API key is required in the {API_KEY_HEADER} header "
                                       "(make one with `octonodes apikey add NAME --role ROLE`)")
        found = await context_of(request).call(lambda cluster: cluster.verify_api_key(key))
        if found is None:
            return error_response(403, "the API key is unknown or revoked")
        if not allows(found.role, needed, read=read):
            return error_response(403, f"the API key {found.name} has the {found.role} role; "
                                       f"this needs the {needed} role")
        request.state.api_key = found
        request.state.actor = f"key {found.name} ({client_address(request)})"
        return await guarded.endpoint(request)

    guarded.needed_role = needed  # type: ignore[attr-defined]
    guarded.endpoint = endpoint  # type: ignore[attr-defined]  (a test may swap it for a probe)
    return guarded


def client_address(request: Request) -> str:
    """The client's address: the peer's, or X-Forwarded-For's from a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    trusted = _trusted_proxies(request)
    forwarded = request.headers.get(FORWARDED_FOR)
    if not forwarded or not _within(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _within(hop, trusted):
            return hop if _is_address(hop) else peer
    return peer


def from_trusted_proxy(request: Request) -> bool:
    """Whether the peer is one of the `trusted_proxies`, whose forwarding
    headers (`X-Forwarded-For`, `X-Forwarded-Proto`) may be believed."""
    return request.client is not None and _within(request.client.host, _trusted_proxies(request))


def _trusted_proxies(request: Request) -> tuple:
    settings = getattr(context_of(request).worker, "settings", None)
    return getattr(settings, "trusted_proxies", ()) or ()


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _within(address: str, networks: tuple) -> bool:
    """Whether `address` is in one of `networks`. An IPv4-mapped IPv6 address
    (`::ffff:10.0.0.1`, how a socket listening on both IPv6 and IPv4 shows an
    IPv4 peer) is also matched as the IPv4 address it carries."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    forms = (ip, mapped) if mapped else (ip,)
    return any(form in net for form in forms for net in networks if net.version == form.version)

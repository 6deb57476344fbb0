"""The web page's routes are part of the role table: each declares the role
it needs, and a probe in place of each endpoint shows that exactly the
roles `allows` says get through, with a session of the right key, and that
every state-changing request also needs the session's CSRF token."""

from __future__ import annotations

import re
from types import SimpleNamespace

from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from octonodes.http.context import HttpContext
from octonodes.http.server import build_app
from octonodes.roles import Role, allows
from octonodes.settings import ClusterSettings
from web_helpers import SESSION_COOKIE

PAGE_ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


def _concrete(path: str) -> str:
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: {"name": "node-1"}.get(m.group(1), "1"), path)


def test_every_page_route_lets_through_exactly_the_roles_it_needs(cluster):
    worker = SimpleNamespace(store=cluster.store, name="test", live=None,
                             settings=ClusterSettings())
    context = HttpContext(worker)
    app = build_app(context)
    sessions = {}
    for role in PAGE_ROLES:
        cluster.add_api_key(f"page-{role}", role)
        key = next(k for k in cluster.api_keys() if k.name == f"page-{role}")
        cookie = cluster.sessions().start(key)
        sessions[role] = (cookie, cluster.sessions().check(cookie).csrf_token)
    reached: list[str] = []

    async def probe(request):
        reached.append(request.state.actor)
        return PlainTextResponse("probe")

    pages = [r for r in app.routes if getattr(getattr(r, "endpoint", None), "signed_in", False)]
    assert len(pages) >= 15
    for r in pages:
        r.endpoint.endpoint = probe
    try:
        with TestClient(app, follow_redirects=False) as client:
            for r in pages:
                for method in sorted(r.methods - {"HEAD"}):
                    url = _concrete(r.path)
                    client.cookies.clear()
                    anonymous = client.request(method, url)
                    assert anonymous.status_code in (303, 401), (method, url)
                    for role, (cookie, csrf) in sessions.items():
                        client.cookies.set(SESSION_COOKIE, cookie)
                        reached.clear()
                        form = {"csrf_token": csrf} if method == "POST" else None
                        answer = client.request(method, url, data=form)
                        if allows(role, r.role):
                            assert answer.status_code == 200, (method, url, role, answer.text)
                            assert reached == [f"key page-{role} (testclient)"]
                        else:
                            assert answer.status_code == 403, (method, url, role)
                            assert f"this needs the {r.role} role" in answer.text
                            assert reached == []
                        if method == "POST" and allows(role, r.role):
                            reached.clear()
                            forged = client.request(method, url, data={"csrf_token": "x"})
                            assert forged.status_code == 403 and reached == []
    finally:
        context.close()

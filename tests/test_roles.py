"""Roles on API keys: every route of the app against every role."""

from __future__ import annotations

import re
import sqlite3
import warnings
from types import SimpleNamespace

import pytest
from starlette.responses import JSONResponse

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx serves
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import octonodes
from helpers import octonodes as run_cli
from octonodes.http.access import API_KEY_HEADER, NUGET_KEY_HEADER
from octonodes.http.context import HttpContext
from octonodes.http.server import build_app
from octonodes.roles import Role, allows
from octonodes.settings import ClusterSettings

KEY_ROLES = [Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.PACKAGES]


def test_the_role_ladder():
    """admin ⊃ operator ⊃ viewer; packages pushes and reads packages only."""
    table = {
        # needed:       viewer operator admin  packages(write) packages(read)
        Role.VIEWER:   (True, False, False, False, True),
        Role.OPERATOR: (True, True, False, False, True),
        Role.ADMIN:    (True, True, True, True, True),
        Role.PACKAGES: (False, False, False, True, True),
    }
    for held, expected in table.items():
        got = (allows(held, Role.VIEWER), allows(held, Role.OPERATOR), allows(held, Role.ADMIN),
               allows(held, Role.PACKAGES), allows(held, Role.PACKAGES, read=True))
        assert got == expected, held


def _app_and_keys(cluster, settings=None):
    worker = SimpleNamespace(store=cluster.store, name="test", live=None,
                             settings=settings or ClusterSettings())
    context = HttpContext(worker)
    app = build_app(context)
    keys = {role: cluster.add_api_key(f"k-{role}", role)[1] for role in KEY_ROLES}
    return app, context, keys


def _concrete(path: str) -> str:
    samples = {"name": "node-1", "space": "Spaces-1", "id": "1"}
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: samples.get(m.group(1), "1"), path)


def test_every_route_declares_its_role_and_every_role_is_checked(cluster):
    """The app's routes are the role table: a route without a declared role
    fails here; every guarded route lets exactly the roles that `allows`
    says through (to its endpoint, here a probe), 403 naming the needed role
    for the others, 401 with no key, 403 with a revoked one."""
    app, context, keys = _app_and_keys(cluster)
    _, revoked = cluster.add_api_key("gone", Role.ADMIN)
    cluster.revoke_api_key("gone")
    reached: list[str] = []

    async def probe(request):
        reached.append(request.state.actor)
        return JSONResponse({"role": str(request.state.api_key.role)})

    guarded = []
    for r in app.routes:
        assert hasattr(r, "role"), f"{getattr(r, 'path', r)} declares no role: build it with route()"
        if r.role is None:
            continue
        assert r.endpoint.needed_role == r.role, r.path
        if getattr(r.endpoint, "signed_in", False):
            continue  # the web page's, by session: tests/test_web_roles.py
        r.endpoint.endpoint = probe
        guarded.append(r)
    assert guarded, "no guarded routes"
    try:
        with TestClient(app) as client:
            for r in guarded:
                for method in sorted(r.methods - {"HEAD"}):
                    url = _concrete(r.path)
                    read = method in ("GET", "HEAD", "OPTIONS")
                    none = client.request(method, url)
                    assert none.status_code == 401, (method, url)
                    gone = client.request(method, url, headers={API_KEY_HEADER: revoked})
                    assert gone.status_code == 403 and "unknown or revoked" in gone.text
                    for role, key in keys.items():
                        reached.clear()
                        answer = client.request(method, url, headers={API_KEY_HEADER: key})
                        if allows(role, r.role, read=read):
                            assert answer.status_code == 200, (method, url, role, answer.text)
                            assert reached == [f"key k-{role} (testclient)"]
                        else:
                            assert answer.status_code == 403, (method, url, role)
                            assert f"this needs the {r.role} role" in answer.text
                            assert reached == []
    finally:
        context.close()


def test_real_endpoints_obey_the_roles(cluster):
    """Without probes: a viewer reads but cannot drain; an operator drains
    but cannot delete; a packages key cannot read the nodes."""
    from octonodes.store.base import Registration

    cluster.store.register(Registration(name="node-1", instance_id="i", host="h", pid=1,
                                        version="t", heartbeat_interval=10))
    app, context, keys = _app_and_keys(cluster)
    nodes = "/api/octopusservernodes"
    try:
        with TestClient(app) as client:
            def call(method, path, role, **kw):
                return client.request(method, nodes + path, headers={API_KEY_HEADER: keys[role]}, **kw)

            assert call("GET", "", Role.VIEWER).status_code == 200
            assert call("GET", "", Role.PACKAGES).status_code == 403
            drain = {"IsInMaintenanceMode": True, "DrainReason": "disk swap"}
            assert call("PUT", "/node-1", Role.VIEWER, json=drain).status_code == 403
            assert not cluster.node("node-1").drain
            put = call("PUT", "/node-1", Role.OPERATOR, json=drain)
            assert put.status_code == 200, put.text
            assert put.json()["DrainReason"] == "disk swap"
            node = cluster.node("node-1")
            assert node.drain and node.drained_by == "key k-operator (testclient)"
            assert call("DELETE", "/node-1", Role.OPERATOR).status_code == 403
            # The NuGet header is a key too.
            nuget = client.get(nodes, headers={NUGET_KEY_HEADER: keys[Role.VIEWER]})
            assert nuget.status_code == 200
    finally:
        context.close()


def test_a_revoked_key_is_refused_on_its_next_request(cluster):
    app, context, keys = _app_and_keys(cluster)
    headers = {API_KEY_HEADER: keys[Role.ADMIN]}
    try:
        with TestClient(app) as client:
            assert client.get("/api/octopusservernodes", headers=headers).status_code == 200
            other = octonodes.open(cluster.db)  # another process's view: the CLI's
            other.revoke_api_key(f"k-{Role.ADMIN}")
            other.close()
            assert client.get("/api/octopusservernodes", headers=headers).status_code == 403
    finally:
        context.close()


def _client_address(peer: str, forwarded: str | None = None, trusted: str = "10.0.0.0/8") -> str:
    """The client address a node derives for a request from `peer` carrying
    `X-Forwarded-For: forwarded`, with `trusted_proxies` set to `trusted`."""
    from starlette.requests import Request

    from octonodes.http.access import client_address
    from octonodes.settings import parse_proxies

    settings = ClusterSettings(trusted_proxies=parse_proxies(trusted))
    app = SimpleNamespace(state=SimpleNamespace(context=SimpleNamespace(
        worker=SimpleNamespace(settings=settings))))
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return client_address(Request({"type": "http", "client": (peer, 1234), "headers": headers,
                                    "app": app}))


def test_the_client_address_comes_from_forwarded_for_only_through_a_trusted_proxy():
    """The test client's peer is `testclient`, not an address: it is never
    trusted, so X-Forwarded-For from it is ignored; from a trusted proxy the
    last untrusted hop is the client."""
    assert _client_address("192.0.2.7", "203.0.113.9") == "192.0.2.7"  # not trusted
    assert _client_address("10.1.2.3", "203.0.113.9") == "203.0.113.9"
    assert _client_address("10.1.2.3", "198.51.100.1, 203.0.113.9, 10.9.9.9") == "203.0.113.9"
    assert _client_address("10.1.2.3", "not-an-address") == "10.1.2.3"
    assert _client_address("10.1.2.3") == "10.1.2.3"


def test_an_ipv4_mapped_peer_or_hop_matches_a_trusted_ipv4_network():
    """A socket listening on both IPv6 and IPv4 (`--listen [::]:8080`) shows
    an IPv4 peer as `::ffff:10.0.0.1`: it is the trusted 10.0.0.1 all the same."""
    assert _client_address("::ffff:10.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert _client_address("::ffff:10.0.0.1", "203.0.113.9, ::ffff:10.9.9.9") == "203.0.113.9"
    assert _client_address("::ffff:192.0.2.7", "203.0.113.9") == "::ffff:192.0.2.7"  # not trusted
    # A proxy written in its mapped form is still matched as written.
    assert _client_address("::ffff:10.0.0.1", "203.0.113.9", trusted="::ffff:10.0.0.1") == "203.0.113.9"
    # An IPv4 network does not take in IPv6 addresses that merely end alike.
    assert _client_address("2001:db8::a00:1", "203.0.113.9") == "2001:db8::a00:1"


def test_apikey_add_takes_a_role_and_list_shows_it_with_last_use(cluster):
    added = run_cli(cluster.db, "apikey", "add", "ops", "--role", "operator")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    default = run_cli(cluster.db, "apikey", "add", "look")
    assert default.returncode == 0
    [look, ops] = sorted(cluster.api_keys(), key=lambda k: k.name)
    assert (look.role, ops.role) == (Role.VIEWER, Role.OPERATOR)
    assert ops.last_used_at is None
    assert cluster.verify_api_key(key).role == Role.OPERATOR
    used = cluster.api_keys()[1].last_used_at
    assert used is not None
    cluster.verify_api_key(key)  # within the minute: not written again
    assert cluster.api_keys()[1].last_used_at == used
    listed = run_cli(cluster.db, "apikey", "list", "--json")
    docs = {d["name"]: d for d in __import__("json").loads(listed.stdout)}
    assert docs["ops"]["role"] == "operator" and docs["ops"]["last_used_at"]
    assert docs["look"]["role"] == "viewer" and docs["look"]["last_used_at"] is None
    table = run_cli(cluster.db, "apikey", "list")
    assert "operator" in table.stdout and "never" in table.stdout


def test_an_unknown_role_is_a_usage_error_listing_the_roles(cluster):
    bad = run_cli(cluster.db, "apikey", "add", "x", "--role", "root")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "Error: unknown role 'root'; the roles are: viewer, operator, admin, packages")
    assert "Traceback" not in bad.stderr
    assert cluster.api_keys() == []


@pytest.mark.only_backend("sqlite")
def test_keys_from_before_roles_become_admin_and_new_keys_stay_unknown_to_old_versions(tmp_path, backend):
    """A version 2 database's keys can still be used, as admin; keys made
    after the upgrade are stored so that an older version sharing the
    database during a rolling upgrade (which would let any key do anything)
    does not find them."""
    import hashlib

    import sqlite_utils

    from octonodes.store.sqlite_schema import MIGRATIONS

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    MIGRATIONS[1](db)
    MIGRATIONS[2](db)
    old_key = "API-" + "A" * 32
    conn.execute("INSERT INTO api_keys (name, key_hash, created_at) VALUES ('old', ?, 1.0)",
                 (hashlib.sha256(old_key.encode()).hexdigest(),))
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                     [("schema_version", "2"), ("min_compatible", "1")])
    conn.commit()
    conn.close()
    assert run_cli(str(path), "init").returncode == 0
    cluster = octonodes.open(str(path))
    try:
        assert cluster.verify_api_key(old_key).role == Role.ADMIN
        _, new_key = cluster.add_api_key("new", Role.VIEWER)
        # What a version 2 node asks: the plain hash. It finds the old key only.
        legacy = sqlite3.connect(path)
        found = [legacy.execute("SELECT name FROM api_keys WHERE key_hash = ?",
                                (hashlib.sha256(k.encode()).hexdigest(),)).fetchone()
                 for k in (old_key, new_key)]
        legacy.close()
        assert found == [("old",), None]
    finally:
        cluster.close()

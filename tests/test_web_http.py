"""The web page over plain HTTP, against a real node: sign-in, the session
cookie's flags, CSRF, the Content-Security-Policy, sign-out, forged
requests, and the live parts' "changed since" answers."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest

from conftest import BACKENDS
from helpers import octonodes, wait_until
from web_helpers import SESSION_COOKIE, csrf_token, hidden, module_cluster, sign_in

pytestmark = pytest.mark.slow

PAGES = ("/", "/nodes/node-1", "/tasks", "/tasks?state=Queued&node=node-1", "/tasks/1",
         "/settings", "/signin")


@pytest.fixture(scope="module", params=BACKENDS)
def web_cluster(request, tmp_path_factory):
    """One cluster and one listening node for the module's tests, per backend
    (each test leaves the node as it found it)."""
    for cluster, nodes, db in module_cluster(request.param, tmp_path_factory):
        cluster.add_task(["true"], name="first")
        yield cluster, nodes, db


@pytest.fixture
def web(web_cluster):
    cluster, start_node, _ = web_cluster
    node = start_node.http_node("node-1")
    _, key = cluster.add_api_key(f"web-{uuid.uuid4().hex[:8]}", role="admin")
    yield node, key
    cluster.undrain("node-1")
    cluster.set_cap("node-1", 5)


def test_pages_need_a_session(web):
    node, _ = web
    for path in PAGES[:-1]:
        answer = httpx.get(node.url + path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin?next=")
    live = httpx.get(node.url + "/live/nodes", headers={"HX-Request": "true",
                                                        "HX-Current-URL": node.url + "/tasks"})
    assert live.status_code == 401 and live.headers["HX-Redirect"] == "/signin?next=/tasks"
    post = httpx.post(node.url + "/nodes/node-1/drain", data={"csrf_token": "x"})
    assert post.status_code == 401
    assert octonodes(node.process.db, "list", "--json").stdout.count('"drain": false') == 1


def test_sign_in_sets_a_strict_http_only_cookie(web):
    node, key = web
    client = httpx.Client(base_url=node.url)
    form = client.get("/signin")
    answer = client.post("/signin", data={"signin_token": hidden(form.text, "signin_token"),
                                          "api_key": key, "next": "//evil.example/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"  # never elsewhere
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain HTTP here; see the trusted proxy test
    assert key not in cookie


def test_sign_in_refuses_bad_keys_and_forged_forms(web):
    node, key = web
    client = httpx.Client(base_url=node.url)
    form = client.get("/signin")
    token = hidden(form.text, "signin_token")
    bad = client.post("/signin", data={"signin_token": token, "api_key": "API-" + "A" * 32})
    assert bad.status_code == 403 and "unknown or revoked" in bad.text
    forged = httpx.post(node.url + "/signin", data={"signin_token": token, "api_key": key})
    assert forged.status_code == 403 and SESSION_COOKIE not in forged.headers.get("set-cookie", "")
    huge = client.post("/signin", content=b"api_key=" + b"A" * 10_000_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    assert node.ping().status_code == 200


def test_every_page_has_a_strict_content_security_policy_and_no_inline_script(web):
    node, key = web
    client = sign_in(node.url, key)
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy, policy
        assert "frame-ancestors 'none'" in policy
        for script in re.findall(r"<script[^>]*>(.*?)</script>", answer.text, re.S):
            assert script.strip() == "", (path, script)
        assert not re.search(r"\son[a-z]+=", answer.text), path  # no inline handlers
        assert not re.search(r"\sstyle=", answer.text), path
        assert "hx-on" not in answer.text and "js:" not in answer.text


def test_a_post_without_the_csrf_token_is_refused(web):
    node, key = web
    client = sign_in(node.url, key)
    for data in ({}, {"csrf_token": ""}, {"csrf_token": csrf_token(client)[:-1] + "x"}):
        answer = client.post("/nodes/node-1/drain", data={**data, "reason": "forged"})
        assert answer.status_code == 403, answer.text
    other = sign_in(node.url, key)  # another session's token is no good either
    answer = client.post("/nodes/node-1/drain", data={"csrf_token": csrf_token(other)})
    assert answer.status_code == 403
    assert node.ping().status_code == 200
    answer = client.post("/nodes/node-1/drain", headers={"X-CSRF-Token": csrf_token(client)})
    assert answer.status_code == 303
    node.wait_ping(418, timeout=2)


def test_tokens_that_are_not_ascii_are_refused_not_failed(web):
    """A forged cookie, CSRF token or sign-in token may hold any bytes."""
    node, key = web
    client = sign_in(node.url, key)
    cookie = client.cookies.get(SESSION_COOKIE)
    token = csrf_token(client)
    forged = {"Cookie": f"{SESSION_COOKIE}={cookie.partition('.')[0]}.".encode() + b"\xe9\xe9"}
    assert httpx.get(node.url + "/", headers=forged).status_code == 303
    assert httpx.post(node.url + "/nodes/node-1/drain", headers=forged,
                      data={"csrf_token": token}).status_code == 401
    assert client.post("/nodes/node-1/drain", headers={"X-CSRF-Token": b"\xe9\xe9"}).status_code == 403
    assert client.post("/nodes/node-1/drain", data={"csrf_token": "\u00e9" * 8}).status_code == 403
    other = httpx.Client(base_url=node.url)
    other.get("/signin")
    refused = other.post("/signin", data={"signin_token": "\u00e9", "api_key": key})
    assert refused.status_code == 403 and SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    assert node.ping().status_code == 200  # drain is still off


def test_after_sign_out_the_old_cookie_is_refused(web):
    node, key = web
    client = sign_in(node.url, key)
    old = client.cookies.get(SESSION_COOKIE)
    token = csrf_token(client)
    out = client.post("/signout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    replay = httpx.Client(base_url=node.url, cookies={SESSION_COOKIE: old})
    assert replay.get("/").status_code == 303
    assert replay.post("/nodes/node-1/drain", data={"csrf_token": token}).status_code == 401
    assert node.ping().status_code == 200


def test_a_live_part_answers_204_until_something_changes(web):
    node, key = web
    client = sign_in(node.url, key)
    page = client.get("/").text
    live = re.search(r'hx-get="(/live/nodes\?v=[0-9a-f]+)"', page).group(1)
    assert client.get(live).status_code == 204
    octonodes(node.process.db, "cap", "node-1", "9")
    started = time.monotonic()
    changed = wait_until(lambda: (r := client.get(live)).status_code == 200 and r, 2.5,
                         interval=0.1, message="the live part to change")
    assert time.monotonic() - started < 2
    assert re.search(r'data-label="Task cap" class="num">9<', changed.text)


def test_errors_show_the_clis_message(web):
    node, key = web
    client = sign_in(node.url, key)
    token = csrf_token(client)
    asked = client.post("/nodes/node-1/delete", data={"csrf_token": token})
    assert asked.status_code == 200 and "Delete node node-1?" in asked.text  # not yet
    refused = client.post("/nodes/node-1/delete", data={"csrf_token": token,
                                                        "confirmed": "node-1"})
    cli = octonodes(node.process.db, "delete", "node-1")
    assert cli.returncode == 4
    assert refused.status_code == 409
    message = re.search(r'id="error-message">([^<]*)<', refused.text).group(1)
    assert cli.stderr.strip() == f"Error: {message}"
    for bad in ("-1", "1001", "ten", "", "99999999999999"):
        answer = client.post("/nodes/node-1/cap", data={"csrf_token": token, "cap": bad})
        assert answer.status_code == 400 and "invalid task cap" in answer.text, bad
    assert client.post("/nodes/nobody/drain", data={"csrf_token": token}).status_code == 404
    assert client.get("/tasks/99999").status_code == 404
    assert client.get("/tasks/x1").status_code == 400
    assert client.get("/tasks?state=Sleeping").status_code == 400
    assert octonodes(node.process.db, "show", "node-1", "--json").stdout.count('"task_cap": 5') == 1


def test_a_viewer_sees_no_controls_and_its_forged_posts_are_refused(web_cluster, web):
    cluster, _, _ = web_cluster
    node, _ = web
    _, viewer_key = cluster.add_api_key(f"viewer-{uuid.uuid4().hex[:8]}", role="viewer")
    viewer = sign_in(node.url, viewer_key)
    task = cluster.add_task(["sleep", "30"], name="long")
    for path in ("/", "/nodes/node-1", "/tasks", f"/tasks/{task.id}", "/settings"):
        page = viewer.get(path).text
        actions = re.findall(r'<form method="post" action="([^"]+)"', page)
        assert actions == ["/signout"], (path, actions)
        assert 'role="switch"' not in page and "<details" not in page
    token = csrf_token(viewer)  # its own, valid token: the role is what refuses it
    for path, data in (("/nodes/node-1/drain", {"reason": "forged"}),
                       ("/nodes/node-1/undrain", {}), ("/nodes/node-1/cap", {"cap": "1"}),
                       ("/nodes/node-1/delete", {"confirmed": "node-1"}),
                       (f"/tasks/{task.id}/cancel", {}),
                       ("/settings", {"key": "offline_after", "value": "1h"})):
        answer = viewer.post(path, data={**data, "csrf_token": token})
        assert answer.status_code == 403 and "role" in answer.text, (path, answer.text)
    assert node.ping().status_code == 200
    assert cluster.task(task.id).state in ("Queued", "Executing")
    assert cluster.settings().offline_after == 3
    cluster.cancel(task.id)


def test_every_page_route_declares_its_role(web):
    from octonodes import web as web_page
    from octonodes.roles import Role

    routes = web_page.routes()
    assert all(hasattr(r, "role") for r in routes)
    public = {r.path for r in routes if r.role is None}
    assert public == {"/signin", "/static"}
    writes = [r for r in routes if "POST" in getattr(r, "methods", ()) and r.path != "/signin"]
    assert all(r.role is not None for r in writes)
    assert {r.path: r.role for r in writes if r.role is Role.ADMIN} == {
        "/nodes/{name}/delete": Role.ADMIN, "/settings": Role.ADMIN}


def test_the_cookie_is_secure_behind_a_trusted_proxy_that_says_https(web_cluster, web):
    cluster, _, _ = web_cluster
    node, key = web

    def cookie_flags(headers: dict) -> set:
        form = httpx.get(node.url + "/signin", headers=headers)
        signin_cookie = form.headers["set-cookie"].split(";")[0]  # sent back as over TLS
        answer = httpx.post(node.url + "/signin", headers={**headers, "Cookie": signin_cookie},
                            data={"signin_token": hidden(form.text, "signin_token"),
                                  "api_key": key})
        assert answer.status_code == 303, answer.text
        cookie = next(c for c in answer.headers.get_list("set-cookie")
                      if c.startswith(SESSION_COOKIE))
        return {part.strip().lower() for part in cookie.split(";")[1:]}

    claimed = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    assert "secure" not in cookie_flags(claimed)  # anyone can send the header
    cluster.set_setting("trusted_proxies", "127.0.0.1")
    try:
        wait_until(lambda: "secure" in cookie_flags(claimed), 10,
                   message="the node to take the trusted proxy setting")
        client = sign_in(node.url, key)
        client.headers.update({"X-Forwarded-For": "203.0.113.9"})
        client.post("/nodes/node-1/drain", data={"csrf_token": csrf_token(client),
                                                 "reason": "behind the proxy"})
        event = cluster.events(node="node-1", actions=["node.drain"])[0]
        assert event.actor.endswith("(203.0.113.9)") and event.reason == "behind the proxy"
    finally:
        cluster.set_setting("trusted_proxies", "")


def test_an_admin_changes_a_setting_and_the_events_page_shows_who(web_cluster, web):
    cluster, _, _ = web_cluster
    node, key = web
    client = sign_in(node.url, key)
    token = csrf_token(client, "/settings")
    bad = client.post("/settings", data={"csrf_token": token, "key": "offline_after",
                                         "value": "1s"})
    assert bad.status_code == 400 and "offline_after" in bad.text
    done = client.post("/settings", data={"csrf_token": token, "key": "task_retention",
                                          "value": "7d", "next": "/settings"})
    assert done.status_code == 303 and done.headers["location"] == "/settings"
    assert cluster.settings().task_retention == 7 * 86400
    events = client.get("/events?action=setting.set").text
    name = cluster.events(actions=["setting.set"])[0].actor
    assert name.startswith("key web-") and name in events and "7d" in events
    assert client.get("/events?action=no.such").status_code == 400
    assert client.get("/events?node=bad%20name").status_code == 400
    cluster.set_setting("task_retention", "30d")


def test_each_page_gets_its_own_csrf_token_in_a_shared_live_part(web):
    node, key = web
    first, second = sign_in(node.url, key), sign_in(node.url, key)
    tokens = [csrf_token(first), csrf_token(second)]
    assert tokens[0] != tokens[1]
    parts = [first.get("/live/nodes?v=x").text, second.get("/live/nodes?v=x").text]
    for mine, theirs, part in ((tokens[0], tokens[1], parts[0]), (tokens[1], tokens[0], parts[1])):
        assert set(re.findall(r'name="csrf_token" value="([^"]+)"', part)) == {mine}
        assert theirs not in part and "csrf-" not in part


def test_a_task_is_cancelled_from_the_tasks_page(web_cluster, web):
    cluster, _, _ = web_cluster
    node, key = web
    client = sign_in(node.url, key)
    task = cluster.add_task(["sleep", "60"], name="to cancel")
    wait_until(lambda: cluster.task(task.id).state == "Executing", 10)
    page = client.get("/tasks?state=Executing&node=node-1").text
    assert f'action="/tasks/{task.id}/cancel"' in page
    done = client.post(f"/tasks/{task.id}/cancel", data={
        "csrf_token": hidden(page, "csrf_token"), "reason": "wrong build", "next": "/tasks"})
    assert done.status_code == 303 and done.headers["location"] == "/tasks"
    ended = cluster.wait(task.id, timeout=15)
    assert ended.state == "Canceled"
    event = cluster.events(task=task.id, actions=["task.cancel"])[0]
    assert event.actor.startswith("key web-") and event.reason == "wrong build"
    after = client.get(f"/tasks/{task.id}").text
    assert f'action="/tasks/{task.id}/cancel"' not in after and "Canceled" in after

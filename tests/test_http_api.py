"""API keys (the CLI, the library, the database) and the authenticated nodes API."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import wait_status
from helpers import wait_until
from http_helpers import KEY_HEADER, NODES, start_http_node
from octonodes.cli.app import app

KEY_FORMAT = re.compile(r"^API-[A-Z0-9]{32}$")


def cli(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


# -- API keys: CLI and library ------------------------------------------------------


def test_apikey_add_prints_the_key_alone_once(cluster):
    added = cli(cluster.db, "apikey", "add", "deploy")
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert KEY_FORMAT.match(key), added.stdout
    assert added.stdout == key + "\n"
    assert "cannot be shown again" in added.stderr
    assert cluster.verify_api_key(key).name == "deploy"
    listed = cli(cluster.db, "apikey", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [doc] = json.loads(listed.stdout)
    assert doc["name"] == "deploy" and doc["revoked"] is False and doc["created_at"].endswith("Z")
    assert key not in listed.stdout
    table = cli(cluster.db, "apikey", "list")
    assert table.exit_code == 0 and "deploy" in table.stdout and key not in table.stdout


def test_keys_are_random_and_names_unique(cluster):
    keys = {cluster.add_api_key(f"k{i}")[1] for i in range(20)}
    assert len(keys) == 20 and all(KEY_FORMAT.match(k) for k in keys)
    again = cli(cluster.db, "apikey", "add", "k1")
    assert again.exit_code == 4 and "already exists" in again.stderr
    bad = cli(cluster.db, "apikey", "add", "no spaces")
    assert bad.exit_code == 2 and "invalid API key name" in bad.stderr


def test_revoke_is_immediate_and_idempotent(cluster):
    record, key = cluster.add_api_key("ci")
    first = cli(cluster.db, "apikey", "revoke", "ci")
    assert first.exit_code == 0 and first.stdout == "API key ci is revoked\n"
    assert cluster.verify_api_key(key) is None
    second = cli(cluster.db, "apikey", "revoke", "ci")
    assert second.exit_code == 0 and second.stdout == "API key ci is already revoked\n"
    unknown = cli(cluster.db, "apikey", "revoke", "nope")
    assert unknown.exit_code == 3 and "no API key named 'nope'" in unknown.stderr
    [doc] = json.loads(cli(cluster.db, "apikey", "list", "--json").stdout)
    assert doc["revoked"] is True and doc["revoked_at"]


def test_verify_refuses_what_is_not_an_active_key(cluster):
    _, key = cluster.add_api_key("ci")
    assert cluster.verify_api_key(key) is not None
    assert cluster.verify_api_key("") is None
    assert cluster.verify_api_key(key.lower()) is None
    assert cluster.verify_api_key(key + "X") is None
    assert cluster.verify_api_key("API-" + "0" * 32) is None


@pytest.mark.only_backend("sqlite")  # reads the SQLite files
def test_the_key_is_never_stored_in_clear(cluster, backend):
    import hashlib

    keys = [cluster.add_api_key(f"k{i}")[1] for i in range(3)]
    files = [p for p in Path(cluster.db).parent.iterdir() if p.name.startswith("cluster.db")]
    stored = b"".join(p.read_bytes() for p in files)
    for key in keys:
        assert key.encode() not in stored
        assert key[4:].encode() not in stored
        assert hashlib.sha256(key.encode()).hexdigest().encode() in stored  # only its hash


def test_a_version_1_database_is_upgraded_additively(tmp_path):
    """Schema version 2 adds the API keys table (3, their roles and the audit
    trail) and records that code at version 1 may still use the database (a
    rolling upgrade)."""
    import sqlite3

    import sqlite_utils

    from octonodes.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    MIGRATIONS[1](sqlite_utils.Database(conn))
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                     [("schema_version", "1"), ("min_compatible", "1")])
    conn.commit()
    conn.close()
    refused = cli(str(path), "apikey", "list")
    assert refused.exit_code == 6 and "octonodes init" in refused.stderr
    upgraded = cli(str(path), "init")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"from schema version 1 to {SCHEMA_VERSION}" in upgraded.stdout
    added = cli(str(path), "apikey", "add", "after-upgrade")
    assert added.exit_code == 0 and KEY_FORMAT.match(added.stdout.strip())
    meta = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta"))
    assert meta == {"schema_version": str(SCHEMA_VERSION), "min_compatible": "1"}


# -- the nodes API over HTTP --------------------------------------------------------


@pytest.mark.slow
def test_keys_guard_the_nodes_api(fast_cluster, start_node):
    node = start_http_node(start_node, "node-1")
    _, key = fast_cluster.add_api_key("ops", "admin")
    _, revoked = fast_cluster.add_api_key("old")
    fast_cluster.revoke_api_key("old")
    url = node.url + NODES
    missing = httpx.get(url)
    assert missing.status_code == 401, missing.text
    assert KEY_HEADER in missing.json()["ErrorMessage"]
    for wrong in ("API-" + "Z" * 32, "not-a-key", revoked):
        assert httpx.get(url, headers={KEY_HEADER: wrong}).status_code == 403, wrong
    assert httpx.get(url, headers={KEY_HEADER: key}).status_code == 200
    for method, path in (("GET", "/node-1"), ("GET", "/node-1/details"), ("PUT", "/node-1"),
                         ("DELETE", "/node-1")):
        assert httpx.request(method, url + path).status_code == 401, (method, path)
        assert httpx.request(method, url + path,
                             headers={KEY_HEADER: revoked}).status_code == 403, (method, path)
    # The ping needs no key.
    assert node.ping().status_code == 200
    # A key revoked while the node runs is refused from then on.
    fast_cluster.revoke_api_key("ops")
    assert httpx.get(url, headers={KEY_HEADER: key}).status_code == 403


@pytest.mark.slow
def test_an_ipv4_proxy_is_trusted_by_a_node_listening_on_ipv6(fast_cluster, start_node):
    """Listening on [::], a node sees an IPv4 peer as `::ffff:127.0.0.1`; a
    trusted 127.0.0.0/8 covers it, so the audit trail names the client that
    the proxy's X-Forwarded-For names."""
    fast_cluster.set_setting("trusted_proxies", "127.0.0.0/8")
    node = start_http_node(start_node, "node-1", host="[::]")
    _, key = fast_cluster.add_api_key("ops", "operator")
    changed = httpx.put(f"{node.url}{NODES}/node-1", json={"IsInMaintenanceMode": True},
                        headers={KEY_HEADER: key, "X-Forwarded-For": "203.0.113.9"})
    assert changed.status_code == 200, changed.text
    [event] = fast_cluster.events(node="node-1", actions=["node.drain"])
    assert event.actor == "key ops (203.0.113.9)"


@pytest.mark.slow
def test_nodes_list_get_details_put_delete(fast_cluster, start_node, tmp_path):
    one = start_http_node(start_node, "node-1", "--cap", "2")
    two = start_http_node(start_node, "node-2")
    _, key = fast_cluster.add_api_key("ops", "admin")
    headers = {KEY_HEADER: key}
    api = httpx.Client(base_url=one.url + NODES, headers=headers, timeout=10)

    listed = api.get(one.url + NODES).json()  # (with a trailing slash: a redirect)
    assert [n["Name"] for n in listed["Items"]] == ["node-1", "node-2"]
    assert listed["TotalResults"] == 2
    got = api.get("/node-2").json()
    assert got["Name"] == "node-2" and got["Status"] == "Running" and got["IsOffline"] is False
    assert got["MaxConcurrentTasks"] == 5 and got["IsInMaintenanceMode"] is False
    assert api.get("/node-9").status_code == 404
    assert api.get("/bad name!").status_code == 400

    # details: node-1's running tasks
    gate = tmp_path / "gate"
    fast_cluster.set_cap("node-2", 0)
    task = fast_cluster.add_task(["sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.02; done'],
                                 name="held")
    wait_until(lambda: fast_cluster.task(task.id).state == "Executing", 10, message="the task")
    details = api.get("/node-1/details").json()
    assert details["Node"]["Name"] == "node-1" and details["Node"]["RunningTaskCount"] == 1
    assert [(t["Id"], t["Name"], t["State"]) for t in details["RunningTasks"]] == \
        [(f"ServerTasks-{task.id}", "held", "Executing")]

    # PUT: drain and cap, through another node's API
    changed = api.put("/node-2", json={"IsInMaintenanceMode": True, "MaxConcurrentTasks": 9})
    assert changed.status_code == 200, changed.text
    assert changed.json()["IsInMaintenanceMode"] is True
    assert changed.json()["MaxConcurrentTasks"] == 9
    node2 = fast_cluster.node("node-2", with_tasks=False)
    assert node2.drain is True and node2.task_cap == 9
    two.wait_ping(418, timeout=2)
    # A client may send back the whole resource it read.
    resource = api.get("/node-2").json()
    resource["IsInMaintenanceMode"] = False
    assert api.put("/node-2", json=resource).status_code == 200
    two.wait_ping(200, timeout=2)
    for bad in ({"IsInMaintenanceMode": "yes"}, {"MaxConcurrentTasks": 1001},
                {"MaxConcurrentTasks": -1}, {"MaxConcurrentTasks": "3"},
                {"MaxConcurrentTasks": True}, {}, [1, 2]):
        response = api.put("/node-2", json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["ErrorMessage"]
    assert api.put("/node-2", content=b"{not json").status_code == 400
    assert api.put("/node-2", content=b"[" * 30000 + b"]" * 30000).status_code == 400
    too_big = api.put("/node-2", content=b" " * (64 * 1024 + 1))
    assert too_big.status_code == 413 and too_big.json()["ErrorMessage"]
    assert api.put("/node-9", json={"IsInMaintenanceMode": True}).status_code == 404
    assert fast_cluster.node("node-2", with_tasks=False).task_cap == 9  # nothing half-applied

    # DELETE: the CLI's guards
    online = api.delete("/node-2")
    assert online.status_code == 409 and "online" in online.json()["ErrorMessage"]
    busy = api.delete("/node-1")
    assert busy.status_code == 409
    assert api.delete("/node-9").status_code == 404
    two.process.signal(signal.SIGTERM)
    assert two.process.wait_exit(20) == 0
    wait_status(fast_cluster, "node-2", "Offline")
    assert api.delete("/node-2").status_code == 204
    assert api.get("/node-2").status_code == 404
    assert [n.name for n in fast_cluster.nodes()] == ["node-1"]
    gate.touch()
    assert fast_cluster.wait(task.id, timeout=20).state == "Success"

"""The REST API in Octopus's shape, against real nodes: the root document
and the space, collections and paging, node ids, the task API."""

from __future__ import annotations

import httpx
import pytest

from helpers import wait_until
from http_helpers import KEY_HEADER, NODES, start_http_node

pytestmark = pytest.mark.slow

ERROR_KEYS = {"ErrorMessage", "Errors"}


def client(node, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=node.url, headers={KEY_HEADER: key} if key else {}, timeout=10)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == ERROR_KEYS and body["Errors"] == [body["ErrorMessage"]], body
    for word in words:
        assert word in body["ErrorMessage"], (word, body)


def test_root_document_and_the_one_space(cluster, start_node):
    node = start_http_node(start_node, "node-1")
    _, key = cluster.add_api_key("ops", "admin")
    api = client(node, key)
    root = httpx.get(node.url + "/api").json()  # no key needed, as with Octopus
    assert root["Application"] == "octonodes" and root["Version"] and root["InstallationId"]
    assert root["Links"]["Self"] == "/api" and "Tasks" in root["Links"]
    assert httpx.get(node.url + "/api").json()["InstallationId"] == root["InstallationId"]

    spaces = api.get("/api/spaces", params={"partialName": "Def", "skip": 0,
                                            "take": 2147483647}).json()
    assert spaces["TotalResults"] == 1 and spaces["ItemType"] == "Space"
    [space] = spaces["Items"]
    assert (space["Id"], space["Name"], space["IsDefault"]) == ("Spaces-1", "Default", True)
    assert api.get("/api/spaces", params={"partialName": "Other"}).json()["TotalResults"] == 0
    assert api.get("/api/spaces/Spaces-1").json() == space
    assert api.get("/api/spaces/all").json() == [space]
    assert_error(api.get("/api/spaces/Spaces-2"), 404, "Spaces-2")
    assert "Tasks" in api.get("/api/Spaces-1").json()["Links"]
    assert_error(api.get("/api/Spaces-2/tasks"), 404)
    assert_error(httpx.get(node.url + "/api/spaces"), 401)
    assert_error(api.get("/api/projects"), 404)  # not served: Octopus's shape all the same
    assert_error(api.patch("/api/tasks"), 405)

    # The key in any of Octopus's three places.
    for how in ({"headers": {"X-NuGet-ApiKey": key}}, {"params": {"ApiKey": key}}):
        assert httpx.get(node.url + "/api/spaces", **how).status_code == 200, how
    assert_error(httpx.get(node.url + "/api/spaces", params={"ApiKey": "API-" + "X" * 32}), 403)


def test_task_collections_page_and_filter(cluster, start_node):
    node = start_http_node(start_node, "node-1", "--cap", "0")  # everything stays queued
    _, key = cluster.add_api_key("ops", "admin")
    api = client(node, key)
    added = cluster.add_tasks([["true"]] * 65)
    cluster.add_task(["true"], name="Backup nightly")
    cluster.cancel(added[0].id)
    newest_first = [f"ServerTasks-{n}" for n in range(added[-1].id + 1, added[0].id - 1, -1)]

    first = api.get("/api/tasks").json()
    assert (first["ItemType"], first["TotalResults"], first["ItemsPerPage"]) == ("ServerTask", 66, 30)
    assert (first["NumberOfPages"], first["LastPageNumber"]) == (3, 2)
    assert [t["Id"] for t in first["Items"]] == newest_first[:30]
    links = first["Links"]
    assert links["Page.Next"] == "/api/tasks?skip=30&take=30" and "Page.Previous" not in links
    assert links["Page.Last"] == "/api/tasks?skip=60&take=30"
    assert links["Page.All"] == "/api/tasks?skip=0&take=2147483647"
    last = api.get(links["Page.Last"]).json()
    assert [t["Id"] for t in last["Items"]] == newest_first[60:]
    assert "Page.Next" not in last["Links"] and last["Links"]["Page.Previous"].endswith("skip=30&take=30")
    scoped = api.get("/api/Spaces-1/tasks", params={"skip": 10, "take": 5}).json()
    assert [t["Id"] for t in scoped["Items"]] == newest_first[10:15]
    assert scoped["Links"]["Self"] == "/api/Spaces-1/tasks?skip=10&take=5"
    assert api.get("/api/tasks", params={"take": 0}).json()["Items"] == []
    assert api.get("/api/tasks", params={"skip": 1000}).json()["TotalResults"] == 66
    assert len(api.get("/api/tasks", params={"take": 2147483647}).json()["Items"]) == 66
    for bad in ({"skip": -1}, {"take": "x"}, {"take": 1.5}, {"take": 2147483648},
                {"skip": "1e3"}, {"states": "Sleeping"}, {"ids": "Tasks-1"},
                {"partialName": "a\u0000"}, {"name": "\u0000"}, {"node": "n\u0000"}):
        assert_error(api.get("/api/tasks", params=bad), 400)

    def ids(**params) -> list[str]:
        return [t["Id"] for t in api.get("/api/tasks", params={"take": 100, **params}).json()["Items"]]

    assert ids(states="Canceled") == [f"ServerTasks-{added[0].id}"]
    assert ids(states="canceled,Queued") == newest_first
    assert ids(name="Backup nightly") == [newest_first[0]]
    assert ids(partialName="NIGHT") == [newest_first[0]]
    assert ids(partialName="%") == [] and ids(partialName="_") == []
    assert ids(ids=f"ServerTasks-{added[3].id},{added[5].id},ServerTasks-999999") == \
        [f"ServerTasks-{added[5].id}", f"ServerTasks-{added[3].id}"]
    assert ids(node="node-1") == [] and ids(node="OctopusServerNodes-node-1") == []


def test_the_task_api(cluster, start_node, tmp_path):
    node = start_http_node(start_node, "node-1")
    _, key = cluster.add_api_key("ops", "admin")
    api = client(node, key)
    gate = tmp_path / "gate"

    made = api.post("/api/tasks", json={
        "Name": "greet", "Description": "say hello", "Timeout": "5m", "QueueTimeout": 600,
        "Retries": 1, "Arguments": {"Command": ["sh", "-c", "echo hello; echo oops >&2; exit 3"]}})
    assert made.status_code == 201, made.text
    task = made.json()
    assert task["Id"].startswith("ServerTasks-") and made.headers["Location"] == task["Links"]["Self"]
    assert task["Name"] == "greet" and task["Arguments"]["Timeout"] == 300
    assert task["Arguments"]["QueueTimeout"] == 600 and task["Arguments"]["Retries"] == 1
    ended = wait_until(lambda: (t := api.get(task["Links"]["Self"]).json())["IsCompleted"] and t, 20,
                       message="the task to end")
    assert (ended["State"], ended["ExitCode"], ended["FinishedSuccessfully"]) == ("Failed", 3, False)
    assert ended["HasWarningsOrErrors"] and "3" in ended["ErrorMessage"] and ended["ServerNode"] == "node-1"
    assert ended["StartTime"] and ended["CompletedTime"] and ended["Duration"]
    raw = api.get(task["Links"]["Raw"])
    assert raw.headers["content-type"].startswith("text/plain") and raw.text == "hello\noops\n"
    details = api.get(task["Links"]["Details"]).json()
    assert details["Task"]["Id"] == task["Id"] and details["Log"] == "hello\noops\n"
    assert [e["MessageText"] for e in details["ActivityLogs"][0]["LogElements"]] == ["hello", "oops"]
    assert api.get(f"/api/Spaces-1/tasks/{task['Id']}").json()["Id"] == task["Id"]
    number = task["Id"].removeprefix("ServerTasks-")
    assert api.get(f"/api/tasks/{number}").json()["Id"] == task["Id"]  # a bare number works too

    # Cancel: a running task ends Canceled; again is harmless.
    running = api.post("/api/tasks", json={"Arguments": {"Command": [
        "sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.02; done']}}).json()
    wait_until(lambda: api.get(running["Links"]["Self"]).json()["State"] == "Executing", 20,
               message="the task to start")
    cancelled = api.post(running["Links"]["Cancel"], json={})
    assert cancelled.status_code == 200 and cancelled.json()["State"] in ("Cancelling", "Canceled")
    assert cluster.wait(int(running["Id"].split("-")[1]), timeout=20).state == "Canceled"
    assert api.post(running["Links"]["Cancel"]).json()["State"] == "Canceled"

    # Bad input: 400 naming what is wrong; unknown ids 404, in Octopus's shape.
    for body, words in (
            ({"Arguments": {"Command": []}}, ["Command"]),
            ({"Arguments": {"Command": [""]}}, ["Command"]),
            ({"Arguments": {"Command": "ls -l"}}, ["Command"]),
            ({"Arguments": {"Command": ["ls", 3]}}, ["Command"]),
            ({"Arguments": {"Command": ["ls", "a\u0000b"]}}, ["NUL"]),
            ({}, ["Arguments"]),
            ({"Arguments": ["ls"]}, ["Arguments"]),
            ({"Arguments": {"Command": ["ls"], "Shell": "bash"}}, ["Shell"]),
            ({"Arguments": {"Command": ["ls"]}, "Priority": 1, "Owner": "x"}, ["Owner", "Priority"]),
            ({"Arguments": {"Command": ["ls"]}, "Retries": True}, ["Retries"]),
            ({"Arguments": {"Command": ["ls"]}, "Retries": 10**30}, ["retries"]),
            ({"Arguments": {"Command": ["ls"]}, "Timeout": "soon"}, ["Timeout"]),
            ({"Arguments": {"Command": ["ls"]}, "Timeout": -5}, ["Timeout"]),
            ({"Arguments": {"Command": ["ls"]}, "Timeout": 1e300}, ["timeout"]),
            ({"Arguments": {"Command": ["ls"]}, "SpaceId": "Spaces-2"}, ["SpaceId"])):
        assert_error(api.post("/api/tasks", json=body), 400, *words)
    assert_error(api.post("/api/tasks", content=b"[not json"), 400, "JSON")
    lone_surrogate = b'{"Arguments": {"Command": ["ls"]}, "Name": "bad \\ud800"}'
    assert_error(api.post("/api/tasks", content=lone_surrogate), 400, "Unicode")
    assert_error(api.post("/api/tasks", content=b"{" + b" " * 70000 + b"}"), 413)
    for bad in ("ServerTasks-999999", "ServerTasks-0", "ServerTasks-abc", "ServerTasks--1",
                "ServerTasks-" + "9" * 40, "Tasks-1", "%20"):
        for path in ("", "/details", "/raw"):
            assert_error(api.get(f"/api/tasks/{bad}{path}"), 404)
        assert_error(api.post(f"/api/tasks/{bad}/cancel"), 404)
    assert cluster.task_page()[0] == 2  # nothing half-made
    gate.touch()


def test_node_ids_all_summary_and_put_round_trips(fast_cluster, start_node):
    node = start_http_node(start_node, "node-1", "--cap", "0")
    _, key = fast_cluster.add_api_key("ops", "admin")
    api = client(node, key)
    fast_cluster.add_tasks([["true"]] * 3)
    oldest = fast_cluster.task_page()[1][-1].queued_at

    by_name, by_id = api.get(f"{NODES}/node-1").json(), api.get(f"{NODES}/OctopusServerNodes-node-1")
    assert by_id.json()["Id"] == by_name["Id"] == "OctopusServerNodes-node-1"
    assert by_name["Links"]["Self"] == f"{NODES}/OctopusServerNodes-node-1"
    assert api.get(by_name["Links"]["Details"]).json()["Node"]["Name"] == "node-1"
    assert [n["Id"] for n in api.get(f"{NODES}/all").json()] == ["OctopusServerNodes-node-1"]
    listed = api.get(NODES, params={"take": 1}).json()
    assert listed["TotalResults"] == 1 and listed["Items"][0]["Name"] == "node-1"
    assert_error(api.get(NODES, params={"take": -1}), 400)
    summary = api.get(f"{NODES}/summary").json()
    assert summary["QueuedTaskCount"] == 3
    assert summary["OldestQueuedTaskTime"] == oldest.isoformat().replace("+00:00", "Z")
    [entry] = summary["Nodes"]
    assert (entry["Name"], entry["Status"], entry["MaxConcurrentTasks"], entry["RunningTaskCount"]) \
        == ("node-1", "Running", 0, 0)

    # PUT takes back what GET returned, changed.
    resource = api.get(f"{NODES}/OctopusServerNodes-node-1").json()
    resource.update(IsInMaintenanceMode=True, MaxConcurrentTasks=7)
    changed = api.put(f"{NODES}/OctopusServerNodes-node-1", json=resource)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["IsInMaintenanceMode"], changed.json()["MaxConcurrentTasks"]) == (True, 7)
    assert api.get(f"{NODES}/node-1").json()["IsInMaintenanceMode"] is True
    node.wait_ping(418)
    again = api.get(f"{NODES}/node-1").json()
    again["IsInMaintenanceMode"] = False
    again["LastSeen"] = "2000-01-01T00:00:00Z"  # what moves by itself is not the client's to set
    assert api.put(f"{NODES}/node-1", json=again).json()["IsInMaintenanceMode"] is False
    for body, words in (({**again, "Colour": "red", "Zone": 1}, ["Colour", "Zone"]),
                        ({**again, "Name": "node-2"}, ["read-only", "Name"]),
                        ({**again, "Id": "OctopusServerNodes-x", "Version": "9"}, ["Id", "Version"]),
                        ({"MaxConcurrentTasks": 1001}, ["1000"])):
        assert_error(api.put(f"{NODES}/node-1", json=body), 400, *words)
    assert fast_cluster.node("node-1", with_tasks=False).task_cap == 7  # nothing half-applied
    assert_error(api.get(f"{NODES}/OctopusServerNodes-node-9"), 404)
    assert_error(api.put(f"{NODES}/OctopusServerNodes-node-9", json={"MaxConcurrentTasks": 1}), 404)
    assert_error(api.delete(f"{NODES}/OctopusServerNodes-node-1"), 409, "online")


def test_each_role_gets_what_its_routes_allow(cluster, start_node, tmp_path):
    from http_helpers import shared_package_store, upload

    shared_package_store(cluster, tmp_path)
    node = start_http_node(start_node, "node-1", "--cap", "0")
    keys = {role: cluster.add_api_key(role, role)[1]
            for role in ("viewer", "operator", "admin", "packages")}
    api = {role: client(node, key) for role, key in keys.items()}
    new_task = {"Name": "t", "Arguments": {"Command": ["true"]}}

    # packages: find the space, push and read packages; nothing else.
    assert api["packages"].get("/api/spaces?partialName=Default").json()["TotalResults"] == 1
    assert upload(node.url, keys["packages"], "Acme.1.0.0.zip", b"a").status_code == 200
    assert api["packages"].get("/api/Spaces-1/packages/packages-Acme.1.0.0/raw").content == b"a"
    assert_error(api["packages"].get("/api/tasks"), 403, "viewer")
    assert_error(api["packages"].delete("/api/packages/packages-Acme.1.0.0"), 403, "admin")
    # viewer: reads everything, changes nothing.
    assert api["viewer"].get("/api/tasks").status_code == 200
    assert api["viewer"].get("/api/packages").json()["TotalResults"] == 1
    assert_error(api["viewer"].post("/api/tasks", json=new_task), 403, "operator")
    assert_error(api["viewer"].put(f"{NODES}/node-1", json={"MaxConcurrentTasks": 1}), 403, "operator")
    assert upload(node.url, keys["viewer"], "Acme.2.0.0.zip", b"b").status_code == 403
    # operator: tasks, drain and caps; not deletes.
    made = api["operator"].post("/api/tasks", json=new_task)
    assert made.status_code == 201
    assert api["operator"].post(made.json()["Links"]["Cancel"]).json()["State"] == "Canceled"
    drained = api["operator"].put(f"{NODES}/node-1", json={"IsInMaintenanceMode": True,
                                                           "DrainReason": "kernel patch"}).json()
    assert drained["DrainReason"] == "kernel patch"
    assert drained["DrainedBy"] == "key operator (127.0.0.1)" and drained["DrainedAt"]
    assert_error(api["operator"].delete("/api/packages/packages-Acme.1.0.0"), 403, "admin")
    assert_error(api["operator"].delete(f"{NODES}/node-1"), 403, "admin")
    # admin: everything.
    assert api["admin"].delete("/api/packages/packages-Acme.1.0.0").status_code == 204
    # The changes are on the audit trail, by key.
    actors = {(str(e.action), e.actor) for e in cluster.events(limit=None)}
    for action in ("task.add", "task.cancel", "node.drain"):
        assert (action, "key operator (127.0.0.1)") in actors, actors
    assert ("package.delete", "key admin (127.0.0.1)") in actors, actors

"""`/api/events`: the audit trail in Octopus's shape, against a real node."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from http_helpers import KEY_HEADER, NODES, start_http_node

pytestmark = pytest.mark.slow


def test_events_page_filter_and_read(cluster, start_node):
    node = start_http_node(start_node, "node-1", "--cap", "0")
    keys = {role: cluster.add_api_key(f"{role}-key", role)[1] for role in ("admin", "viewer",
                                                                        "packages")}
    admin = httpx.Client(base_url=node.url, headers={KEY_HEADER: keys["admin"]}, timeout=10)
    viewer = httpx.Client(base_url=node.url, headers={KEY_HEADER: keys["viewer"]}, timeout=10)
    started = cluster.now()
    drained = admin.put(f"{NODES}/node-1", json={"IsInMaintenanceMode": True,
                                                 "DrainReason": "disk swap"})
    assert drained.status_code == 200, drained.text
    task = admin.post("/api/tasks", json={"Arguments": {"Command": ["true"]}}).json()
    admin.post(task["Links"]["Cancel"])
    cluster.undrain("node-1", actor="ops@console", reason="disk swapped")

    page = viewer.get("/api/events", params={"take": 2}).json()
    assert page["ItemType"] == "Event" and page["ItemsPerPage"] == 2
    total = page["TotalResults"]
    assert total >= 6  # key adds, node registered, drain, task add, cancel, undrain
    newest = page["Items"][0]
    assert (newest["Category"], newest["Username"], newest["Comments"]) == \
        ("node.undrain", "ops@console", "disk swapped")
    assert newest["Id"].startswith("Events-") and "OctopusServerNodes-node-1" in \
        newest["RelatedDocumentIds"]
    assert viewer.get(newest["Links"]["Self"]).json() == newest
    everything = viewer.get("/api/Spaces-1/events", params={"take": 1000}).json()["Items"]
    assert len(everything) == total
    assert [e["Id"] for e in everything] == sorted((e["Id"] for e in everything),
                                                   key=lambda i: -int(i.split("-")[1]))
    assert viewer.get("/api/events", params={"skip": 2, "take": 2}).json()["Items"] == everything[2:4]

    drain = next(e for e in everything if e["Category"] == "node.drain")
    assert drain["Username"] == "key admin-key (127.0.0.1)" and drain["Comments"] == "disk swap"

    def categories(**params) -> list[str]:
        return [e["Category"] for e in viewer.get("/api/events", params=params).json()["Items"]]

    assert categories(regarding=task["Id"]) == ["task.cancel", "task.add"]
    assert categories(regarding=f"OctopusServerNodes-node-1,{task['Id']}") == []  # both at once
    assert set(categories(regarding="OctopusServerNodes-node-1")) >= {"node.drain", "node.undrain"}
    assert categories(users="ADMIN-KEY") == ["task.cancel", "task.add", "node.drain"]
    assert categories(**{"from": started.isoformat()}) == [
        "node.undrain", "task.cancel", "task.add", "node.drain"]
    assert categories(to=(started - timedelta(days=1)).isoformat()) == []

    for bad in ({"from": "yesterday"}, {"to": "0001-01-01T00:00:00+01:00"},
                {"regarding": "Projects-1"}, {"regarding": "ServerTasks-x"},
                {"users": "a,b"}, {"take": -1}, {"users": "a\u0000"}):
        response = viewer.get("/api/events", params=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["ErrorMessage"]
    for bad in ("Events-999999", "Events-0", "Events-x", "Tasks-1", f"Events-{2**63 - 1}"):
        assert viewer.get(f"/api/events/{bad}").status_code == 404, bad
    refused = httpx.get(node.url + "/api/events", headers={KEY_HEADER: keys["packages"]})
    assert refused.status_code == 403 and "viewer" in refused.json()["ErrorMessage"]

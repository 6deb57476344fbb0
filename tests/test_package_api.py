"""The package store over HTTP: list, get, streamed download, delete, and
packages that are still being written (which do not exist yet)."""

from __future__ import annotations

import hashlib
import os
import threading

import httpx
import pytest

from helpers import wait_until
from http_helpers import KEY_HEADER, StreamedUpload, shared_package_store, start_http_node, upload

pytestmark = pytest.mark.slow

PACKAGES = "/api/Spaces-1/packages"
CHUNK = 256 * 1024


def test_list_get_download_delete(cluster, start_node, tmp_path):
    shared_package_store(cluster, tmp_path)
    node = start_http_node(start_node, "node-1")
    _, key = cluster.add_api_key("ops", "admin")
    api = httpx.Client(base_url=node.url, headers={KEY_HEADER: key}, timeout=10)
    for name, data in (("Acme.Web.1.2.3.4.zip", b"web"), ("Acme.Web.1.2.3.5.zip", b"web 5"),
                       ("Acme.Data.2.0.0-rc.1.tar.gz", b"data"), ("Tools.1.0.nupkg", b"tools")):
        pushed = upload(node.url, key, name, data)
        assert pushed.status_code == 200, pushed.text
    assert pushed.json()["Id"] == "packages-Tools.1.0"

    listed = api.get(PACKAGES).json()
    assert (listed["ItemType"], listed["TotalResults"]) == ("Package", 4)
    assert [p["Id"] for p in listed["Items"]] == [
        "packages-Acme.Data.2.0.0-rc.1", "packages-Acme.Web.1.2.3.4", "packages-Acme.Web.1.2.3.5",
        "packages-Tools.1.0"]
    web = api.get(PACKAGES, params={"filter": "acme.WEB", "skip": 1, "take": 1}).json()
    assert web["TotalResults"] == 2 and [p["Version"] for p in web["Items"]] == ["1.2.3.5"]
    assert api.get("/api/packages", params={"filter": "nothing"}).json()["Items"] == []

    got = api.get(f"{PACKAGES}/packages-Acme.Web.1.2.3.4").json()
    assert (got["PackageId"], got["Version"], got["Size"]) == ("Acme.Web", "1.2.3.4", 3)
    assert got["Sha256"] == hashlib.sha256(b"web").hexdigest()
    raw = api.get(got["Links"]["Raw"])
    assert raw.status_code == 200 and raw.content == b"web"
    assert 'filename="Acme.Web.1.2.3.4.zip"' in raw.headers["content-disposition"]

    for bad in ("Acme.Web.1.2.3.4", "packages-", "packages-Acme.Web.9", "packages-..%2F..%2Fetc",
                "packages-.Acme.Web.1.2.3.4.zip.json"):
        for suffix in ("", "/raw"):
            response = api.get(f"{PACKAGES}/{bad}{suffix}")
            assert response.status_code == 404, (bad, suffix, response.text)
            assert response.json()["ErrorMessage"]
    assert api.delete("/api/packages/packages-Acme.Web.1.2.3.4").status_code == 204
    assert api.get(f"{PACKAGES}/packages-Acme.Web.1.2.3.4").status_code == 404
    assert api.delete(f"{PACKAGES}/packages-Acme.Web.1.2.3.4").status_code == 404
    assert [p.file_name for p in cluster.packages()] == [
        "Acme.Data.2.0.0-rc.1.tar.gz", "Acme.Web.1.2.3.5.zip", "Tools.1.0.nupkg"]
    assert not [f for f in os.listdir(cluster.package_folder().path) if "1.2.3.4" in f]


def test_a_package_being_written_does_not_exist_yet(cluster, start_node, tmp_path):
    shared_package_store(cluster, tmp_path)
    node = start_http_node(start_node, "node-1")
    _, key = cluster.add_api_key("ops", "admin")
    api = httpx.Client(base_url=node.url, headers={KEY_HEADER: key}, timeout=10)
    halfway, finish = threading.Event(), threading.Event()

    def chunks():
        for i in range(16):  # 4 MiB, paused after 2 (past the first hand-off to the disk)
            if i == 8:
                halfway.set()
                finish.wait(30)
            yield b"x" * CHUNK

    streamed = StreamedUpload("Slow.1.0.0.zip", chunks(), content_length=16 * CHUNK)
    result = {}
    sender = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
        f"{node.url}{PACKAGES}/raw", headers={**streamed.headers, KEY_HEADER: key},
        content=streamed.body(), timeout=30)))
    sender.start()
    assert halfway.wait(10)
    folder = cluster.package_folder().path
    wait_until(lambda: folder.exists() and any(f.startswith(".incoming-") for f in os.listdir(folder)),
               10, message="the upload's temporary file")
    assert api.get(PACKAGES).json()["TotalResults"] == 0
    assert api.get(f"{PACKAGES}/packages-Slow.1.0.0").status_code == 404
    assert api.get(f"{PACKAGES}/packages-Slow.1.0.0/raw").status_code == 404
    finish.set()
    sender.join(30)
    assert result["r"].status_code == 200, result["r"].text
    assert api.get(f"{PACKAGES}/packages-Slow.1.0.0/raw").content == b"x" * 16 * CHUNK


def test_a_client_leaving_mid_download_leaves_the_node_healthy(cluster, start_node, tmp_path):
    shared_package_store(cluster, tmp_path)
    node = start_http_node(start_node, "node-1")
    _, key = cluster.add_api_key("ops", "admin")
    folder = cluster.package_folder().path
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "Big.1.0.0.tar", "wb") as f:  # sparse: 256 MiB of zeros, no disk used
        f.truncate(256 * 1024 * 1024)
    url = f"{node.url}{PACKAGES}/packages-Big.1.0.0/raw"
    for _ in range(3):
        with httpx.stream("GET", url, headers={KEY_HEADER: key}, timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(256 * 1024 * 1024)
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > 4 * 1024 * 1024:
                    break  # and the connection is closed, mid-body
    assert node.ping().status_code == 200
    assert httpx.get(f"{node.url}/api/octopusservernodes/node-1", headers={KEY_HEADER: key}).json()[
        "Status"] == "Running"
    digest, size = hashlib.sha256(), 0
    with httpx.stream("GET", url, headers={KEY_HEADER: key}, timeout=60) as response:
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == 256 * 1024 * 1024
    assert digest.hexdigest() == hashlib.sha256(bytes(256 * 1024 * 1024)).hexdigest()
    wait_until(lambda: not any(p.endswith("Big.1.0.0.tar") for p in open_paths(node.process.pid)),
               10, message="the node to close the package file")


def open_paths(pid: int) -> list[str]:
    """What a process has open, by path."""
    paths = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            pass
    return paths

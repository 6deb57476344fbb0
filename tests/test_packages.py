"""The package store and `POST /api/{space}/packages/raw`: names, modes,
races between nodes, interrupted and huge uploads, a full disk."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from helpers import octonodes, small_disk, wait_until
from http_helpers import (KEY_HEADER, StreamedUpload, multipart_head, shared_package_store,
                          start_http_node, upload)
from octonodes.packages.upload import WRITE_BLOCK, WRITE_BLOCKS, Incoming
from octonodes.packages import (InvalidPackageName, OverwriteMode, PackageExists, PackageFolder,
                                PackageStoreUnavailable, folder_for, parse_file_name)

MiB = 1024 * 1024
GiB = 1024 * MiB


# -- names (unit) ---------------------------------------------------------------


@pytest.mark.parametrize("file_name, package_id, version, extension", [
    ("Acme.Web.1.2.3.zip", "Acme.Web", "1.2.3", "zip"),
    ("Acme.Web2.1.0.0-beta.1.tar.gz", "Acme.Web2", "1.0.0-beta.1", "tar.gz"),
    ("Acme.1.0.0.tgz", "Acme", "1.0.0", "tgz"),
    ("acme-api_svc.10.20.30.tar", "acme-api_svc", "10.20.30", "tar"),
    ("Acme.Data.2.0.0-rc.1+build.5.tar.bz2", "Acme.Data", "2.0.0-rc.1+build.5", "tar.bz2"),
    ("Acme.Lib.3.1.4.nupkg", "Acme.Lib", "3.1.4", "nupkg"),
    ("Acme.App.0.0.1.jar", "Acme.App", "0.0.1", "jar"),
    ("Acme.App.0.0.1.ZIP", "Acme.App", "0.0.1", "zip"),
    # Versions of up to four numbers, as Octopus reads them.
    ("Acme.Web.1.2.3.4.zip", "Acme.Web", "1.2.3.4", "zip"),
    ("Acme.Web.1.2.3.4-rc.1+b7.zip", "Acme.Web", "1.2.3.4-rc.1+b7", "zip"),
    ("Acme.Web.1.2.zip", "Acme.Web", "1.2", "zip"),
    ("Acme.Web.7.nupkg", "Acme.Web", "7", "nupkg"),
    # The first run that parses wins: five numbers are not a version, four are.
    ("Acme.Web.1.2.3.4.5.zip", "Acme.Web.1", "2.3.4.5", "zip"),
    ("Acme.2024.1.0.0.zip", "Acme", "2024.1.0.0", "zip"),
])
def test_package_file_names_parse(file_name, package_id, version, extension):
    name = parse_file_name(file_name)
    assert (name.package_id, name.version, name.extension, name.file_name) == \
        (package_id, version, extension, file_name)


@pytest.mark.parametrize("file_name", [
    "", "Acme.Web.zip", "Acme.Web.latest.zip", "1.zip", "-.1.2.zip", "Acme.Web.1.2.3", "Acme.Web.1.2.3.rar",
    "Acme.Web.01.zip", "Acme.Web.1.2.3-.zip",
    "../Acme.Web.1.2.3.zip", "..", "a/Acme.Web.1.2.3.zip", "Acme\\Web.1.2.3.zip",
    "Acme..Web.1.2.3.zip", "Acme.Web.1.2.3.zip\0.zip", ".Acme.Web.1.2.3.zip",
    "/etc/Acme.Web.1.2.3.zip", "Acme Web.1.2.3.zip", "Acme.Web.1.2.3\n.zip",
    "A" * 200 + ".1.2.3.zip",
])
def test_bad_package_file_names_are_refused(file_name):
    with pytest.raises(InvalidPackageName):
        parse_file_name(file_name)


def test_where_the_store_is(tmp_path):
    assert folder_for("sqlite", "/srv/c.db", "") == Path("/srv/c.db-packages")
    assert folder_for("sqlite", "/srv/c.db", "/mnt/pkgs") == Path("/mnt/pkgs")
    assert folder_for("postgresql", "postgresql://h/db", "/mnt/pkgs") == Path("/mnt/pkgs")
    with pytest.raises(PackageStoreUnavailable, match="set package_store"):
        folder_for("postgresql", "postgresql://h/db", "")
    with pytest.raises(PackageStoreUnavailable, match="absolute"):
        folder_for("sqlite", "/srv/c.db", "pkgs")


# -- the store folder (library) -------------------------------------------------


def _store(folder: PackageFolder, file_name: str, data: bytes, mode=OverwriteMode.FAIL_IF_EXISTS):
    incoming = Incoming(folder, parse_file_name(file_name))
    try:
        incoming.write(data)
        return incoming.commit(mode)
    finally:
        incoming.discard()


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(".incoming-"))


def test_overwrite_modes_in_the_store(tmp_path):
    folder = PackageFolder(tmp_path / "pkgs")
    first, stored = _store(folder, "Acme.Web.1.2.3.zip", b"one")
    assert stored and first.sha256 == hashlib.sha256(b"one").hexdigest() and first.size == 3
    with pytest.raises(PackageExists):
        _store(folder, "Acme.Web.1.2.3.zip", b"two")
    kept, stored = _store(folder, "Acme.Web.1.2.3.zip", b"two", OverwriteMode.IGNORE_IF_EXISTS)
    assert not stored and kept.sha256 == first.sha256
    replaced, stored = _store(folder, "Acme.Web.1.2.3.zip", b"three",
                              OverwriteMode.OVERWRITE_EXISTING)
    assert stored and replaced.sha256 == hashlib.sha256(b"three").hexdigest()
    assert (folder.path / "Acme.Web.1.2.3.zip").read_bytes() == b"three"
    [listed] = folder.packages()
    assert listed.sha256 == replaced.sha256 and listed.size == 5
    assert _leftovers(folder.path) == []


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, WRITE_BLOCK - 1, WRITE_BLOCK, WRITE_BLOCK + 1,
                                  WRITE_BLOCKS * WRITE_BLOCK + 4097])
def test_every_byte_is_stored_whatever_the_sizes_it_comes_in(tmp_path, size):
    """Blocks fill, go round and end on any boundary; the unaligned tail of
    a direct write goes through the page cache."""
    data = os.urandom(size)
    sizes = random.Random(size)
    folder = PackageFolder(tmp_path / "pkgs")
    incoming = Incoming(folder, parse_file_name("Acme.Web.1.0.0.zip"))
    try:
        done = 0
        while done < size:
            step = min(size - done, sizes.choice([1, 100, 4096, 65536, 300_000, WRITE_BLOCK + 3]))
            incoming.write(data[done:done + step])
            done += step
        package, stored = incoming.commit(OverwriteMode.FAIL_IF_EXISTS)
    finally:
        incoming.discard()
    assert stored and package.size == size
    assert package.sha256 == hashlib.sha256(data).hexdigest()
    assert (folder.path / "Acme.Web.1.0.0.zip").read_bytes() == data
    assert _leftovers(folder.path) == []


def test_a_stale_or_missing_sidecar_is_not_trusted(tmp_path):
    folder = PackageFolder(tmp_path / "pkgs")
    _store(folder, "Acme.Web.1.2.3.zip", b"one")
    path = folder.path / "Acme.Web.1.2.3.zip"
    # Replaced behind the store's back (a new inode): the hash is computed again.
    replacement = folder.path / "replacement"
    replacement.write_bytes(b"changed")
    os.replace(replacement, path)
    [listed] = folder.packages()
    assert listed.sha256 == hashlib.sha256(b"changed").hexdigest()
    (folder.path / ".Acme.Web.1.2.3.zip.json").unlink()
    [listed] = folder.packages()
    assert listed.sha256 == hashlib.sha256(b"changed").hexdigest()


def test_an_absent_store_lists_nothing(tmp_path):
    assert PackageFolder(tmp_path / "never-made").packages() == []


# -- uploads through a node -----------------------------------------------------

@pytest.fixture
def key(fast_cluster, tmp_path) -> str:
    """An API key, on a cluster with a package store."""
    shared_package_store(fast_cluster, tmp_path)
    return fast_cluster.add_api_key("uploads", "packages")[1]


def _store_path(cluster) -> Path:
    return cluster.package_folder().path


@pytest.mark.slow
def test_upload_stores_the_package_with_its_sha256(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    data = os.urandom(3 * MiB + 17)
    response = upload(node.url, key, "Acme.Web.1.2.3.zip", data)
    assert response.status_code == 200, response.text
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert body["PackageId"] == "Acme.Web" and body["Version"] == "1.2.3"
    assert body["FileName"] == "Acme.Web.1.2.3.zip"
    assert body["Size"] == body["PackageSizeBytes"] == len(data)
    assert body["Sha256"] == body["Hash"] == digest
    store = _store_path(fast_cluster)
    assert (store / "Acme.Web.1.2.3.zip").read_bytes() == data
    assert _leftovers(store) == []
    listed = octonodes(fast_cluster.db, "package", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [package] = json.loads(listed.stdout)
    assert package["sha256"] == digest and package["size"] == len(data)
    assert package["package_id"] == "Acme.Web" and package["version"] == "1.2.3"


@pytest.mark.slow
def test_upload_needs_an_api_key(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    url = f"{node.url}/api/Spaces-1/packages/raw"
    files = {"file": ("Acme.Web.1.2.3.zip", b"x")}
    assert httpx.post(url, files=files).status_code == 401
    assert httpx.post(url, files=files, headers={KEY_HEADER: "API-" + "A" * 32}).status_code == 403


@pytest.mark.slow
@pytest.mark.parametrize("file_name", [
    "../Acme.Web.1.2.3.zip", "../../etc/Acme.Web.1.2.3.zip", "sub/Acme.Web.1.2.3.zip",
    "..\\Acme.Web.1.2.3.zip", "/tmp/Acme.Web.1.2.3.zip", "Acme.Web.zip", ".hidden.1.0.0.zip",
])
def test_names_that_try_to_leave_the_store_get_400(fast_cluster, start_node, key, file_name):
    node = start_http_node(start_node, "node-1")
    boundary = uuid.uuid4().hex
    body = multipart_head(file_name, boundary) + b"data" + f"\r\n--{boundary}--\r\n".encode()
    response = httpx.post(f"{node.url}/api/Spaces-1/packages/raw", content=body,
                          headers={KEY_HEADER: key,
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400, response.text
    assert "package file name" in response.json()["ErrorMessage"]
    store = _store_path(fast_cluster)
    assert not store.exists() or [p.name for p in store.iterdir()] == []
    assert node.ping().status_code == 200


@pytest.mark.slow
def test_malformed_uploads_get_400(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    url = f"{node.url}/api/Spaces-1/packages/raw"
    headers = {KEY_HEADER: key}
    not_multipart = httpx.post(url, content=b"just bytes",
                               headers={**headers, "Content-Type": "application/zip"})
    assert not_multipart.status_code == 400, not_multipart.text
    garbage = httpx.post(url, content=b"no boundary in sight\r\n\r\n",
                         headers={**headers, "Content-Type": "multipart/form-data; boundary=b1"})
    assert garbage.status_code == 400, garbage.text
    truncated = multipart_head("Acme.Web.1.2.3.zip", "b2") + b"half a file"
    cut = httpx.post(url, content=truncated,
                     headers={**headers, "Content-Type": "multipart/form-data; boundary=b2"})
    assert cut.status_code == 400, cut.text
    field_only = (b'--b3\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello'
                  b"\r\n--b3--\r\n")
    no_file = httpx.post(url, content=field_only,
                         headers={**headers, "Content-Type": "multipart/form-data; boundary=b3"})
    assert no_file.status_code == 400, no_file.text
    assert "no file part" in no_file.json()["ErrorMessage"]
    two = httpx.post(url, headers=headers, files=[("a", ("Acme.A.1.0.0.zip", b"a")),
                                                  ("b", ("Acme.B.1.0.0.zip", b"b"))])
    assert two.status_code == 400, two.text
    bad_mode = upload(node.url, key, "Acme.Web.1.2.3.zip", b"x", mode="Sometimes")
    assert bad_mode.status_code == 400, bad_mode.text
    store = _store_path(fast_cluster)
    assert not store.exists() or _leftovers(store) == []
    assert fast_cluster.packages() == []


@pytest.mark.slow
def test_overwrite_modes_over_http(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    first = upload(node.url, key, "Acme.Web.1.2.3.zip", b"first")
    assert first.status_code == 200, first.text
    again = upload(node.url, key, "Acme.Web.1.2.3.zip", b"second")
    assert again.status_code == 409, again.text
    assert "already exists" in again.json()["ErrorMessage"]
    ignored = upload(node.url, key, "Acme.Web.1.2.3.zip", b"second", mode="IgnoreIfExists")
    assert ignored.status_code == 200, ignored.text
    assert ignored.json()["Sha256"] == hashlib.sha256(b"first").hexdigest()
    replaced = upload(node.url, key, "Acme.Web.1.2.3.zip", b"third", mode="OverwriteExisting")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["Sha256"] == hashlib.sha256(b"third").hexdigest()
    [package] = fast_cluster.packages()
    assert package.sha256 == hashlib.sha256(b"third").hexdigest()
    assert _leftovers(_store_path(fast_cluster)) == []


@pytest.mark.slow
def test_two_nodes_racing_for_one_name_give_one_200_and_one_409(fast_cluster, start_node, key):
    """Both uploads are past the existence check, with their temporary files
    written, before either finishes: the atomic link decides."""
    nodes = [start_http_node(start_node, f"node-{i}") for i in (1, 2)]
    store = _store_path(fast_cluster)
    # More than a node gathers before parsing, so each has started its file
    # before the other can finish.
    first_part = 3 * MiB

    def parts(seed: bytes) -> tuple[bytes, bytes]:
        return seed * (first_part // len(seed)), seed * 1024

    both_started = threading.Event()  # once seen, for both senders

    def started() -> bool:
        if store.exists() and len(_leftovers(store)) == 2:
            both_started.set()
        return both_started.is_set()

    def chunks(seed: bytes):
        first, rest = parts(seed)
        yield first
        wait_until(started, 20, message="both uploads to have their temporary files")
        yield rest

    results: dict[str, httpx.Response] = {}
    uploads = {}
    for node in nodes:
        seed = node.name.encode() * 16
        uploads[node.name] = StreamedUpload("Acme.Web.1.2.3.zip", chunks(seed),
                                            sum(map(len, parts(seed))))

    def send(node):
        body = uploads[node.name]
        results[node.name] = httpx.post(f"{node.url}/api/Spaces-1/packages/raw",
                                        content=body.body(), timeout=60,
                                        headers={KEY_HEADER: key, **body.headers})

    threads = [threading.Thread(target=send, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 409], {k: (r.status_code, r.text) for k, r in results.items()}
    winner = next(name for name, r in results.items() if r.status_code == 200)
    [package] = fast_cluster.packages()
    assert package.sha256 == uploads[winner].sha256 == results[winner].json()["Sha256"]
    assert _leftovers(store) == []


@pytest.mark.slow
def test_an_interrupted_upload_leaves_nothing(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    store = _store_path(fast_cluster)
    boundary = uuid.uuid4().hex
    head = multipart_head("Acme.Web.1.2.3.zip", boundary)
    port = int(node.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"POST /api/Spaces-1/packages/raw HTTP/1.1\r\nHost: x\r\n"
                      f"{KEY_HEADER}: {key}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {100 * MiB}\r\n\r\n").encode() + head)
        block = b"\xa5" * MiB
        for _ in range(4):
            sock.sendall(block)
        wait_until(lambda: store.exists() and _leftovers(store), 10,
                   message="the upload's temporary file")
    # The client is gone mid-body: the node removes what it had written.
    wait_until(lambda: _leftovers(store) == [], 10, message="the temporary file to go")
    assert [p.name for p in store.iterdir()] == []
    assert node.ping().status_code == 200
    assert "abandoned" in node.process.log()


def _vm_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_1_gib_upload_streams_in_constant_memory(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    block = os.urandom(MiB)

    def chunks():
        for i in range(GiB // MiB):
            # Vary each block so a mix-up of blocks would change the hash.
            yield i.to_bytes(8, "big") + block[8:]

    body = StreamedUpload("Acme.Big.1.0.0.tar.gz", chunks(), GiB)
    started = time.monotonic()
    response = httpx.post(f"{node.url}/api/Spaces-1/packages/raw", content=body.body(),
                          headers={KEY_HEADER: key, **body.headers}, timeout=300)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert body.size == GiB
    assert response.json()["Sha256"] == body.sha256
    assert response.json()["Size"] == GiB
    peak = _vm_hwm_bytes(node.process.pid)
    print(f"\n1 GiB upload: {elapsed:.1f} s ({GiB / MiB / elapsed:.0f} MiB/s); "
          f"node peak RSS {peak / MiB:.0f} MiB")
    assert peak < 200 * 1000 * 1000, f"the node's peak RSS was {peak / MiB:.0f} MiB"
    listed = octonodes(fast_cluster.db, "package", "list", "--json")
    [package] = json.loads(listed.stdout)
    assert package["sha256"] == body.sha256 and package["size"] == GiB
    assert _leftovers(_store_path(fast_cluster)) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only): a real full disk."""
    yield from small_disk(tmp_path / "tiny", "1m")


@pytest.mark.slow
def test_a_full_disk_gives_507_and_leaves_nothing(fast_cluster, start_node, key, tiny_disk):
    fast_cluster.set_setting("package_store", str(tiny_disk / "pkgs"))
    node = start_http_node(start_node, "node-1")
    response = upload(node.url, key, "Acme.Big.1.0.0.zip", os.urandom(4 * MiB))
    assert response.status_code == 507, response.text
    assert "full" in response.json()["ErrorMessage"]
    assert list((tiny_disk / "pkgs").iterdir()) == []
    small = upload(node.url, key, "Acme.Small.1.0.0.zip", b"fits")
    assert small.status_code == 200, small.text


@pytest.mark.slow
@pytest.mark.only_backend("postgresql")  # SQLite has a default package store
def test_postgresql_without_a_package_store_answers_503(fast_cluster, start_node, backend):
    key = fast_cluster.add_api_key("uploads", "packages")[1]
    node = start_http_node(start_node, "node-1")
    response = upload(node.url, key, "Acme.Web.1.2.3.zip", b"x")
    assert response.status_code == 503, response.text
    assert "package_store" in response.json()["ErrorMessage"]


def _held_upload(node, key, file_name: str, release: threading.Event, result: dict):
    """An upload that sends 4 MiB, then waits for `release` before its last MiB."""
    def chunks():
        for _ in range(4):
            yield b"\x11" * MiB
        release.wait(30)
        yield b"\x22" * MiB

    body = StreamedUpload(file_name, chunks(), 5 * MiB)

    def send():
        try:
            result["response"] = httpx.post(f"{node.url}/api/Spaces-1/packages/raw",
                                            content=body.body(), timeout=60,
                                            headers={KEY_HEADER: key, **body.headers})
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    return thread, body


@pytest.mark.slow
def test_a_warm_stop_lets_an_upload_in_flight_finish(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    store = _store_path(fast_cluster)
    release, result = threading.Event(), {}
    thread, body = _held_upload(node, key, "Acme.Web.1.2.3.zip", release, result)
    wait_until(lambda: store.exists() and _leftovers(store), 10, message="the upload to start")
    node.process.signal(signal.SIGTERM)
    node.process.wait_log("waiting for 1 upload(s) in flight")
    assert node.process.alive()
    release.set()
    thread.join(30)
    assert result["response"].status_code == 200, result
    assert result["response"].json()["Sha256"] == body.sha256
    assert node.process.wait_exit(20) == 0
    [package] = fast_cluster.packages()
    assert package.sha256 == body.sha256
    assert _leftovers(store) == []


@pytest.mark.slow
def test_a_second_signal_cancels_an_upload_in_flight(fast_cluster, start_node, key):
    node = start_http_node(start_node, "node-1")
    store = _store_path(fast_cluster)
    release, result = threading.Event(), {}
    thread, _ = _held_upload(node, key, "Acme.Web.1.2.3.zip", release, result)
    try:
        wait_until(lambda: store.exists() and _leftovers(store), 10, message="the upload to start")
        node.process.signal(signal.SIGTERM)
        node.process.wait_log("waiting for 1 upload(s) in flight")
        node.process.signal(signal.SIGTERM)
        node.process.wait_exit(20)
    finally:
        release.set()
        thread.join(30)
    assert "response" not in result or result["response"].status_code != 200, result
    assert [p.name for p in store.iterdir()] == []

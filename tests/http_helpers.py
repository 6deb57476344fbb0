"""Helpers for tests of the nodes' HTTP API: ports, nodes that listen, and
multipart bodies built by hand (so a test can stream one of any size)."""

from __future__ import annotations

import hashlib
import socket
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

import httpx

from helpers import NodeProcess, wait_until

PING = "/api/octopusservernodes/ping"
NODES = "/api/octopusservernodes"
KEY_HEADER = "X-Octopus-ApiKey"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HttpNode:
    process: NodeProcess
    url: str

    @property
    def name(self) -> str:
        return self.process.name

    def ping(self, timeout: float = 5) -> httpx.Response:
        return httpx.get(self.url + PING, timeout=timeout)

    def ping_status(self) -> int | None:
        try:
            return self.ping().status_code
        except httpx.HTTPError:
            return None

    def wait_ping(self, status: int, timeout: float = 10) -> httpx.Response:
        wait_until(lambda: self.ping_status() == status, timeout,
                   message=f"{self.name}'s ping to answer {status}")
        return self.ping()


def start_http_node(start_node, name: str, *extra: str, env: dict | None = None,
                    host: str = "127.0.0.1") -> HttpNode:
    """A real `node run --listen 127.0.0.1:<free port>`, answering its ping
    (`host="[::]"` listens on IPv6 and IPv4; the node is still called on 127.0.0.1)."""
    port = free_port()
    process = start_node(name, "--listen", f"{host}:{port}", *extra, env=env)
    node = HttpNode(process, f"http://127.0.0.1:{port}")
    wait_until(lambda: node.ping_status() is not None, 10, message=f"{name} to answer HTTP")
    return node


def shared_package_store(cluster, tmp_path) -> None:
    """SQLite has a default package store (beside the file); PostgreSQL needs
    the setting."""
    if cluster.store.kind != "sqlite":
        cluster.set_setting("package_store", str(tmp_path / "packages"))


def multipart_head(file_name: str, boundary: str, field: str = "file") -> bytes:
    return (f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{file_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def multipart_tail(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


@dataclass
class StreamedUpload:
    """A multipart body produced on the fly; `sha256` and `size` describe the
    file part once the body has been consumed."""

    file_name: str
    chunks: Iterable[bytes]
    content_length: int | None  # of the file's bytes; None sends the body chunked
    boundary: str = ""

    def __post_init__(self) -> None:
        self.boundary = self.boundary or uuid.uuid4().hex
        self._digest = hashlib.sha256()
        self.size = 0

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.content_length is not None:
            head = multipart_head(self.file_name, self.boundary)
            tail = multipart_tail(self.boundary)
            headers["Content-Length"] = str(len(head) + self.content_length + len(tail))
        return headers

    def body(self) -> Iterator[bytes]:
        yield multipart_head(self.file_name, self.boundary)
        for chunk in self.chunks:
            self._digest.update(chunk)
            self.size += len(chunk)
            yield chunk
        yield multipart_tail(self.boundary)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def upload(url: str, key: str, file_name: str, data: bytes, *, mode: str | None = None,
           timeout: float = 60) -> httpx.Response:
    """A small upload, as any HTTP client would send it."""
    params = {"overwriteMode": mode} if mode else None
    return httpx.post(f"{url}/api/Spaces-1/packages/raw", params=params,
                      headers={KEY_HEADER: key}, files={"file": (file_name, data)},
                      timeout=timeout)

"""Benchmarks of a node's HTTP API, each against a floor measured in the same run:

5. ping under load: many keep-alive clients on `GET /api/octopusservernodes/ping`
   of a node that runs tasks at its cap, against a trivial Starlette app under
   uvicorn, with the same client;
6. upload: a package streamed through `POST /api/Spaces-1/packages/raw`, against
   the same bytes over plain loopback TCP to a process that writes them to a
   file on the same disk and fsyncs it; and the node's peak memory.

Both clients are small and written on sockets (asyncio for the pings, a
blocking socket for the uploads) so that they cost the same against the node
and against its floor, and little of the machine's two cores.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from common import (MB, MiB, Databases, Result, Sizes, cpu_ticks, free_port, new_cluster,
                    peak_rss, percentile, start_node, stop, wait_for, wait_listening)

PING = "/api/octopusservernodes/ping"
UPLOAD = "/api/Spaces-1/packages/raw"
KEY_HEADER = "X-Octopus-ApiKey"

PING_TARGET_P99_MS = 50.0
UPLOAD_TARGET_RATIO = 0.5
UPLOAD_TARGET_PEAK = 100 * MB
TASK_CAP = 5
LOAD_TASK = ["sleep", "0.5"]
"""What keeps the node at its cap while it is pinged: short, so it also keeps
claiming and starting tasks (ten a second) as a busy node does."""
LOAD_SECONDS = 300
"""How long the queue of load tasks lasts: longer than any measurement."""
UPLOAD_ROUNDS = 3
"""Uploads of each kind, alternating with the floor's; the best of each counts."""


# -- 5. ping under load -----------------------------------------------------------

FLOOR_APP = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {"Id": "OctopusServerNodes-floor", "Name": "floor", "IsInMaintenanceMode": False,
        "IsOffline": False, "LastSeen": "2025-01-01T00:00:00.000000Z",
        "MaxConcurrentTasks": 5, "RunningTaskCount": 5, "Version": "0.0.0",
        "Status": "Running"}

async def ping(request):
    return JSONResponse(BODY, headers={"Cache-Control": "no-store"})

app = Starlette(routes=[Route(sys.argv[2], ping, methods=["GET", "HEAD"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False,
            lifespan="off", server_header=False, timeout_keep_alive=5)
"""


@dataclass
class Load:
    """What the clients saw: every request's latency (seconds), the statuses,
    and the RunningTaskCount of each answer that had one."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    running: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        ms = [s * 1000 for s in self.latencies]
        return {"requests": len(ms), "p50_ms": statistics.median(ms),
                "p99_ms": percentile(ms, 99), "max_ms": max(ms),
                "requests_per_second": len(ms) / self.seconds,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


async def _get(reader, writer, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


async def _ping_load(port: int, clients: int, requests: int) -> Load:
    """`clients` keep-alive connections, each sending `requests` pings one
    after the other, all starting together once every connection is up (and
    has sent one ping, not counted)."""
    request = f"GET {PING} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    load = Load()
    bodies: list[bytes] = []
    ready = 0
    all_ready = asyncio.Event()
    go = asyncio.Event()

    async def client() -> None:
        nonlocal ready
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _get(reader, writer, request)
            ready += 1
            if ready == clients:
                all_ready.set()
            await go.wait()
            for _ in range(requests):
                started = time.perf_counter()
                status, body = await _get(reader, writer, request)
                load.latencies.append(time.perf_counter() - started)
                load.statuses[status] = load.statuses.get(status, 0) + 1
                bodies.append(body)
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    waiting = asyncio.create_task(all_ready.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not all_ready.is_set():  # a client failed before the start
        waiting.cancel()
        await asyncio.gather(*tasks)
    started = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    load.seconds = time.perf_counter() - started
    for body in bodies:  # after the clock: parsing is not the server's time
        running = json.loads(body).get("RunningTaskCount")
        if running is not None:
            load.running.append(running)
    return load


def ping_load(port: int, sizes: Sizes) -> Load:
    return asyncio.run(_ping_load(port, sizes.ping_clients, sizes.ping_requests))


def _floor_ping(sizes: Sizes) -> Load:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port), PING],
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        return ping_load(port, sizes)
    finally:
        proc.terminate()
        proc.wait(30)


def bench_ping(dbs: Databases, sizes: Sizes) -> Result:
    floor = _floor_ping(sizes)

    cluster = new_cluster(dbs, "ping")
    port = free_port()
    node = start_node(cluster.db, "node-0", "--cap", str(TASK_CAP), "--listen", f"127.0.0.1:{port}")
    try:
        wait_listening(port)
        per_task = float(LOAD_TASK[-1])
        cluster.add_tasks([LOAD_TASK] * int(TASK_CAP * LOAD_SECONDS / per_task))
        wait_for(lambda: cluster.node("node-0", with_tasks=False).tasks == TASK_CAP, 30)
        ours = ping_load(port, sizes)
        queued_after = cluster.queue_summary().queued
    finally:
        stop(node)
        cluster.close()
    if set(ours.statuses) != {200}:
        raise RuntimeError(f"the node's ping answered {ours.statuses}, not only 200")
    if queued_after == 0:
        raise RuntimeError("the load tasks ran out before the pings ended: raise LOAD_SECONDS")

    mine, base = ours.summary(), floor.summary()
    mine["running_min"], mine["running_mean"] = min(ours.running), statistics.mean(ours.running)
    p99 = mine["p99_ms"]
    figure = (f"p50 {mine['p50_ms']:.1f} ms, p99 {p99:.1f} ms; trivial app p50 "
              f"{base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms")
    return Result(f"ping, {sizes.ping_clients} clients x {sizes.ping_requests}, node at cap "
                  f"{TASK_CAP}", dbs.backend, figure, f"p99 < {PING_TARGET_P99_MS:.0f} ms",
                  p99 < PING_TARGET_P99_MS, {"node": mine, "floor": base})


# -- 6. upload ----------------------------------------------------------------------

SINK = """
import os, socket, sys

server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
buffer = bytearray(1 << 20)
view = memoryview(buffer)
total = 0
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
while n := conn.recv_into(buffer):
    written = 0
    while written < n:
        written += os.write(fd, view[written:n])
    total += n
os.fsync(fd)
os.close(fd)
conn.sendall(b"%d\\n" % total)
conn.close()
"""


class Body:
    """A multipart/form-data body of `size` bytes of file, made on the fly, one
    MiB at a time: the same bytes every time it is read."""

    def __init__(self, file_name: str, size: int, block: bytes) -> None:
        if size % MiB or len(block) != MiB:
            raise ValueError("the upload is made of whole MiB blocks")
        self.file_name = file_name
        self.size = size
        self.block = block
        self.boundary = uuid.uuid4().hex
        self.head = (f"--{self.boundary}\r\n"
                     f'Content-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    def file_chunks(self) -> Iterator[bytes]:
        for i in range(self.size // MiB):
            yield i.to_bytes(8, "big") + self.block[8:]  # each block differs

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from self.file_chunks()
        yield self.tail

    @property
    def length(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.file_chunks():
            digest.update(chunk)
        return digest.hexdigest()


def _send(port: int, preamble: bytes, body: Body, *, half_close: bool) -> tuple[float, bytes]:
    """Connect, send the preamble and the body (then half-close: the floor's
    end of the body; uvicorn takes a half-close for a disconnect), read the
    answer to its end. Returns the seconds from connecting to the answer, and it."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if preamble:
            sock.sendall(preamble)
        for chunk in body.chunks():
            sock.sendall(chunk)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = bytearray()
        while data := sock.recv(65536):
            answer += data
    return time.perf_counter() - started, bytes(answer)


def _floor_upload(dbs: Databases, body: Body) -> float:
    path = dbs.tmp / f"floor-{uuid.uuid4().hex}"
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(path)], stdout=subprocess.PIPE)
    try:
        port = int(sink.stdout.readline())
        seconds, answer = _send(port, b"", body, half_close=True)
        if int(answer) != body.length:
            raise RuntimeError(f"the floor's sink wrote {answer!r} bytes, not {body.length}")
        return seconds
    finally:
        sink.wait(30)
        path.unlink(missing_ok=True)


def _node_upload(port: int, key: str, body: Body, sha256: str) -> float:
    preamble = (f"POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"{KEY_HEADER}: {key}\r\n"
                f"Content-Type: multipart/form-data; boundary={body.boundary}\r\n"
                f"Content-Length: {body.length}\r\nConnection: close\r\n\r\n").encode()
    seconds, answer = _send(port, preamble, body, half_close=False)
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if status != 200:
        raise RuntimeError(f"the upload answered {status}: {payload[:300]!r}")
    package = json.loads(payload)
    if package["Size"] != body.size or package["Sha256"] != sha256:
        raise RuntimeError(f"the node stored {package['Size']} bytes with SHA-256 "
                           f"{package['Sha256']}, not {body.size} with {sha256}")
    return seconds


def bench_upload(dbs: Databases, sizes: Sizes) -> Result:
    cluster = new_cluster(dbs, "upload")
    store = dbs.package_store(cluster)
    _, key = cluster.add_api_key("bench", "packages")
    port = free_port()
    node = start_node(cluster.db, "node-0", "--cap", "0", "--listen", f"127.0.0.1:{port}")
    try:
        wait_listening(port)
        peak_before = peak_rss(node.pid)
        floor_times, node_times, node_cpu = [], [], []
        block = os.urandom(MiB)  # the same file every round: one hash
        started = time.perf_counter()
        sha256 = Body("Bench.Upload.1.0.0.tar.gz", sizes.upload_bytes, block).sha256()
        sha256_rate = sizes.upload_bytes / (time.perf_counter() - started) / MB
        for round_ in range(UPLOAD_ROUNDS):
            body = Body(f"Bench.Upload.1.0.{round_}.tar.gz", sizes.upload_bytes, block)
            floor_times.append(_floor_upload(dbs, body))
            ticks = cpu_ticks(node.pid)
            node_times.append(_node_upload(port, key, body, sha256))
            node_cpu.append((cpu_ticks(node.pid) - ticks) / os.sysconf("SC_CLK_TCK"))
            (store / body.file_name).unlink()  # keep the disk as the floor found it
        peak = peak_rss(node.pid)
    finally:
        stop(node)
        cluster.close()
    floor_rate = sizes.upload_bytes / min(floor_times) / MB
    node_rate = sizes.upload_bytes / min(node_times) / MB
    ratio = node_rate / floor_rate
    met = ratio >= UPLOAD_TARGET_RATIO and peak < UPLOAD_TARGET_PEAK
    size = (f"{sizes.upload_bytes // (1024 * MiB)} GiB" if sizes.upload_bytes >= 1024 * MiB
            else f"{sizes.upload_bytes // MiB} MiB")
    return Result(f"upload, {size} package", dbs.backend,
                  f"{node_rate:.0f} MB/s vs floor {floor_rate:.0f} MB/s = {ratio:.2f}; "
                  f"node peak RSS {peak / MB:.0f} MB",
                  f">= {UPLOAD_TARGET_RATIO} of the floor, peak < {UPLOAD_TARGET_PEAK / MB:.0f} MB",
                  met, {"mb_per_s": node_rate, "floor_mb_per_s": floor_rate, "ratio": ratio,
                        "seconds": node_times, "floor_seconds": floor_times,
                        "node_cpu_seconds": node_cpu,
                        "peak_rss_mb": peak / MB, "peak_rss_before_mb": peak_before / MB,
                        "sha256_alone_mb_per_s": sha256_rate})


"""7. ping with open pages: the load balancer's pings of a node at its cap
while 20 web pages are open on it, each asking every second whether what it
shows has changed, as the page's htmx does (`GET /live/...?v=FINGERPRINT`
with the page's session; 204 when nothing changed, else the part anew).
Half the pages show the Nodes page, half the tasks page (which changes
with every task that starts or ends, so its answers are full renders).

The pages are simulated over HTTP, in a thread of their own, rather than
opened in twenty browsers: what the node pays is the same requests, and
twenty Chromium tabs would take the machine's two cores from the node.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx

from common import (Databases, Result, Sizes, free_port, new_cluster, start_node, stop, wait_for,
                    wait_listening)
from http_bench import LOAD_SECONDS, LOAD_TASK, PING_TARGET_P99_MS, TASK_CAP, Load, ping_load

PAGES = 20
PAGE_PATHS = ("/live/nodes", "/live/tasks")
REFRESH = 1.0
"""As the page's own (octonodes.web.live.REFRESH)."""
MEASURE_SECONDS = 10.0
"""Ping rounds go on until this long has passed, so every page asks ~10 times."""
SESSION_COOKIE = "octonodes_session"


def _session(url: str, key: str) -> str:
    """Sign in as a browser does; the session cookie's value."""
    with httpx.Client(base_url=url, timeout=30) as client:
        form = client.get("/signin").text
        token = re.search(r'name="signin_token" value="([^"]+)"', form).group(1)
        answer = client.post("/signin", data={"signin_token": token, "api_key": key})
        if answer.status_code != 303:
            raise RuntimeError(f"sign-in answered {answer.status_code}: {answer.text[:200]}")
        return client.cookies[SESSION_COOKIE]


class Pages:
    """PAGES open pages asking every REFRESH s, until `stop`; their latencies."""

    def __init__(self, port: int, cookies: list[str]) -> None:
        self.port, self.cookies = port, cookies
        self.load = Load()
        self.full = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _page(self, index: int) -> None:
        path = PAGE_PATHS[index % len(PAGE_PATHS)]
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        fingerprint = ""
        await asyncio.sleep(REFRESH * index / PAGES)  # pages opened at different moments
        try:
            while not self._stop.is_set():
                request = (f"GET {path}?v={fingerprint} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Cookie: {SESSION_COOKIE}={self.cookies[index]}\r\n"
                           "HX-Request: true\r\n\r\n").encode()
                started = time.perf_counter()
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                status = int(head.split()[1])
                length = re.search(r"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                self.load.latencies.append(time.perf_counter() - started)
                self.load.statuses[status] = self.load.statuses.get(status, 0) + 1
                if status == 200:
                    self.full += 1
                    fingerprint = re.search(rb"\?v=([0-9a-f]+)", body).group(1).decode()
                await asyncio.sleep(REFRESH)
        finally:
            writer.close()

    async def _run(self) -> None:
        started = time.perf_counter()
        await asyncio.gather(*(self._page(i) for i in range(PAGES)))
        self.load.seconds = time.perf_counter() - started

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> Load:
        self._stop.set()
        self._thread.join(30)
        return self.load


def bench_ping_pages(dbs: Databases, sizes: Sizes) -> Result:
    cluster = new_cluster(dbs, "ping_pages")
    _, key = cluster.add_api_key("bench-pages")
    port = free_port()
    node = start_node(cluster.db, "node-0", "--cap", str(TASK_CAP), "--listen", f"127.0.0.1:{port}")
    try:
        wait_listening(port)
        url = f"http://127.0.0.1:{port}"
        cluster.add_tasks([LOAD_TASK] * int(TASK_CAP * LOAD_SECONDS / float(LOAD_TASK[-1])))
        wait_for(lambda: cluster.node("node-0", with_tasks=False).tasks == TASK_CAP, 30)
        pages = Pages(port, [_session(url, key) for _ in range(PAGES)])
        pages.start()
        time.sleep(REFRESH * 2)  # every page has loaded and asks on its own rhythm
        pings = Load()
        started = time.perf_counter()
        while time.perf_counter() - started < MEASURE_SECONDS:
            round_ = ping_load(port, sizes)
            pings.latencies += round_.latencies
            for status, count in round_.statuses.items():
                pings.statuses[status] = pings.statuses.get(status, 0) + count
        pings.seconds = time.perf_counter() - started
        asked = pages.stop()
    finally:
        stop(node)
        cluster.close()
    if set(pings.statuses) != {200}:
        raise RuntimeError(f"the node's ping answered {pings.statuses}, not only 200")
    if set(asked.statuses) - {200, 204}:
        raise RuntimeError(f"the pages were answered {asked.statuses}")
    mine, seen = pings.summary(), asked.summary()
    seen["full_answers"] = pages.full
    p99 = mine["p99_ms"]
    figure = (f"ping p99 {p99:.1f} ms (p50 {mine['p50_ms']:.1f} ms, {mine['requests']} pings); "
              f"pages' asks p50 {seen['p50_ms']:.1f} ms, p99 {seen['p99_ms']:.1f} ms "
              f"({seen['requests']} asks, {pages.full} changed)")
    return Result(f"ping with {PAGES} open pages, {sizes.ping_clients} clients, node at cap "
                  f"{TASK_CAP}", dbs.backend, figure, f"p99 < {PING_TARGET_P99_MS:.0f} ms",
                  p99 < PING_TARGET_P99_MS,
                  {"ping": mine, "pages": seen, "pages_open": PAGES})

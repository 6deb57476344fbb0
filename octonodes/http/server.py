"""The node's HTTP server: a Starlette app served by uvicorn in a background
thread, so the node's loop and its two-stage SIGTERM/SIGINT handling keep
the main thread (uvicorn captures signals only in the main thread, so in
this one it leaves them to the node).

`start_server` binds the socket itself, in the caller's thread, so a taken
port fails at once with one clear line (CannotListen, exit 2); the bound
socket then queues connections until uvicorn serves them.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import sys
import threading
import time

import uvicorn
from starlette.applications import Starlette

from .. import web
from ..errors import CannotListen
from ..node.shutdown import Shutdown
from .access import route
from .api import api_routes
from .context import HttpContext
from .errors import EXCEPTION_HANDLERS
from .metrics import metrics_endpoint
from .nodes import NODES
from .ping import ping

log = logging.getLogger("octonodes.http")

BACKLOG = 1024
STOP_GRACE = 5.0
"""When the node ends other than by a warm stop, how long requests in flight
(an upload) may take before they are cancelled."""
KEEP_ALIVE = 5.0
"""Idle keep-alive connections are closed after this many seconds."""
MALLOC_MMAP_THRESHOLD = 1024 * 1024
MALLOC_TRIM_THRESHOLD = 8 * 1024 * 1024
"""See `_keep_freed_buffers`: bytes."""


def build_app(context: HttpContext) -> Starlette:
    # The role table: what each route needs (octonodes.roles; None is public).
    routes = [
        route(f"{NODES}/ping", ping, methods=["GET", "HEAD"], role=None),
        *api_routes(),
        route("/metrics", metrics_endpoint(context), methods=["GET"], role=None),
        *web.routes(),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    app.state.context = context
    app.state.web = web.WebState()
    return app


def _listening_socket(family: int, host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on
    # sockets that say they are TCP, and with Nagle on every response waits
    # ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        return sock
    except BaseException:
        sock.close()
        raise


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        return _listening_socket(family, host, port)
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    except OSError as exc:
        reason = {
            errno.EADDRINUSE: "the address is already in use (another process listens there)",
            errno.EADDRNOTAVAIL: "that is not an address of this host",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
        }.get(exc.errno, exc.strerror or str(exc))
        raise CannotListen(f"cannot listen on {where}: {reason}") from None


def _keep_freed_buffers() -> None:
    """An upload arrives in 256 KiB reads (asyncio's), each copied a few
    times on its way to the package store. glibc serves blocks that size
    with mmap, or trims the thread's heap once they are freed, so every
    read faulted in fresh pages: a third of the node's CPU on a 1 GiB
    upload (bench/run.py --only upload). Blocks up to 1 MiB come from the
    heap instead, and up to 8 MiB of freed heap is kept for the next read.
    Elsewhere than glibc, nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
    mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)


def _route_uvicorn_logs() -> None:
    """uvicorn's own warnings and errors go to the node's log; its chatter does not."""
    ours = logging.getLogger("octonodes")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = list(ours.handlers)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _event_loop_factory():
    """uvloop's event loop (libuv) where it is installed, as it is on Linux
    and macOS: reading a large upload off the socket costs the loop
    markedly less than with asyncio's own, which serves elsewhere."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class NodeServer:
    """The running server; `stop()` ends it (and waits for its thread)."""

    def __init__(self, worker, sock: socket.socket, address: str) -> None:
        self.address = address
        self.context = HttpContext(worker)
        # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For and
        # -Proto from 127.0.0.1; the `trusted_proxies` setting alone decides.
        config = uvicorn.Config(
            build_app(self.context), log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=None, timeout_keep_alive=KEEP_ALIVE, server_header=False,
            proxy_headers=False)
        self._sock = sock
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="octonodes-http", daemon=True)

    def _serve(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[self._sock]))
        except BaseException:  # the node keeps running; its health check will show it
            log.exception("the HTTP server on %s stopped with an error", self.address)

    def start(self) -> None:
        self._thread.start()
        log.info("HTTP API listening on http://%s", self.address)

    def stop(self) -> None:
        """Stop serving: accept nothing more. After a warm stop, requests in
        flight (an upload) may finish, as running tasks do; a second stop
        signal cancels them, and so does any other end of the node, after
        STOP_GRACE. A cancelled upload leaves no temporary file."""
        worker = self.context.worker
        self._server.should_exit = True
        deadline = None
        if worker.exit_code != 0 or worker.stop.state is not Shutdown.WARM:
            deadline = time.monotonic() + STOP_GRACE
        told = False
        while self._thread.is_alive():
            if deadline is None and worker.stop.cold:
                deadline = time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                break
            uploads = len(self.context.uploads())
            if uploads and not told:
                log.info("waiting for %d upload(s) in flight (signal again to cancel them)", uploads)
                told = True
            self._thread.join(0.1)  # short: the signal handler runs in this thread
        if self._thread.is_alive():
            if self.context.uploads():
                log.warning("cancelling %d upload(s) in flight", len(self.context.uploads()))
            self._server.force_exit = True
            self._thread.join(STOP_GRACE)
        for pending in self.context.uploads():  # the server thread did not get to them
            pending.abandon()
        self.context.close()
        self._sock.close()


def start_server(worker, address: tuple[str, int]) -> NodeServer:
    """Serve the node's HTTP API at (host, port) until `stop()`; CannotListen
    if the address cannot be bound."""
    host, port = address
    sock = _bind(host, port)
    _route_uvicorn_logs()
    _keep_freed_buffers()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = NodeServer(worker, sock, shown)
    server.start()
    return server

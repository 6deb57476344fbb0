"""`octonodes node run`: wire a store, a worker, signals and (optionally) HTTP."""

from __future__ import annotations

import logging
import sys

from . import nodelog
from .errors import UsageError
from .execute import close_inherited, mute_child_exits
from .store import open_store
from .node.liveness import WORKER_BUSY_TIMEOUT
from .node.loop import Worker

log = logging.getLogger("octonodes.node")

SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the interpreter lock while another waits for it."""


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid --listen {listen!r}: write it as HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def run_node(db: str | None, *, name: str, cap: int | None, listen: str | None,
             log_format: str = "text") -> int:
    """Run a node until it is stopped; returns the exit code."""
    address = parse_listen(listen) if listen else None
    # The loop shares the interpreter with the HTTP server's thread (and,
    # on PostgreSQL, the LISTEN thread): a short switch interval lets a ping
    # in soon while the loop is busy, and gives the loop the lock back soon.
    sys.setswitchinterval(SWITCH_INTERVAL)
    close_inherited()  # before anything of ours is open: tasks inherit none of it
    mute_child_exits()  # before any thread starts, so that all of them inherit it
    nodelog.setup(name, log_format)
    store = open_store(db, create=True, application_name=f"octonodes node {name}")
    store.prepare_for_node()
    store.set_lock_wait(WORKER_BUSY_TIMEOUT)
    worker = Worker(store, name, cap=cap,
                    http_address=f"{address[0]}:{address[1]}" if address else None)
    worker.install_signal_handlers()
    server = None
    if address:
        from .http.server import start_server

        # Bound before registering, so a taken port fails without leaving the
        # name registered; until start() the ping answers 503.
        server = start_server(worker, address)
    try:
        worker.start()
        return worker.run()
    finally:
        if server is not None:
            server.stop()
        store.close()

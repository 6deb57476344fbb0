"""A node's name: the host's lock on it, and its registration in the database.

On one host a live `node run` holds a lock file for its name, so a second
process with the same name is refused, and a holder that died is known to
be gone (the registration may then take its row over at once).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from .. import __version__
from ..errors import Refused
from ..models import Node
from ..store import Store
from ..store.base import Registered, Registration

log = logging.getLogger("octonodes.node")


def lock_path(store: Store, name: str) -> Path:
    """The lock file a live node holds for its name on this host."""
    if store.kind == "sqlite":
        base = Path(store.display + "-locks")
    else:
        import hashlib
        import tempfile

        digest = hashlib.sha256(store.display.encode()).hexdigest()[:16]
        base = Path(tempfile.gettempdir()) / f"octonodes-{os.getuid()}" / digest
    return base / f"{name}.lock"


def take_name(store: Store, name: str):
    """This host's lock for the name (a held `FileLock`); Refused if a live
    process holds it."""
    from filelock import FileLock, Timeout

    path = lock_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        node = _peek(store, name)
        holder = (f"pid {node.pid} on {node.host}, last seen {node.last_seen:%Y-%m-%d %H:%M:%S} UTC"
                  if node else "another process on this host")
        raise Refused(f"node {name} is held by a live process: {holder}") from None
    return lock


def _peek(store: Store, name: str) -> Node | None:
    try:
        return store.node(name)
    except Exception:
        return None


def register(store: Store, lock, *, name: str, instance_id: str, heartbeat_interval: float,
             cap: int | None, http_address: str | None) -> Registered:
    """Register this process under the name whose lock it holds; the lock
    is released if registering fails."""
    try:
        return store.register(Registration(
            name=name, instance_id=instance_id, host=socket.gethostname(), pid=os.getpid(),
            version=__version__, heartbeat_interval=heartbeat_interval,
            task_cap=cap, http_address=http_address, holder_gone=True))
    except BaseException:
        lock.release()
        raise


def announce(store: Store, registered: Registered, instance_id: str) -> None:
    """Log what registering did; "started" comes last, once the node is ready."""
    node = registered.node
    if registered.took_over:
        log.warning("took over node %s from instance %s", node.name, registered.took_over)
    if registered.ended_tasks:
        log.warning("ended tasks left by the previous process: %s",
                    ", ".join(map(str, registered.ended_tasks)))
    log.info("node %s started (instance %s, pid %d, cap %d, drain %s, database %s)",
             node.name, instance_id[:8], os.getpid(), node.task_cap,
             "on" if node.drain else "off", store.display)


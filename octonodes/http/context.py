"""What the HTTP handlers share: the node's worker, and one database
connection per thread.

The node's loop runs in the main thread and owns its store connection, and a
SQLite connection cannot be shared across threads, so a handler that needs
the database uses `cluster()`: a connection of its own, opened on first use
in each of the server's worker threads and kept for the next request there.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable, TypeVar

from starlette.concurrency import run_in_threadpool

from ..cluster import Cluster

T = TypeVar("T")

HTTP_LOCK_WAIT = 5.0
"""How long a request waits for another writer's lock before it answers 503."""


class HttpContext:
    def __init__(self, worker) -> None:
        self.worker = worker
        self._local = threading.local()
        self._uploads_lock = threading.Lock()
        self._uploads: set = set()

    def upload_started(self, upload) -> None:
        with self._uploads_lock:
            self._uploads.add(upload)

    def upload_ended(self, upload) -> None:
        with self._uploads_lock:
            self._uploads.discard(upload)

    def uploads(self) -> list:
        """Uploads in flight (their `PackageTarget`s), from any thread."""
        with self._uploads_lock:
            return list(self._uploads)

    def cluster(self) -> Cluster:
        """This thread's connection to the cluster's database."""
        cluster = getattr(self._local, "cluster", None)
        if cluster is None:
            store = self.worker.store.reopen()
            store.set_lock_wait(HTTP_LOCK_WAIT)
            cluster = self._local.cluster = Cluster(store)
        return cluster

    async def call(self, fn: Callable[[Cluster], T]) -> T:
        """Run `fn(cluster)` in a worker thread, off the event loop."""
        return await run_in_threadpool(lambda: fn(self.cluster()))


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC, as the CLI's --json writes it."""
    return value.isoformat().replace("+00:00", "Z") if value else None

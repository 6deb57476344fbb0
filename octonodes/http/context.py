"""What the HTTP handlers share: the node's worker, and its database threads.

The node's loop runs in the main thread and owns its store connection, and a
SQLite connection cannot be shared across threads, so handlers that need the
database run on a small pool of threads of their own (`call`), each with a
connection opened on first use and kept. The pool's size bounds the
connections a node opens for its API, which matters with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from starlette.requests import Request

from ..cluster import Cluster

T = TypeVar("T")

HTTP_LOCK_WAIT = 5.0
"""How long a request waits for another writer's lock before it answers 503."""
DB_THREADS = 2
"""Threads (so connections) serving the API's database work, per node."""


class HttpContext:
    def __init__(self, worker) -> None:
        self.worker = worker
        self._local = threading.local()
        self._uploads_lock = threading.Lock()
        self._uploads: set = set()
        self._db_threads = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="http-db")

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
        """This thread's connection to the cluster's database (call it only
        on the database threads: through `call` or `run`)."""
        cluster = getattr(self._local, "cluster", None)
        if cluster is None:
            store = self.worker.store.reopen()
            store.set_lock_wait(HTTP_LOCK_WAIT)
            cluster = self._local.cluster = Cluster(store)
        return cluster

    async def call(self, fn: Callable[[Cluster], T]) -> T:
        """Run `fn(cluster)` on a database thread, off the event loop."""
        return await self.run(lambda: fn(self.cluster()))

    def call_blocking(self, fn: Callable[[Cluster], T]) -> T:
        """`call` from a thread that is not the event loop's (a worker thread
        of Starlette's), waiting for the answer."""
        return self._db_threads.submit(lambda: fn(self.cluster())).result()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn()` on a database thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._db_threads, fn)

    def close(self) -> None:
        self._db_threads.shutdown(wait=False)


def context_of(request: Request) -> HttpContext:
    """The `HttpContext` of the node serving `request` (the app keeps it in its state)."""
    return request.app.state.context



"""Views shared by every open page of a node: each is read from the
database at most once per `FRESH` seconds however many pages ask for it,
so twenty open pages cost the database no more than one, and the event
loop (which answers the ping) a few small renders a second."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Callable, Hashable

from ..cluster import Cluster
from .views import View

FRESH = 0.5
"""Seconds a view read from the database is shown before it is read again.
Pages ask every `REFRESH` s, so a change shows within FRESH + REFRESH."""
REFRESH = 1.0
"""Seconds between an open page's questions ("changed since?")."""
KEPT = 256
"""Views kept at most (pages of many tasks, filters): the oldest go first."""


class LiveViews:
    def __init__(self) -> None:
        self._views: dict[Hashable, tuple[float, View]] = {}
        self._loading: dict[Hashable, asyncio.Future] = {}

    async def get(self, context, key: Hashable, load: Callable[[Cluster], View]) -> View:
        """The view `key`, read by `load` unless it was read less than FRESH s
        ago; concurrent askers share one read (and its error, if any)."""
        kept = self._views.get(key)
        if kept is not None and time.monotonic() - kept[0] < FRESH:
            return kept[1]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(context.call(load))
            self._loading[key] = pending
            pending.add_done_callback(lambda _: self._loading.pop(key, None))
            pending.add_done_callback(lambda done: self._keep(key, done))
        return await asyncio.shield(pending)

    def _keep(self, key: Hashable, done: asyncio.Future) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        self._views.pop(key, None)
        self._views[key] = (time.monotonic(), done.result())
        while len(self._views) > KEPT:
            self._views.pop(next(iter(self._views)))

    def forget(self) -> None:
        """After a change made here: the next ask reads afresh."""
        self._views.clear()


class RenderedParts:
    """The live parts last rendered, by (template, fingerprint, role, page),
    with `placeholder` where each page's own CSRF token goes."""

    def __init__(self) -> None:
        self.placeholder = f"csrf-{secrets.token_hex(16)}"
        self._parts: dict[Hashable, str] = {}

    def get(self, key: Hashable) -> str | None:
        return self._parts.get(key)

    def keep(self, key: Hashable, part: str) -> str:
        self._parts[key] = part
        while len(self._parts) > KEPT:
            self._parts.pop(next(iter(self._parts)))
        return part

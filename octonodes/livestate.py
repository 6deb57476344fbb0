"""What a node knows about itself, for its HTTP API to read without the database."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import __version__


@dataclass(frozen=True)
class LiveState:
    """What the node knows about itself, for its HTTP API to read without the
    database. Replaced whole on every change, so readers see one snapshot."""

    name: str
    instance_id: str
    task_cap: int
    drain: bool
    running: int
    heartbeat_interval: float
    last_check_in: float | None  # monotonic time of the last successful check-in
    last_seen: object = None  # datetime of the last successful check-in
    shutting_down: bool = False
    fenced: bool = False
    stopped: bool = False
    version: str = __version__
    running_tasks: tuple = field(default=())

    def healthy(self, now: float | None = None) -> bool:
        """Reaching the database: a check-in within twice the interval."""
        now = time.monotonic() if now is None else now
        return (self.last_check_in is not None
                and now - self.last_check_in <= 2 * self.heartbeat_interval)

"""The node loop's two clocks, injected so that a test can move them by hand.

Monotonic time measures intervals and deadlines; `CLOCK_BOOTTIME` (which
counts the time a suspended host slept) measures the fence and the
watchdog's lease. The store's `now()` (a third clock, for what is stored) is
the store's own.
"""

from __future__ import annotations

import time
from typing import Protocol

from ..watchdog import boottime


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds, for intervals and deadlines."""

    def boottime(self) -> float:
        """Seconds on the clock the fence and the watchdog's lease use."""


class SystemClock:
    """The host's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def boottime(self) -> float:
        return boottime()


SYSTEM_CLOCK = SystemClock()

"""The node loop's one wait: its wake-up pipe, the store's change
notifications and the pipes and processes of the tasks it runs."""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING

from .waker import discard_pending

if TYPE_CHECKING:
    from .execute import TaskRun

EXIT_POLL = 0.05
"""Without pidfds (not Linux), how often the loop looks whether a task's
first process has ended."""


class TaskEvents:
    """The node loop's one wait: its wake-up pipe, the store's change
    notifications (when the loop wants them), and the pipes and processes of
    the tasks it runs, whose events it hands to their `TaskRun`.

    Straight on epoll (poll where there is none: the same calls, the timeout
    in ms): each task registers and unregisters two descriptors, and the
    `selectors` module's bookkeeping would cost the loop more than the
    system calls do."""

    def __init__(self, wake_fd: int) -> None:
        if hasattr(select, "epoll"):
            self._poller, self._read, self._unit = select.epoll(), select.EPOLLIN, 1.0
        else:
            self._poller, self._read, self._unit = select.poll(), select.POLLIN, 1000.0
        self._runs: dict[int, TaskRun | None] = {}  # None: the wake-up or change descriptor
        self._wake_fd = wake_fd
        self.register(wake_fd, None)
        self._change_fd: int | None = None
        self.polled: set["TaskRun"] = set()  # runs whose end is looked for, not notified

    def register(self, fd: int, run: "TaskRun | None") -> None:
        self._poller.register(fd, self._read)
        self._runs[fd] = run

    def unregister(self, fd: int) -> None:
        self._poller.unregister(fd)
        del self._runs[fd]

    def wait(self, timeout: float, change_fd: int | None = None) -> None:
        """Until something is ready or `timeout` passes; hand task events on."""
        if change_fd != self._change_fd:
            if self._change_fd is not None:
                self.unregister(self._change_fd)
            if change_fd is not None:
                self.register(change_fd, None)
            self._change_fd = change_fd
        if self.polled:
            timeout = min(timeout, EXIT_POLL)
        try:
            ready = self._poller.poll(max(0.0, timeout) * self._unit)
        except InterruptedError:
            ready = []
        now = time.monotonic()
        runs = self._runs
        for fd, _ in ready:
            run = runs.get(fd)  # None too for one unregistered by an earlier handler
            if run is not None:
                run.on_ready(fd, now)
            elif fd == self._wake_fd:
                discard_pending(fd)
        for run in list(self.polled):
            run.poll_exit(now)

    def close(self) -> None:
        if hasattr(self._poller, "close"):
            self._poller.close()

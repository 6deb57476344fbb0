"""Wakes a node's loop at once, without polling."""

from __future__ import annotations

import os
import select


class Waker:
    """Wakes the loop at once: from a signal handler, a task's output reader,
    or the store's change notifications. A self-pipe, so one `select` waits on
    all of them without polling."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        try:
            os.write(self._write, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or closing

    def wait(self, timeout: float, extra_fd: int | None = None) -> None:
        fds = [self._read] if extra_fd is None else [self._read, extra_fd]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if self._read in ready:
            try:
                while os.read(self._read, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)

"""Wakes a node's loop at once, without polling."""

from __future__ import annotations

import os


class Waker:
    """Wakes the loop at once: from a signal handler or another thread. A
    self-pipe, so the loop's one wait (`TaskEvents`) sees it beside the
    tasks' pipes and the store's notifications."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        try:
            os.write(self._write, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or closing

    def fileno(self) -> int:
        """The end to wait on."""
        return self._read

    def clear(self) -> None:
        """Consume the wake-ups so far, so the next wait blocks again."""
        discard_pending(self._read)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def discard_pending(fd: int) -> None:
    """Read a non-blocking descriptor until it is empty."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:  # BlockingIOError: empty
        pass

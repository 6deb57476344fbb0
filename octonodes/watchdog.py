"""Tasks die with their node, however the node dies.

A node starts one small watchdog process and tells it, over a pipe, the
process group of each task it starts and ends (once a turn of its loop,
before it waits: a node killed in the same turn as a start, a fraction of a
millisecond, leaves that one task to run on). When the node dies (even by
SIGKILL) the kernel closes the pipe; the watchdog reads end-of-file and
SIGKILLs every task group still listed, children and grandchildren alike.

This costs a node one process for its lifetime, instead of an extra exec (or
a Python `preexec_fn`, which forces a slow fork) for every task, as a
parent-death signal would; and it reaches a task's whole process group, where
a parent-death signal reaches only the task's first process.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from typing import Callable

log = logging.getLogger("octonodes.node")

# Runs with `python -I -S -c`: no site-packages, no octonodes, a quick start.
WATCHDOG_PROGRAM = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    sign, pgid = line[:1], int(line[1:])
    if sign == b"+":
        groups.add(pgid)
    else:
        groups.discard(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


RELEASE_DELAY = 0.5
"""How long the watchdog may go untold that groups have ended, when no new
group goes with the news (their leaders wait unreaped meanwhile)."""


class Watchdog:
    """The node's side of the watchdog: `guard` a task's group when it
    starts, `release` it once its leader has ended, and `send` before the
    loop waits: at most one write a turn of the loop, and on a busy node one
    a batch of tasks, not two a task."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._unsent = bytearray()
        self._guarded = False  # a new group the watchdog has not been told of
        self._released_at: float | None = None  # the oldest end it has not been told of
        self._after_send: list[Callable[[], None]] = []
        self._proc: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WATCHDOG_PROGRAM],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        self._unsent = bytearray(b"".join(b"+%d\n" % pgid for pgid in self._groups))
        self.send(everything=True)

    def guard(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._unsent += b"+%d\n" % pgid
        self._guarded = True

    def release(self, pgid: int, then: Callable[[], None]) -> None:
        """Forget a group whose leader has ended, and call `then` (which
        reaps the leader) once the watchdog has been told: until it is
        reaped, its id cannot be reused, so the watchdog never kills a
        stranger's group."""
        self._groups.discard(pgid)
        self._unsent += b"-%d\n" % pgid
        self._after_send.append(then)
        if self._released_at is None:
            self._released_at = time.monotonic()

    def send(self, *, everything: bool = False) -> None:
        """Tell the watchdog what it must know before the loop waits: new
        groups at once (the node could die while it waits). Ends go with
        them (on a busy node, a batch of ends and the tasks started in their
        place make one write), else once RELEASE_DELAY has passed, or now
        with `everything` (when nothing runs, or the node stops); then the
        ended leaders are reaped."""
        due = (self._guarded or everything
               or (self._released_at is not None
                   and time.monotonic() - self._released_at >= RELEASE_DELAY))
        if not due:
            return
        if self._unsent:
            try:
                self._proc.stdin.write(self._unsent)
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # it died: `check` starts another, with every listed group
            self._unsent.clear()
        self._guarded, self._released_at = False, None
        after, self._after_send = self._after_send, []
        for then in after:
            then()

    def check(self) -> None:
        """Start a new watchdog if this one has died."""
        if self._proc.poll() is not None:
            log.error("the task watchdog (pid %d) died; starting another", self._proc.pid)
            self._start()

    def close(self) -> None:
        """The node is stopping cleanly: end the watchdog (it kills any group
        still listed)."""
        self.send(everything=True)
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()

"""Tasks die with their node, however the node dies, and when it stops
checking in, even while it is frozen.

A node starts one small watchdog process and tells it, over a pipe:

- the process group of each task, as soon as the task is spawned (before the
  next task of a batch is), so a node killed in the middle of a batch leaves
  no task the watchdog has not heard of, short of the few microseconds
  between one spawn and its write;
- the groups of tasks that have ended (batched: a few a write);
- its lease, at each successful check-in: a deadline on `CLOCK_BOOTTIME`
  (a clock that counts time the host spent suspended) past which the node
  must no longer run anything, because the cluster may soon call it lost.

The watchdog SIGKILLs every group it knows of when the lease runs out
without a renewal (the node frozen by SIGSTOP, a paused VM, a check-in stuck
on the database), and every new group while it stays expired; and when the
node dies (even by SIGKILL) the kernel closes the pipe, the watchdog reads
end-of-file and kills every group still listed. It needs nothing from the
node to do either: it is its own process, in its own session.

This costs a node one process for its lifetime and one small write a task,
instead of an extra exec (or a Python `preexec_fn`, which forces a slow
fork) for every task, as a parent-death signal would; and it reaches a
task's whole process group, where a parent-death signal reaches only the
task's first process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Callable

log = logging.getLogger("octonodes.node")

BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
"""Counts the time a suspended host spent asleep (Linux); elsewhere monotonic."""


def boottime() -> float:
    """Seconds on the clock the lease is measured on, shared with the watchdog."""
    return time.clock_gettime(BOOT_CLOCK)


# Runs with `python -I -S -c PROGRAM NODE`: no site-packages, no octonodes, a
# quick start. Lines: "?ID ID..." tasks about to start, "+PGID ID" a task's
# group, "-PGID" an ended one, "LDEADLINE" the lease.
WATCHDOG_PROGRAM = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
NODE = b"OCTONODES_NODE=" + os.fsencode(sys.argv[1])
groups, starting, deadline, expired, rest = set(), set(), None, False, b""

def kill(pgids):
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass

def strays():
    # Tasks the node was starting when it died or froze, whose group it had
    # not told yet: found by the environment it gave them.
    marks = {b"OCTONODES_TASK_ID=%d" % task for task in starting}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/environ" % entry, "rb") as f:
                    env = set(f.read().split(b"\0"))
            except OSError:
                continue
            if NODE in env and marks & env:
                pid = int(entry)
                try:
                    os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

def kill_all():
    kill(groups)
    if starting:  # a start may still be loading its program: look again a few times
        for pause in (0, 0.05, 0.1, 0.2, 0.4):
            time.sleep(pause)
            strays()

while True:
    wait = None if deadline is None or expired else max(0.0, deadline - time.clock_gettime(CLOCK))
    if select.select([0], [], [], wait)[0]:
        # Let lines gather: what is in the pipe is known already (it is all
        # read before an end of file or the deadline is acted on), so a busy
        # node's watchdog wakes a few dozen times a second, not once a task.
        time.sleep(0.02)
        data = os.read(0, 65536)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            sign, value = line[:1], line[1:]
            if sign == b"+":
                pgid, _, task = value.partition(b" ")
                groups.add(int(pgid))
                if starting:
                    starting.discard(int(task))
                if expired:
                    kill((int(pgid),))
            elif sign == b"-":
                groups.discard(int(value))
            elif sign == b"?":
                starting = set(map(int, value.split()))
            elif sign == b"L":
                deadline, expired = float(value), False
    if deadline is not None and not expired and time.clock_gettime(CLOCK) >= deadline:
        expired = True
        kill_all()
kill_all()
"""


RELEASE_DELAY = 0.5
"""How long the watchdog may go untold that groups have ended, when no new
group goes with the news (their leaders wait unreaped meanwhile)."""


class Watchdog:
    """The node's side of the watchdog: `guard` a task's group when it
    starts (told at once), `release` it once its leader has ended (told in
    batches, from `send`), and `lease` after each check-in."""

    def __init__(self, node_name: str) -> None:
        self._node_name = node_name
        self._groups: set[int] = set()
        self._unsent = bytearray()
        self._released_at: float | None = None  # the oldest end it has not been told of
        self._after_send: list[Callable[[], None]] = []
        self._lease: float | None = None
        self._proc: subprocess.Popen | None = None
        self._fd = -1
        self._start()

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WATCHDOG_PROGRAM, self._node_name],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        self._fd = self._proc.stdin.fileno()
        known = b"".join(b"+%d 0\n" % pgid for pgid in self._groups)
        if self._lease is not None:
            known = b"L%.6f\n" % self._lease + known
        self._write(known)
        self._unsent.clear()
        self.send(everything=True)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:  # one call, but for a batch larger than the pipe's atomic size
                view = view[os.write(self._fd, view):]
        except OSError:
            pass  # it died: `check` starts another, with every listed group

    def starting(self, task_ids: list[int]) -> None:
        """Tasks about to start, one write a batch: should the node die (or
        freeze) while one is being spawned, before its group is told, the
        watchdog finds it by the environment the node gives its tasks."""
        self._write(b"?%s\n" % b" ".join(b"%d" % task_id for task_id in task_ids))

    def guard(self, pgid: int, task_id: int) -> None:
        """A task's group, told at once (the node may die before its next
        line), with the ends not told yet: on a busy node, the tasks started
        in the place of a batch of ended ones make one write a task."""
        self._groups.add(pgid)
        self._unsent += b"+%d %d\n" % (pgid, task_id)
        self._flush()

    def lease(self, deadline: float) -> None:
        """Kill every group unless renewed before `deadline` (on `boottime()`)."""
        self._lease = deadline
        self._write(b"L%.6f\n" % deadline)

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
        """Tell the watchdog of ended groups, once RELEASE_DELAY has passed
        since the oldest (on a busy node, one write a batch of ends), or now
        with `everything` (when nothing runs, or the node stops); then the
        ended leaders are reaped."""
        if self._released_at is None:
            return
        if not everything and time.monotonic() - self._released_at < RELEASE_DELAY:
            return
        self._flush()

    def _flush(self) -> None:
        self._write(bytes(self._unsent))
        self._unsent.clear()
        self._released_at = None
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

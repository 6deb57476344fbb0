"""How one task runs: its own process group, merged output, limits and kills.

The node's loop starts each task itself and watches it without a thread:
`TaskEvents` is the loop's one wait, on its wake-up pipe, the store's change
notifications, every task's output pipe (stdout and stderr merged) and every
task's process (a pidfd). Output is kept up to the log limit, then a
truncation marker, and the rest is read and dropped, so a task never blocks
on a full pipe. When the task's first process ends, what is left of its group
is killed and the pipe is given a moment to empty; then its exit status is
read, and it is reaped once the watchdog knows its group is gone. The loop
flushes `take_output()` to the database in batches, polls `finished()`
and asks for kills; nothing here blocks.

Starting from the loop costs no hand-over between threads: `posix_spawnp`
(glibc's, built on `vfork`) holds the loop only until the new program is
loaded (a command on a file system that hangs would hold it longer, as it
would hold any reader of that file system). It costs the loop much less
than `subprocess.Popen` does (docs/performance.md), for the same child:
its own session, stdin from /dev/null, stdout and stderr on one pipe, the
signals Python ignores back to their defaults, and no descriptor of the
node's (Python opens them all close-on-exec; `node run` marks what it
inherited the same way at start, `close_inherited()`).
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from enum import Enum

from .models import Task
from .task_events import TaskEvents
from .task_result import FINAL_REASONS, KillReason, Outcome, OutputBuffer, outcome
from .watchdog import Watchdog

READ_SIZE = 64 * 1024
PIPE_GRACE = 1.0
"""After a task's first process ends, how long to wait for the pipe's last bytes."""
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)
"""Signals a task gets back at their default action: Python ignores SIGPIPE
and SIGXFSZ, and a node started in the background by a shell ignores SIGINT."""


class Phase(Enum):
    """Where a task's process group is in its life."""

    RUNNING = "running"  # its first process runs
    EMPTYING = "emptying"  # that process ended; the pipe's last bytes are read
    ENDED = "ended"  # its exit status read, its group killed; not reaped yet
    REAPED = "reaped"  # its pid, the group's id, may be someone else's now


def _pipe() -> tuple[int, int]:
    """A close-on-exec pipe whose ends are not 0, 1 or 2, so duplicating the
    write end onto the task's stdout and stderr never lands on itself (a node
    started with a standard stream closed)."""
    ends = os.pipe()
    if min(ends) > 2:
        return ends
    try:
        return tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in ends)
    finally:
        for fd in ends:
            os.close(fd)


def _why(program: str, exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file" if os.sep in program else "not found on the node's PATH"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def close_inherited() -> None:
    """Mark every descriptor above 2 that this process inherited as
    close-on-exec, so no task inherits it (Python and the libraries the node
    uses open their own that way)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            fds = [int(name) for name in os.listdir(listing)]
            break
        except OSError:
            continue
    else:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed since


def mute_child_exits() -> None:
    """Block SIGCHLD in this thread and in every thread it starts afterwards.

    A node learns of a task's end from its pidfd and never handles SIGCHLD,
    which by default is ignored. But while `posix_spawn` holds every signal
    blocked in the node's loop (a fraction of a millisecond a task, on a
    busy node much of the time), the kernel does not count a child's SIGCHLD
    as ignored and wakes another thread to take it: the PostgreSQL LISTEN
    thread, the HTTP server's. Blocked everywhere, it stays pending and wakes
    no one. Tasks start with an empty mask (`setsigmask=()`)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})


def _exit_status(pid: int) -> int | None:
    """How an ended child ended, as `Popen.returncode` says it (a negative
    number: the signal that killed it), read without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when `pid` ends (Linux 5.3+)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def base_environment() -> dict[str, str]:
    """The node's environment less OCTONODES_DB (it may hold a password)."""
    return {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}


def task_environment(task: Task, node_name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The node's environment less OCTONODES_DB, plus the task's id and the
    node's name. A node passes `base`, read once, rather than copying
    os.environ for every task."""
    env = dict(base) if base is not None else base_environment()
    env["OCTONODES_TASK_ID"] = str(task.id)
    env["OCTONODES_NODE"] = node_name
    return env


class TaskRun:
    """One attempt of one task, running as a child process group, started
    and watched by the node's loop (`TaskEvents`). The node's watchdog, told
    of the group, kills it should the node die first."""

    def __init__(self, task: Task, node_name: str, log_limit: int, events: TaskEvents,
                 environment: dict[str, str] | None = None,
                 watchdog: Watchdog | None = None) -> None:
        self.task = task
        self.log_limit = log_limit
        self.started = time.monotonic()
        self.deadline = None if task.timeout is None else self.started + task.timeout
        self.kill_reason: KillReason | None = None
        self.kill_detail: str | None = None
        self.disowned = False  # the cluster gave it up: its end is not recorded
        self.term_sent_at: float | None = None
        self.grace: float = 0.0
        self.start_error: str | None = None
        self.returncode: int | None = None
        self.pid: int | None = None
        self._events = events
        self._watchdog = watchdog
        self._output = OutputBuffer(log_limit)
        self._pipe: int | None = None  # open until end of file (or the pipe's grace)
        self._pidfd: int | None = None
        self.phase = Phase.RUNNING
        self._pipe_grace_until: float | None = None
        self._spawn(task_environment(task, node_name, environment))

    def _spawn(self, env: dict[str, str]) -> None:
        read_fd, write_fd = _pipe()
        try:
            self.pid = os.posix_spawnp(
                self.task.command[0], self.task.command, env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_fd, 1),
                              (os.POSIX_SPAWN_DUP2, write_fd, 2)],
                setsid=True, setsigdef=DEFAULT_SIGNALS, setsigmask=())
        except (OSError, ValueError, IndexError) as exc:  # IndexError: no command at all
            os.close(read_fd)
            program = self.task.command[0] if self.task.command else ""
            self.start_error = f"cannot start {program!r}: {_why(program, exc)}"
            self.phase = Phase.ENDED
            return
        finally:
            os.close(write_fd)
        if self._watchdog:
            self._watchdog.guard(self.pid, self.task.id)
        self._pipe = read_fd
        os.set_blocking(self._pipe, False)
        self._events.register(self._pipe, self)
        self._pidfd = _pidfd(self.pid)
        if self._pidfd is not None:
            self._events.register(self._pidfd, self)
        else:
            self._events.polled.add(self)

    # -- what the loop's wait hands on -----------------------------------------

    def on_ready(self, fd: int, now: float) -> None:
        if fd == self._pipe:
            self._read()
        elif fd == self._pidfd:
            self._events.unregister(fd)
            os.close(fd)
            self._pidfd = None
            self._leader_exited(now)
        self._finish_if_over(now)

    def poll_exit(self, now: float) -> None:
        """Where there is no pidfd: has the first process ended?"""
        if self._leader_ended():
            self._events.polled.discard(self)
            self._leader_exited(now)
        self._finish_if_over(now)

    def _read(self) -> None:
        try:
            data = os.read(self._pipe, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._output.keep(data)
        else:
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            self._events.unregister(self._pipe)
            os.close(self._pipe)
            self._pipe = None

    def _leader_ended(self) -> bool:
        """Has the first process exited? Looks without reaping it, so its pid
        (the group's id) cannot be reused while we may still signal the group."""
        try:
            return os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
        except ChildProcessError:
            return True

    def _leader_exited(self, now: float) -> None:
        self.phase = Phase.EMPTYING
        if self._pipe is not None:
            # Something it started still holds the pipe: end the group, and
            # give the pipe a moment to empty.
            self._signal_group(signal.SIGKILL)
            self._pipe_grace_until = now + PIPE_GRACE

    def _finish_if_over(self, now: float) -> None:
        if self.phase is not Phase.EMPTYING:
            return
        if self._pipe is not None:
            if now < self._pipe_grace_until:
                return
            self._close_pipe()  # something outside the group holds the pipe
        self._signal_group(signal.SIGKILL)  # whatever the first process left behind
        self.returncode = _exit_status(self.pid)
        self.phase = Phase.ENDED
        # Reaped once the watchdog has been told the group is gone: until
        # then its id cannot be reused, so the watchdog never kills a
        # stranger's group.
        if self._watchdog:
            self._watchdog.release(self.pid, then=self._reap)
        else:
            self._reap()

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.phase = Phase.REAPED

    # -- what the node's loop calls --------------------------------------------

    def take_output(self) -> bytes:
        """The output gathered since the last call."""
        return self._output.take()

    def finished(self) -> bool:
        """Has the task ended, its whole process group with it?"""
        return self.phase in (Phase.ENDED, Phase.REAPED)

    def _signal_group(self, sig: int) -> None:
        if self.pid is None or self.phase is Phase.REAPED:
            return  # never started, or reaped: its group id may be someone else's now
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, reason: KillReason, detail: str | None = None) -> None:
        """SIGKILL the whole process group now."""
        if self.kill_reason is None or reason in FINAL_REASONS:
            self.kill_reason, self.kill_detail = reason, detail
        self._signal_group(signal.SIGKILL)

    def disown(self) -> None:
        """The database no longer gives this attempt to this node: kill its
        group now; the node records nothing for it."""
        self.disowned = True
        self._signal_group(signal.SIGKILL)

    def terminate(self, reason: KillReason, grace: float, detail: str | None = None) -> None:
        """SIGTERM the process group; `escalate()` sends SIGKILL after `grace`."""
        if self.term_sent_at is not None:
            return
        self.kill_reason, self.kill_detail = reason, detail
        self.term_sent_at = time.monotonic()
        self.grace = grace
        self._signal_group(signal.SIGTERM)

    def escalate(self, now: float) -> None:
        """SIGKILL after the grace period of a SIGTERM; kill past the timeout;
        give up on a pipe held open past its grace."""
        if self.finished():
            return
        if self.term_sent_at is not None and now - self.term_sent_at >= self.grace:
            self._signal_group(signal.SIGKILL)
        if self.deadline is not None and now >= self.deadline and self.kill_reason is None:
            self.kill(KillReason.TIMEOUT)
        self._finish_if_over(now)

    def outcome(self) -> Outcome:
        """The state to record once `finished()`."""
        return outcome(started=self.pid is not None, returncode=self.returncode,
                       kill_reason=self.kill_reason, kill_detail=self.kill_detail,
                       timeout=self.task.timeout, start_error=self.start_error)

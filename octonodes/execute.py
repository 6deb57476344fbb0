"""How one task runs: its own process group, merged output, limits and kills.

The node's loop owns a `TaskRun` per claimed task. A thread per task starts
its process, drains its one pipe (stdout and stderr merged) into a buffer up
to the log limit, then writes a truncation marker and reads and drops the
rest, so a task never blocks on a full pipe. The loop polls `finished()`,
flushes `take_output()` to the database in batches, and asks for kills; it
never blocks on a task.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .models import Task, TaskState
from .watchdog import Watchdog

READ_SIZE = 64 * 1024
READER_POLL = 0.2
"""How often a task's thread, on a quiet pipe, looks whether the leader ended."""
PIPE_DRAIN_GRACE = 1.0
"""After a task's leader ends, how long to wait for the pipe's last bytes."""
TRUNCATION_MARKER = "\n[octonodes: output truncated at {limit} bytes; the rest was dropped]\n"



class KillReason(Enum):
    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    FENCE = "fence"
    ORPHANED = "orphaned"


@dataclass(frozen=True)
class Outcome:
    state: TaskState
    exit_code: int | None
    error: str | None


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
    """One attempt of one task, running as a child process group.

    A thread of its own (a new one, or one from the node's pool) starts the
    process, so a fork never holds up the node's loop, drains its output, and
    waits for it. The node's watchdog, told of the group, kills it should the
    node die first."""

    def __init__(self, task: Task, node_name: str, log_limit: int,
                 wake: Callable[[], None] = lambda: None,
                 threads: ThreadPoolExecutor | None = None,
                 environment: dict[str, str] | None = None,
                 watchdog: Watchdog | None = None) -> None:
        self.task = task
        self.log_limit = log_limit
        self.started = time.monotonic()
        self.deadline = None if task.timeout is None else self.started + task.timeout
        self.kill_reason: KillReason | None = None
        self.kill_detail: str | None = None
        self.term_sent_at: float | None = None
        self.grace: float = 0.0
        self.start_error: str | None = None
        self.returncode: int | None = None
        self.proc: subprocess.Popen | None = None
        self._wake = wake
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._kept = 0
        self._truncated = False
        self._group_lock = threading.Lock()
        self._pgid: int | None = None
        self._reaped = False
        self._early_signal: int | None = None
        self._done = threading.Event()
        self._env = task_environment(task, node_name, environment)
        self._watchdog = watchdog
        if threads is not None:
            threads.submit(self._run)
        else:
            threading.Thread(target=self._run, name=f"task-{task.id}", daemon=True).start()

    # -- the task's own thread ------------------------------------------------

    def _run(self) -> None:
        try:
            self._spawn()
            if self.proc is not None:
                self._read()
                self._reap()
        finally:
            self._done.set()
            self._wake()

    def _spawn(self) -> None:
        try:
            self.proc = subprocess.Popen(
                self.task.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env,
                close_fds=True,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.start_error = f"cannot start {self.task.command[0]!r}: {exc}"
            return
        if self._watchdog:
            self._watchdog.guard(self.proc.pid)
        with self._group_lock:
            self._pgid = self.proc.pid
            early = self._early_signal
        if early is not None:
            self._signal_group(early)

    def _leader_ended(self, block: bool = False) -> bool:
        """Has the leader exited? Looks without reaping it, so its pid (the
        group's id) cannot be reused while we may still signal the group."""
        options = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        try:
            return os.waitid(os.P_PID, self.proc.pid, options) is not None
        except ChildProcessError:
            return True

    def _read(self) -> None:
        """Keep output until EOF. When the leader ends first, kill what is
        left of its group and give the pipe a moment to empty."""
        fd = self.proc.stdout.fileno()
        drain_until = None
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], READER_POLL)
                if ready:
                    data = os.read(fd, READ_SIZE)
                    if not data:
                        return
                    self._keep(data)
                    continue
                if drain_until is None and self._leader_ended():
                    self._signal_group(signal.SIGKILL)
                    drain_until = time.monotonic() + PIPE_DRAIN_GRACE
                elif drain_until is not None and time.monotonic() >= drain_until:
                    return  # something outside the group holds the pipe
        except OSError:
            return
        finally:
            self.proc.stdout.close()

    def _reap(self) -> None:
        self._leader_ended(block=True)
        self._signal_group(signal.SIGKILL)  # whatever the leader left behind
        if self._watchdog:
            self._watchdog.release(self.proc.pid)
        with self._group_lock:
            self._reaped = True
        self.returncode = self.proc.wait()

    def _keep(self, data: bytes) -> None:
        with self._lock:
            if self._truncated:
                return
            room = self.log_limit - self._kept
            if len(data) > room:
                data = data[:room] + TRUNCATION_MARKER.format(limit=self.log_limit).encode()
                self._truncated = True
            self._kept += min(len(data), room)
            self._pending += data

    # -- what the node's loop calls --------------------------------------------

    def take_output(self) -> bytes:
        """The output gathered since the last call."""
        with self._lock:
            data, self._pending = bytes(self._pending), bytearray()
            return data

    def finished(self) -> bool:
        """Has the task ended, its whole process group with it?"""
        return self._done.is_set()

    def _signal_group(self, sig: int) -> None:
        with self._group_lock:
            if self._reaped:
                return
            if self._pgid is None:  # not started yet: its thread sends it
                if self._early_signal != signal.SIGKILL:
                    self._early_signal = sig
                return
            pgid = self._pgid
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, reason: KillReason, detail: str | None = None) -> None:
        """SIGKILL the whole process group now."""
        if self.kill_reason is None or reason in (KillReason.FENCE, KillReason.ORPHANED):
            self.kill_reason, self.kill_detail = reason, detail
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
        """SIGKILL after the grace period of a SIGTERM; kill past the timeout."""
        if self._done.is_set():
            return
        if self.term_sent_at is not None and now - self.term_sent_at >= self.grace:
            self._signal_group(signal.SIGKILL)
        if self.deadline is not None and now >= self.deadline and self.kill_reason is None:
            self.kill(KillReason.TIMEOUT)

    def outcome(self) -> Outcome:
        """The state to record once `finished()`."""
        if self.proc is None:
            return Outcome(TaskState.FAILED, None, self.start_error)
        code = self.returncode
        exit_code = 128 - code if code is not None and code < 0 else code
        reason = self.kill_reason
        if reason is KillReason.TIMEOUT:
            return Outcome(TaskState.TIMED_OUT, exit_code,
                           f"killed after its timeout of {self.task.timeout:g}s")
        if reason is KillReason.CANCEL:
            return Outcome(TaskState.CANCELED, exit_code, self.kill_detail or "canceled")
        if reason is KillReason.SHUTDOWN:
            return Outcome(TaskState.CANCELED, exit_code, "node shut down")
        if reason in (KillReason.FENCE, KillReason.ORPHANED):
            return Outcome(TaskState.FAILED, exit_code, self.kill_detail)
        if code == 0:
            return Outcome(TaskState.SUCCESS, 0, None)
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
            return Outcome(TaskState.FAILED, exit_code, f"killed by signal {name}")
        return Outcome(TaskState.FAILED, exit_code, f"exited with code {code}")

"""What one task attempt keeps and how it ends, as pure rules: its output
up to the log limit, and the end state that follows from how its process
ended and why it was killed (`outcome`)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum

from .models import TaskState

TRUNCATION_MARKER = "\n[octonodes: output truncated at {limit} bytes; the rest was dropped]\n"


class KillReason(Enum):
    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    FENCE = "fence"
    ORPHANED = "orphaned"


FINAL_REASONS = frozenset({KillReason.FENCE, KillReason.ORPHANED})
"""Reasons that replace an earlier one: the node, not the task, decided."""


@dataclass(frozen=True)
class Outcome:
    state: TaskState
    exit_code: int | None
    error: str | None


def signal_name(number: int) -> str:
    """`SIGTERM` for 15; the number itself for one Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def outcome(*, started: bool, returncode: int | None, kill_reason: KillReason | None,
            kill_detail: str | None = None, timeout: float | None = None,
            start_error: str | None = None) -> Outcome:
    """The state to record for an attempt that ended. `returncode` as
    `Popen.returncode` says it: negative for the signal that killed it, None
    when its status was lost. A kill's reason decides over the code."""
    if not started:
        return Outcome(TaskState.FAILED, None, start_error)
    code = returncode
    exit_code = 128 - code if code is not None and code < 0 else code
    if kill_reason is KillReason.TIMEOUT:
        return Outcome(TaskState.TIMED_OUT, exit_code, f"killed after its timeout of {timeout:g}s")
    if kill_reason is KillReason.CANCEL:
        return Outcome(TaskState.CANCELED, exit_code, kill_detail or "canceled")
    if kill_reason is KillReason.SHUTDOWN:
        return Outcome(TaskState.CANCELED, exit_code, "node shut down")
    if kill_reason in FINAL_REASONS:
        return Outcome(TaskState.FAILED, exit_code, kill_detail)
    if code == 0:
        return Outcome(TaskState.SUCCESS, 0, None)
    if code is None:  # reaped by someone else: nothing in octonodes does that
        return Outcome(TaskState.FAILED, None, "its exit status was lost")
    if code < 0:
        return Outcome(TaskState.FAILED, exit_code, f"killed by signal {signal_name(-code)}")
    return Outcome(TaskState.FAILED, exit_code, f"exited with code {code}")


class OutputBuffer:
    """A task's output on its way to the database: kept up to `limit` bytes
    an attempt, then a truncation marker, and the rest dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending = bytearray()
        self._kept = 0
        self.truncated = False

    def keep(self, data: bytes) -> None:
        if self.truncated:
            return
        room = self.limit - self._kept
        if len(data) > room:
            data = data[:room] + TRUNCATION_MARKER.format(limit=self.limit).encode()
            self.truncated = True
        self._kept += min(len(data), room)
        self._pending += data

    def take(self) -> bytes:
        """What was kept since the last call."""
        data, self._pending = bytes(self._pending), bytearray()
        return data

"""The end-state and output rules of one task attempt, as tables: no process
needed (tests/test_execute.py runs real ones)."""

from __future__ import annotations

import pytest

from octonodes.models import TaskState
from octonodes.task_result import (TRUNCATION_MARKER, KillReason, Outcome, OutputBuffer,
                                   outcome, signal_name)

# (returncode as Popen says it, kill reason, kill detail) -> the outcome recorded
RESULTS = [
    (0, None, None, Outcome(TaskState.SUCCESS, 0, None)),
    (3, None, None, Outcome(TaskState.FAILED, 3, "exited with code 3")),
    (255, None, None, Outcome(TaskState.FAILED, 255, "exited with code 255")),
    (-9, None, None, Outcome(TaskState.FAILED, 137, "killed by signal SIGKILL")),
    (-15, None, None, Outcome(TaskState.FAILED, 143, "killed by signal SIGTERM")),
    (-77, None, None, Outcome(TaskState.FAILED, 205, "killed by signal 77")),  # unnamed
    (None, None, None, Outcome(TaskState.FAILED, None, "its exit status was lost")),
    # A kill's reason decides, whatever the code says.
    (-9, KillReason.TIMEOUT, None, Outcome(TaskState.TIMED_OUT, 137,
                                          "killed after its timeout of 1.5s")),
    (0, KillReason.TIMEOUT, None, Outcome(TaskState.TIMED_OUT, 0,
                                         "killed after its timeout of 1.5s")),
    (-15, KillReason.CANCEL, None, Outcome(TaskState.CANCELED, 143, "canceled")),
    (-15, KillReason.CANCEL, "by alice: wrong input",
     Outcome(TaskState.CANCELED, 143, "by alice: wrong input")),
    (0, KillReason.CANCEL, None, Outcome(TaskState.CANCELED, 0, "canceled")),
    (-15, KillReason.SHUTDOWN, None, Outcome(TaskState.CANCELED, 143, "node shut down")),
    (-9, KillReason.FENCE, "node cut off", Outcome(TaskState.FAILED, 137, "node cut off")),
    (-9, KillReason.ORPHANED, "taken over", Outcome(TaskState.FAILED, 137, "taken over")),
]


@pytest.mark.parametrize("code, reason, detail, expected", RESULTS)
def test_the_outcome_table(code, reason, detail, expected):
    got = outcome(started=True, returncode=code, kill_reason=reason, kill_detail=detail,
                  timeout=1.5)
    assert got == expected


def test_a_task_that_never_started_failed_with_why():
    assert outcome(started=False, returncode=None, kill_reason=None,
                   start_error="cannot start 'nope': not found on the node's PATH") == \
        Outcome(TaskState.FAILED, None, "cannot start 'nope': not found on the node's PATH")


def test_signal_names():
    assert signal_name(2) == "SIGINT"
    assert signal_name(200) == "200"


# (limit, chunks written) -> bytes kept
OUTPUT = [
    (10, [b"hello"], b"hello"),
    (10, [b"hello", b"world"], b"helloworld"),
    (10, [b"helloworld!"], b"helloworld" + TRUNCATION_MARKER.format(limit=10).encode()),
    (10, [b"hello", b"world", b"!"], b"helloworld" + TRUNCATION_MARKER.format(limit=10).encode()),
    (10, [b"hello wor", b"ld", b"more", b"more"],
     b"hello world"[:10] + TRUNCATION_MARKER.format(limit=10).encode()),
    (1, [b"", b"ab"], b"a" + TRUNCATION_MARKER.format(limit=1).encode()),
]


@pytest.mark.parametrize("limit, chunks, kept", OUTPUT)
def test_the_output_table(limit, chunks, kept):
    buffer = OutputBuffer(limit)
    for chunk in chunks:
        buffer.keep(chunk)
    assert buffer.take() == kept
    assert buffer.take() == b""


def test_output_at_exactly_the_limit_is_whole_until_more_comes():
    buffer = OutputBuffer(5)
    buffer.keep(b"hello")
    assert buffer.take() == b"hello" and not buffer.truncated
    buffer.keep(b"!")
    assert buffer.take() == TRUNCATION_MARKER.format(limit=5).encode()


def test_output_taken_in_pieces_adds_up_to_the_limit():
    buffer = OutputBuffer(6)
    buffer.keep(b"abcd")
    assert buffer.take() == b"abcd"
    buffer.keep(b"efgh")
    assert buffer.take() == b"ef" + TRUNCATION_MARKER.format(limit=6).encode()
    buffer.keep(b"ijkl")
    assert buffer.take() == b""

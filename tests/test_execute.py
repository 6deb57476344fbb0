"""How one task runs, without a node or a database: `TaskRun` on a
`TaskEvents` wait, as the node's loop drives them. Every case runs three
times: with pidfds (Linux 5.3+), with the polling used where there are none,
and on poll(2) as where there is no epoll."""

from __future__ import annotations

import os
import signal
import time

import pytest

from helpers import pid_alive, wait_until
from octonodes import execute
from octonodes import watchdog as watchdog_module
from octonodes import task_events
from octonodes.execute import TaskRun
from octonodes.task_events import TaskEvents
from octonodes.task_result import KillReason, Outcome
from octonodes.models import Task, TaskState
from octonodes.waker import Waker
from octonodes.watchdog import Watchdog


@pytest.fixture(params=["pidfd", "polled", "no-epoll"])
def events(request, monkeypatch):
    if request.param == "polled":
        monkeypatch.setattr(execute, "_pidfd", lambda pid: None)
    if request.param == "no-epoll":
        monkeypatch.delattr(task_events.select, "epoll")
    waker = Waker()
    events = TaskEvents(waker.fileno())
    yield events
    events.close()
    waker.close()


def start(events: TaskEvents, command: list[str], *, log_limit: int = 1 << 20,
          timeout: float | None = None, watchdog: Watchdog | None = None) -> TaskRun:
    task = Task(id=1, name="t", command=command, state=TaskState.EXECUTING, node="n",
                queued_at=None, started_at=None, finished_at=None, exit_code=None, error=None,
                timeout=timeout, queue_timeout=None, retries=0, attempt=1, instance="i")
    return TaskRun(task, "n", log_limit, events, watchdog=watchdog)


def run_to_end(events: TaskEvents, run: TaskRun, limit: float = 10,
               watchdog: Watchdog | None = None) -> bytes:
    """Turn the loop (wait, escalate, tell the watchdog) until the task has
    ended; returns all its output."""
    output = bytearray()
    deadline = time.monotonic() + limit
    while not run.finished():
        assert time.monotonic() < deadline, "the task did not end in time"
        events.wait(0.05)
        run.escalate(time.monotonic())
        if watchdog:
            watchdog.send()
        output += run.take_output()
    return bytes(output + run.take_output())


def test_output_and_exit_code(events):
    run = start(events, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert run_to_end(events, run) == b"out\nerr\n"
    assert run.outcome() == Outcome(TaskState.FAILED, 3, "exited with code 3")


def test_success_and_a_program_that_is_not_there(events, tmp_path):
    ok = start(events, ["true"])
    run_to_end(events, ok)
    assert ok.outcome().state is TaskState.SUCCESS
    missing = start(events, ["no-such-program-here"])
    assert missing.finished()
    outcome = missing.outcome()
    assert (outcome.state, outcome.error) == (
        TaskState.FAILED, "cannot start 'no-such-program-here': not found on the node's PATH")
    not_a_program = tmp_path / "notes.txt"
    not_a_program.write_text("not executable\n")
    assert start(events, [str(not_a_program)]).outcome().error == \
        f"cannot start '{not_a_program}': Permission denied"
    gone = start(events, ["/nonexistent/program"])
    assert gone.outcome().error == "cannot start '/nonexistent/program': no such file"
    nothing = start(events, [])  # as a row written by hand might say
    assert nothing.finished() and nothing.outcome().state is TaskState.FAILED


def test_a_task_reaped_behind_the_nodes_back_fails_plainly(events):
    run = start(events, ["true"])
    os.waitpid(run.pid, 0)  # as a stray waitpid elsewhere in the process would
    run_to_end(events, run)
    assert run.outcome() == Outcome(TaskState.FAILED, None, "its exit status was lost")


def test_a_task_starts_as_a_fresh_program_would(events):
    """Its own session, stdin from /dev/null, no signal left ignored by
    Python (SIGPIPE) or blocked by the node (SIGCHLD), and no descriptor the
    node inherited."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as a node's parent might leave one
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        execute.close_inherited()
        execute.mute_child_exits()  # as `node run` does
        run = start(events, ["sh", "-c",
                             "ps -o sid= -o pid= -p $$; readlink /proc/self/fd/0; "
                             f"[ -e /proc/self/fd/{write_end} ] && echo leaked || echo closed"])
        output = run_to_end(events, run).decode()
        # Read by the task's own first program (a shell would clear its mask).
        status = run_to_end(events, start(events, ["cat", "/proc/self/status"])).decode()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_end)
        os.close(write_end)
    session, stdin, inherited = output.splitlines()
    sid, pid = session.split()
    assert sid == pid, output  # a session (and process group) of its own
    signals = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith("Sig"))
    assert not int(signals["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1)), status
    assert int(signals["SigBlk"], 16) == 0, status
    assert (stdin, inherited) == ("/dev/null", "closed"), output
    assert run.outcome().state is TaskState.SUCCESS


def test_a_pipe_never_lands_on_a_standard_stream():
    """A node started with stdout closed: the task's pipe must not take fd 1,
    or duplicating it onto the task's stdout would be no duplication at all."""
    saved = os.dup(1)
    os.close(1)
    try:
        ends = execute._pipe()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    try:
        assert min(ends) > 2 and not any(os.get_inheritable(fd) for fd in ends)
        os.write(ends[1], b"x")
        assert os.read(ends[0], 1) == b"x"
    finally:
        for fd in ends:
            os.close(fd)


def test_output_past_the_limit_is_truncated_and_the_rest_drained(events):
    run = start(events, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"], log_limit=1000)
    output = run_to_end(events, run)
    assert output.startswith(b"x" * 1000) and b"output truncated at 1000 bytes" in output
    assert len(output) < 1200
    assert run.outcome().state is TaskState.SUCCESS, "the writer never blocked on the pipe"


def test_a_background_child_holding_the_pipe_is_killed_with_the_first_process(events, tmp_path):
    pid_file = tmp_path / "child"
    run = start(events, ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo started"])
    started = time.monotonic()
    assert run_to_end(events, run) == b"started\n"
    assert time.monotonic() - started < execute.PIPE_GRACE + 2
    assert run.outcome().state is TaskState.SUCCESS
    child = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(child), 5, message="the background child to die")


def test_a_first_process_that_closes_its_output_early_is_waited_for(events):
    run = start(events, ["sh", "-c", "exec >&- 2>&-; sleep 0.3; exit 4"])
    started = time.monotonic()
    run_to_end(events, run)
    assert time.monotonic() - started >= 0.25, "ended at end of file, before the process did"
    assert run.outcome().exit_code == 4


def test_timeout_and_terminate(events):
    slow = start(events, ["sleep", "30"], timeout=0.2)
    run_to_end(events, slow)
    assert slow.outcome().state is TaskState.TIMED_OUT

    stubborn = start(events, ["sh", "-c", "trap '' TERM; echo ready; sleep 30"])
    wait_until(lambda: events.wait(0.05) or stubborn.take_output() == b"ready\n", 5,
               message="the task to be ready")
    stubborn.terminate(KillReason.CANCEL, grace=0.2)
    run_to_end(events, stubborn)
    outcome = stubborn.outcome()
    assert (outcome.state, outcome.exit_code) == (TaskState.CANCELED, 128 + signal.SIGKILL)


def test_the_watchdog_hears_of_a_group_before_its_leader_is_reaped(events, monkeypatch):
    """A task's end is known (and recorded) at once, but its leader stays
    unreaped, its id unusable, until the watchdog has been told the group is
    gone; the news waits for the next new group, for RELEASE_DELAY, or for a
    send of everything."""
    watchdog = Watchdog("n")
    try:
        runs = [start(events, ["true"], watchdog=watchdog) for _ in range(2)]
        watchdog.send()  # new groups go at once
        deadline = time.monotonic() + 10
        while not all(run.finished() for run in runs):
            assert time.monotonic() < deadline, "the tasks did not end in time"
            events.wait(0.05)
        assert all(run.outcome().state is TaskState.SUCCESS for run in runs)
        leaders = [f"/proc/{run.pid}" for run in runs]
        watchdog.send()  # no new group, nothing waited long: the ends wait
        assert all(os.path.exists(leader) for leader in leaders), "reaped before the watchdog knew"

        monkeypatch.setattr(watchdog_module, "RELEASE_DELAY", 0.0)
        watchdog.send()
        assert not any(os.path.exists(leader) for leader in leaders), "reaped once it knew"

        monkeypatch.setattr(watchdog_module, "RELEASE_DELAY", 60.0)
        later = start(events, ["true"], watchdog=watchdog)
        while not later.finished():
            assert time.monotonic() < deadline, "the task did not end in time"
            events.wait(0.05)
        watchdog.send(everything=True)
        assert not os.path.exists(f"/proc/{later.pid}"), "reaped once it knew"
    finally:
        watchdog.close()

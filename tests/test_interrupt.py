"""Ctrl-C (SIGINT) on the commands that wait: `task log --follow`, `task wait`
and `drain --wait` all stop at once with exit 130, as a shell reports an
interrupted command, and `drain --wait` says the node stays drained.

Real processes, real signals: each command runs as `python -m octonodes` and
gets SIGINT once it holds the database (it is then waiting, past parsing)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

import helpers
from conftest import wait_status

INTERRUPTED = 130


def start(db: str, *args: str) -> subprocess.Popen:
    return helpers.start_octonodes(db, *args, env={"OCTONODES_DEBUG": "0"})


def holds_database(pid: int, db: str) -> bool:
    """Has the process opened the database: the SQLite file, or a socket to
    the PostgreSQL server?"""
    wanted = os.path.realpath(db) if "://" not in db else None
    try:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except (FileNotFoundError, ProcessLookupError):
        return False
    if wanted:
        return wanted in targets
    return any(t.startswith("socket:") for t in targets)


def interrupt(proc: subprocess.Popen, db: str, ready=lambda: True) -> tuple[int, str, str]:
    """SIGINT once the command holds the database and `ready()` says it waits."""
    helpers.wait_until(lambda: (holds_database(proc.pid, db) and ready()) or proc.poll() is not None,
                       message="the command to open the database")
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running 10 s after SIGINT: {proc.communicate()}")
    return proc.returncode, out, err


@pytest.mark.slow
def test_task_wait_exits_130_on_ctrl_c(cluster, db):
    task = cluster.add_task(["true"])  # no node: it stays queued
    code, out, err = interrupt(start(db, "task", "wait", str(task.id)), db)
    assert code == INTERRUPTED, (out, err)
    assert "Traceback" not in err and "Aborted" not in err, err
    assert cluster.task(task.id).state == "Queued"  # waiting changed nothing


@pytest.mark.slow
def test_task_log_follow_exits_130_on_ctrl_c(cluster, db):
    task = cluster.add_task(["true"])
    code, out, err = interrupt(start(db, "task", "log", str(task.id), "--follow"), db)
    assert code == INTERRUPTED, (out, err)
    assert "Traceback" not in err, err


@pytest.mark.slow
def test_drain_wait_exits_130_on_ctrl_c_and_says_the_node_stays_drained(fast_cluster, db, start_node):
    start_node("node-1")
    task = fast_cluster.add_task(["sleep", "60"])
    helpers.wait_until(lambda: fast_cluster.task(task.id).state == "Executing",
                       message="the task to start")
    drained = lambda: fast_cluster.node("node-1", with_tasks=False).drain  # noqa: E731
    code, out, err = interrupt(start(db, "drain", "node-1", "--wait"), db, ready=drained)
    assert code == INTERRUPTED, (out, err)
    assert "node-1 stays drained" in err, err
    assert "Traceback" not in err, err
    node = fast_cluster.node("node-1")
    assert node.drain and node.status == "Draining"  # still drained; the task goes on
    assert fast_cluster.task(task.id).state == "Executing"
    fast_cluster.cancel(task.id)
    wait_status(fast_cluster, "node-1", "Drained")

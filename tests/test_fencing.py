"""Fencing: a node cut off from its database kills its own tasks before the
cluster may call it lost, recovers by itself, and never ends a task twice.

The cut is SQLite's write lock held by another process for longer than
offline_after: the node can still read but cannot check in. SQLite only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from conftest import wait_status
from helpers import pid_alive, wait_until

pytestmark = pytest.mark.slow

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # hold the write lock until the test closes our stdin
conn.execute("ROLLBACK")
"""


class WriteLock:
    """SQLite's write lock on `path`, held by another process until released."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "locked\n"
        self.taken = time.monotonic()

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)

    def held(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def sqlite_db(backend, db):
    assert backend == "sqlite", "holds SQLite's write lock to cut a node off"
    return db


@pytest.mark.only_backend("sqlite")
def test_a_cut_off_node_kills_its_tasks_in_time_and_recovers(
        sqlite_db, fast_cluster, start_node, tmp_path):
    settings = fast_cluster.settings()
    node = start_node("node-a")
    wait_status(fast_cluster, "node-a", "Running")
    pid_file = tmp_path / "pid"
    task = fast_cluster.add_task(
        ["sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pid_file)])
    pid = wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n")
                     and int(pid_file.read_text()), 20, message="the task's pid")
    # Cut it off right after a check-in, so the lock outlasts offline_after
    # by the widest margin from the node's own point of view.
    seen = fast_cluster.node("node-a", with_tasks=False).last_seen
    wait_until(lambda: fast_cluster.node("node-a", with_tasks=False).last_seen > seen, 10,
               message="a check-in")
    last_check_in = time.monotonic()

    lock = WriteLock(sqlite_db)
    try:
        wait_until(lambda: not pid_alive(pid), settings.offline_after + 5,
                   message="the cut-off node to kill its task")
        fenced_after = time.monotonic() - last_check_in
        assert lock.held()
        assert fenced_after < settings.offline_after, (
            f"the task was killed {fenced_after:.2f}s after the last check-in, not before "
            f"offline_after ({settings.offline_after}s): others may already call the node lost")
        # Readers still work: the cluster sees the node go Offline, task still Executing.
        wait_status(fast_cluster, "node-a", "Offline", timeout=settings.offline_after + 5)
        assert fast_cluster.task(task.id).state == "Executing"
        assert node.alive(), node.log()
    finally:
        lock.release()

    wait_status(fast_cluster, "node-a", "Running", timeout=10)
    ended = fast_cluster.wait(task.id, timeout=10)
    assert ended.state == "Failed", ended
    assert "could not reach the database" in ended.error or "lost" in ended.error, ended.error

    after = fast_cluster.add_task(["sh", "-c", "echo back"])
    done = fast_cluster.wait(after.id, timeout=20)
    assert done.state == "Success" and done.node == "node-a", done

    # One end, once: the record did not change, and the node logged one end.
    again = fast_cluster.task(task.id)
    assert (again.state, again.error, again.finished_at) == \
        (ended.state, ended.error, ended.finished_at)
    log = node.log()
    assert len(re.findall(rf"task {task.id} ended ", log)) == 1, log
    assert "killing 1 task(s)" in log, log
    assert node.alive()

"""The cluster's own events, from real node processes, and `events --follow`."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest

from conftest import wait_status
from helpers import wait_until

pytestmark = pytest.mark.slow


def actions(cluster, node: str) -> list[tuple[str, str]]:
    """(action, actor) of the node's events, oldest first."""
    return [(e.action.value, e.actor) for e in reversed(cluster.events(node=node, limit=None))]


def test_nodes_record_registering_stopping_being_lost_and_taken_over(fast_cluster, start_node):
    settings = fast_cluster.settings()
    a = start_node("node-a")
    b = start_node("node-b")
    a.kill9()
    wait_until(lambda: ("node.lost", "node node-b") in actions(fast_cluster, "node-a"),
               settings.offline_after + 10, message="node-b to find node-a lost")
    assert actions(fast_cluster, "node-a") == [("node.register", "node node-a"),
                                               ("node.lost", "node node-b")]
    # Same host, process gone: a new process takes the name over at once.
    start_node("node-a")
    assert actions(fast_cluster, "node-a")[-1] == ("node.take-over", "node node-a")
    b.signal()
    assert b.wait_exit(20) == 0
    assert actions(fast_cluster, "node-b") == [("node.register", "node node-b"),
                                               ("node.stop", "node node-b")]
    wait_status(fast_cluster, "node-b", "Offline")
    # A stopped node is not lost, however long it stays away.
    a_reaps = fast_cluster.node("node-a", with_tasks=False).last_seen
    wait_until(lambda: fast_cluster.node("node-a", with_tasks=False).last_seen > a_reaps, 10)
    assert all(action != "node.lost" for action, _ in actions(fast_cluster, "node-b"))


@pytest.mark.only_backend("sqlite")
def test_a_node_that_fenced_itself_records_it_once_it_is_back(backend, db, fast_cluster,
                                                               start_node, tmp_path):
    from test_fencing import WriteLock

    settings = fast_cluster.settings()
    node = start_node("node-a")
    task = fast_cluster.add_task(["sleep", "300"])
    wait_until(lambda: fast_cluster.task(task.id).state == "Executing", 10, message="the task")
    lock = WriteLock(db)
    try:
        node.wait_log("killing 1 task(s)", timeout=settings.offline_after + 5)
    finally:
        lock.release()
    wait_until(lambda: fast_cluster.events(node="node-a", actions=["node.fence"]), 15,
               message="the fence in the audit trail")
    [fence] = fast_cluster.events(node="node-a", actions=["node.fence"])
    assert fence.actor == "node node-a"
    assert fence.details["killed_tasks"] == [task.id]
    assert fence.details["cut_off_seconds"] < settings.offline_after


class Follower:
    """A real `octonodes events --follow` process, its lines read as they come."""

    def __init__(self, db: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "octonodes", "--db", db, "events", "--follow", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 10) -> str:
        return self.lines.get(timeout=timeout)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_events_follow_prints_new_events_as_they_happen(fast_cluster):
    from octonodes.store.base import Registration

    fast_cluster.store.register(Registration(name="node-1", instance_id="i", host="h", pid=1,
                                             version="t", heartbeat_interval=10))
    fast_cluster.set_cap("node-1", 3, reason="before")
    follower = Follower(fast_cluster.db, "--json", "--node", "node-1", "--limit", "1")
    try:
        first = json.loads(follower.next())
        assert (first["action"], first["reason"]) == ("node.cap", "before")
        time.sleep(0.5)  # let it settle into waiting: what follows must wake it
        fast_cluster.add_task(["true"])  # not about node-1: not printed
        started = time.monotonic()
        fast_cluster.drain("node-1", reason="now")
        event = json.loads(follower.next())
        took = time.monotonic() - started
        assert (event["action"], event["reason"], event["node"]) == ("node.drain", "now", "node-1")
        assert took < 2.0, f"the follower took {took:.2f}s to see the drain"
        with pytest.raises(queue.Empty):
            follower.next(timeout=0.5)
    finally:
        follower.close()
    assert "Traceback" not in follower.proc.stderr.read()

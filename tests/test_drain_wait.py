"""`octonodes drain NODE --wait` for maintenance runbooks: it returns once
nothing runs on the node; at its timeout it exits 5 and leaves the node
drained, or with --cancel-tasks cancels what still runs and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import wait_status
from helpers import octonodes, wait_until

pytestmark = pytest.mark.slow


def hold_until(path) -> list[str]:
    return ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.05; done', "sh", str(path)]


def sleeper() -> list[str]:
    return ["sh", "-c", "exec sleep 300"]


def running_on(cluster, name: str, count: int) -> None:
    wait_until(lambda: cluster.node(name, with_tasks=False).tasks == count, 20,
               message=f"{count} task(s) running on {name}")


def test_drain_wait_returns_when_the_running_tasks_end(fast_cluster, start_node, db, tmp_path):
    interval = fast_cluster.settings().heartbeat_interval
    release = tmp_path / "release"
    start_node("node-1")
    tasks = [fast_cluster.add_task(hold_until(release)) for _ in range(2)]
    running_on(fast_cluster, "node-1", 2)

    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    drain = subprocess.Popen(
        [sys.executable, "-m", "octonodes", "--db", db, "drain", "node-1", "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_status(fast_cluster, "node-1", "Draining")
        since = fast_cluster.node("node-1", with_tasks=False).last_seen

        def still_waiting():
            assert drain.poll() is None, drain.communicate()
            node = fast_cluster.node("node-1", with_tasks=False)
            return (node.last_seen - since).total_seconds() >= 2.5 * interval

        wait_until(still_waiting, 10, message="a few check-ins while drain --wait waits")
        release.touch()
        out, err = drain.communicate(timeout=20)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()
    assert drain.returncode == 0, err
    assert "node-1 is drained" in out
    assert [fast_cluster.task(t.id).state for t in tasks] == ["Success", "Success"]
    wait_status(fast_cluster, "node-1", "Drained")

    again = octonodes(db, "drain", "node-1", "--wait")
    assert again.returncode == 0, again.stderr
    assert "already drained" in again.stdout


def test_drain_wait_timeout_exits_5_and_the_node_stays_drained(fast_cluster, start_node, db):
    start_node("node-1")
    task = fast_cluster.add_task(sleeper())
    running_on(fast_cluster, "node-1", 1)

    result = octonodes(db, "drain", "node-1", "--timeout", "1s")
    assert result.returncode == 5, result
    assert "stays drained" in result.stderr, result.stderr
    assert result.stderr.startswith("Error:") or "\nError:" in result.stderr
    node = fast_cluster.node("node-1", with_tasks=False)
    assert node.drain and node.status == "Draining", node
    assert fast_cluster.task(task.id).state == "Executing", "a drain timeout kills nothing"


def test_drain_cancel_tasks_cancels_what_still_runs_and_exits_0(fast_cluster, start_node, db):
    start_node("node-1", "--cap", "3")
    task = fast_cluster.add_task(sleeper(), name="long-2")
    other = fast_cluster.add_task(sleeper())
    running_on(fast_cluster, "node-1", 2)

    result = octonodes(db, "drain", "node-1", "--timeout", "1s", "--cancel-tasks")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    # A line per canceled task on stdout, so logs and scripts keep what was cut short.
    assert sorted(lines[:-1]) == sorted([f"canceled task {task.id} (long-2)",
                                         f"canceled task {other.id} ({other.name})"]), result
    assert lines[-1] == "node-1 is drained: no tasks running", result
    ended = fast_cluster.task(task.id)
    assert ended.state == "Canceled", ended
    node = fast_cluster.node("node-1", with_tasks=False)
    assert node.drain and node.status == "Drained" and node.tasks == 0, node

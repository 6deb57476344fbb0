"""The shortest path through a real node: a task queued, claimed, run, recorded."""

import pytest

from conftest import wait_status

pytestmark = pytest.mark.slow


def test_a_node_runs_a_task(fast_cluster, start_node):
    start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    task = fast_cluster.add_task(["sh", "-c", "echo hello"])
    done = fast_cluster.wait(task.id, timeout=20)
    assert done.state == "Success", done
    assert done.node == "node-1"
    assert b"".join(fast_cluster.log(task.id)) == b"hello\n"

"""Stopping a node with signals: the first SIGTERM is a warm stop (finish the
running tasks, claim nothing, then exit 0 as stopped); a second is a cold
stop (cancel them: they end Canceled, "node shut down")."""

from __future__ import annotations

import signal

import pytest

from conftest import wait_status
from helpers import pid_alive, read_pid, wait_until

pytestmark = pytest.mark.slow


def test_a_warm_stop_finishes_the_running_task_claims_nothing_and_exits_0(
        fast_cluster, start_node, tmp_path):
    interval = fast_cluster.settings().heartbeat_interval
    release = tmp_path / "release"
    node = start_node("node-1")
    running = fast_cluster.add_task(
        ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.05; done; echo finished', "sh", str(release)])
    wait_until(lambda: fast_cluster.task(running.id).state == "Executing", 20,
               message="the task to start")

    node.signal(signal.SIGTERM)
    wait_status(fast_cluster, "node-1", "Draining")
    node.wait_log("stop requested", timeout=5)
    later = fast_cluster.add_task(["true"])

    # It keeps checking in, shows Draining, runs its task and claims nothing.
    since = fast_cluster.node("node-1", with_tasks=False).last_seen

    def holding():
        node_now = fast_cluster.node("node-1", with_tasks=False)
        assert node_now.status == "Draining", node_now
        assert fast_cluster.task(later.id).state == "Queued"
        assert fast_cluster.task(running.id).state == "Executing"
        assert node.alive()
        return (node_now.last_seen - since).total_seconds() >= 2.5 * interval

    wait_until(holding, 10, message="the stopping node to check in a few times")

    release.touch()
    done = fast_cluster.wait(running.id, timeout=20)
    assert done.state == "Success", done
    assert b"".join(fast_cluster.log(running.id)) == b"finished\n"
    assert node.wait_exit(20) == 0, node.log()
    stopped = fast_cluster.node("node-1", with_tasks=False)
    assert stopped.status == "Offline" and stopped.offline_reason == "stopped", stopped
    assert fast_cluster.task(later.id).state == "Queued"


def test_a_second_signal_cancels_the_running_task_and_the_node_exits(
        fast_cluster, start_node, tmp_path):
    grace = fast_cluster.settings().cancel_grace
    pid_file = tmp_path / "pid"
    node = start_node("node-1")
    task = fast_cluster.add_task(
        ["sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pid_file)])
    pid = read_pid(pid_file)

    node.signal(signal.SIGTERM)
    wait_status(fast_cluster, "node-1", "Draining")
    assert fast_cluster.task(task.id).state == "Executing"
    node.signal(signal.SIGTERM)

    ended = fast_cluster.wait(task.id, timeout=grace + 5)
    assert ended.state == "Canceled", ended
    assert ended.error == "node shut down", ended.error
    node.wait_exit(grace + 5)
    assert not pid_alive(pid)
    stopped = fast_cluster.node("node-1", with_tasks=False)
    assert stopped.status == "Offline" and stopped.offline_reason == "stopped", stopped

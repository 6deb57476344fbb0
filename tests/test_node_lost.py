"""A node that dies mid-task: the cluster ends its tasks (or queues them again
when they have retries left), the task's process dies with the node, and a
new process taking over the name ends the old tasks at once. A node whose row
is deleted under it kills its tasks and exits."""

from __future__ import annotations

import time

import pytest

import octonodes
from conftest import wait_status
from helpers import octonodes as run_cli
from helpers import pid_alive, read_pid, wait_until

pytestmark = pytest.mark.slow


def sleeper(pid_file) -> list[str]:
    """A task that writes its pid and then sleeps as that same process."""
    return ["sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pid_file)]


def test_a_killed_nodes_task_fails_as_lost_and_its_process_dies(fast_cluster, start_node, tmp_path):
    """Another node ends it within offline_after and a check-in, and does not
    run it again (no retries by default)."""
    settings = fast_cluster.settings()
    lost = start_node("node-a")
    start_node("node-b")
    fast_cluster.drain("node-b")  # node-b only reaps: the task can only go to node-a
    wait_status(fast_cluster, "node-b", "Drained")
    pid_file = tmp_path / "pid"
    task = fast_cluster.add_task(sleeper(pid_file))
    pid = read_pid(pid_file)
    assert fast_cluster.task(task.id).node == "node-a"
    fast_cluster.undrain("node-b")  # free to claim the task, were it queued again
    wait_status(fast_cluster, "node-b", "Running")

    lost.kill9()
    killed = time.monotonic()
    wait_until(lambda: not pid_alive(pid), 5,
               message=f"the task's process {pid} to die with its node")

    limit = settings.offline_after + settings.heartbeat_interval + 2
    ended = wait_until(lambda: (t := fast_cluster.task(task.id)).ended and t, limit,
                       message="the lost node's task to end")
    took = time.monotonic() - killed
    assert ended.state == "Failed", ended
    assert "lost" in ended.error and "last seen" in ended.error, ended.error
    assert "cancel" not in ended.error
    assert (ended.node, ended.attempt) == ("node-a", 1), "retries are off by default"
    last_seen = fast_cluster.node("node-a", with_tasks=False).last_seen
    assert (ended.finished_at - last_seen).total_seconds() >= settings.offline_after, \
        "ended before the node could be called lost"
    assert took < limit
    node = fast_cluster.node("node-a", with_tasks=False)
    assert node.status == "Offline" and node.offline_reason == "lost", node


def test_a_killed_nodes_task_dies_with_its_children(fast_cluster, start_node, tmp_path):
    """The watchdog kills the task's whole process group, not only its
    first process: a child it started in the background dies too."""
    node = start_node("node-a")
    pid_file = tmp_path / "pids"
    fast_cluster.add_task(["sh", "-c", 'sleep 300 & echo "$$ $!" > "$1"; wait', "sh", str(pid_file)])
    wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"), 20,
               message="the task to write its pids")
    pids = [int(p) for p in pid_file.read_text().split()]
    assert all(pid_alive(p) for p in pids)
    node.kill9()
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5,
               message=f"the task {pids[0]} and its child {pids[1]} to die with their node")


def test_a_task_with_retries_runs_again_on_another_node(fast_cluster, start_node, tmp_path):
    runs = tmp_path / "runs"
    first = start_node("node-a")
    wait_status(fast_cluster, "node-a", "Running")
    script = ('echo "$OCTONODES_NODE $$" >> "$1"; '
              'if [ "$OCTONODES_NODE" = node-a ]; then exec sleep 300; fi; '
              'echo "ran on $OCTONODES_NODE"')
    task = fast_cluster.add_task(["sh", "-c", script, "sh", str(runs)], retries=1)
    wait_until(lambda: runs.exists() and runs.read_text().endswith("\n"), 20,
               message="the first attempt to start")
    first_pid = int(runs.read_text().split()[1])
    assert fast_cluster.task(task.id).attempt == 1

    start_node("node-b")
    wait_status(fast_cluster, "node-b", "Running")
    first.kill9()

    settings = fast_cluster.settings()
    done = fast_cluster.wait(task.id, timeout=settings.offline_after + 10)
    assert done.state == "Success", done
    assert done.node == "node-b" and done.attempt == 2, done
    assert [line.split()[0] for line in runs.read_text().splitlines()] == ["node-a", "node-b"]
    assert b"ran on node-b" in b"".join(fast_cluster.log(task.id))
    assert not pid_alive(first_pid)


def test_a_new_process_taking_over_the_name_ends_the_old_tasks_at_once(
        fast_cluster, start_node, tmp_path):
    old = start_node("node-a")
    pid_file = tmp_path / "pid"
    task = fast_cluster.add_task(sleeper(pid_file))
    pid = read_pid(pid_file)

    old.kill9()
    new = start_node("node-a")  # waits for its "started" line
    ended = fast_cluster.task(task.id)
    assert ended.state == "Failed", ended
    assert "lost" in ended.error, ended.error
    # Ended by the registration itself (same transaction, same instant), not
    # by a reaper after offline_after.
    registered = fast_cluster.node("node-a", with_tasks=False)
    assert ended.finished_at <= registered.started_at, (ended, registered)
    log = new.log()
    assert "took over" in log and f"ended tasks left by the previous process: {task.id}" in log, log
    wait_until(lambda: not pid_alive(pid), 5, message=f"the old task's process {pid} to die")
    wait_status(fast_cluster, "node-a", "Running")
    assert fast_cluster.wait(fast_cluster.add_task(["true"]).id, timeout=20).state == "Success"


def test_force_deleting_a_busy_node_fails_its_task_and_the_node_exits(
        fast_cluster, start_node, tmp_path, db):
    node = start_node("node-a")
    pid_file = tmp_path / "pid"
    task = fast_cluster.add_task(sleeper(pid_file))
    pid = read_pid(pid_file)

    refused = run_cli(db, "delete", "node-a")
    assert refused.returncode == 4, refused
    assert fast_cluster.task(task.id).state == "Executing"

    result = run_cli(db, "delete", "node-a", "--force")
    assert result.returncode == 0, result.stderr
    assert str(task.id) in result.stdout
    failed = fast_cluster.task(task.id)
    assert failed.state == "Failed" and "node-a was deleted" in failed.error, failed

    node.wait_exit(10)
    wait_until(lambda: not pid_alive(pid), 5, message=f"the task's process {pid} to die")
    assert "deleted or taken over" in node.log()
    after = fast_cluster.task(task.id)
    assert (after.state, after.error, after.finished_at) == \
        (failed.state, failed.error, failed.finished_at), \
        "the node overwrote the cluster's decision"
    with pytest.raises(octonodes.OctonodesError):
        fast_cluster.node("node-a")

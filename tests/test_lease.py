"""No task runs twice: the watchdog holds the node's lease and kills its
tasks without the node, whether the node is killed in the middle of a batch
of starts, frozen past offline_after, or cut off from a deleted database file.
Real node processes, real signals, both backends."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from conftest import wait_status
from helpers import octonodes, pid_alive, read_pid, wait_until
from http_helpers import start_http_node
from octonodes.node.liveness import fence_after

pytestmark = pytest.mark.slow

ROUNDS = 6
BATCH = 20


def task_processes(node_name: str) -> list[int]:
    """Every live process started as a task of `node_name` (found by the
    environment a node gives its tasks, whether or not it wrote its pid yet)."""
    marker = f"OCTONODES_NODE={node_name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def test_a_node_killed_mid_batch_leaves_no_task_running(fast_cluster, start_node, tmp_path):
    """Kill -9 the node 0-20 ms after the first task of a 20-task claim shows
    it started: every task process it started is dead within a second."""
    chance = random.Random(20)
    for round_ in range(ROUNDS):
        name = f"batch-{round_}-{uuid.uuid4().hex[:8]}"
        marks = tmp_path / name
        marks.mkdir()
        node = start_node(name, "--cap", str(BATCH))
        wait_status(fast_cluster, name, "Running")
        fast_cluster.add_tasks(
            [["sh", "-c", 'echo $$ > "$1/$OCTONODES_TASK_ID"; exec sleep 60', "sh", str(marks)]]
            * BATCH)
        deadline = time.monotonic() + 20
        while not any(marks.iterdir()):
            assert time.monotonic() < deadline, f"no task of round {round_} started"
            time.sleep(0.0005)
        time.sleep(chance.uniform(0, 0.02))
        node.kill9()
        killed = time.monotonic()
        wait_until(lambda: not task_processes(name), 1.0, interval=0.02,
                   message=f"every task process of {name} to die with it: "
                   + str([(p, Path(f"/proc/{p}/cmdline").read_bytes()) for p in task_processes(name)]))
        assert time.monotonic() - killed <= 1.0
        started = [int(p.read_text() or 0) for p in marks.iterdir()]
        assert started, "the batch started nothing"
        assert not [pid for pid in started if pid and pid_alive(pid)]


def tick_command(marks: Path) -> list[str]:
    """A task that writes `NODE TIME` every 50 ms until it is cancelled."""
    script = ('while :; do echo "$OCTONODES_NODE $(date +%s.%N)" >> "$1/$OCTONODES_TASK_ID"; '
              'sleep 0.05; done')
    return ["sh", "-c", script, "sh", str(marks)]


def ticks_by_node(path: Path) -> dict[str, list[float]]:
    ticks: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        node, _, at = line.partition(" ")
        if at:
            ticks.setdefault(node, []).append(float(at))
    return ticks


def test_a_frozen_node_never_overlaps_the_retry_and_records_nothing(
        fast_cluster, start_node, tmp_path):
    """SIGSTOP a node running three retried tasks for twice offline_after:
    another node runs attempt 2, and attempt 1 never runs at the same time
    (the watchdog killed it); resumed, the frozen node records nothing for them."""
    settings = fast_cluster.settings()
    marks = tmp_path / "marks"
    marks.mkdir()
    frozen = start_node("node-a", "--cap", "3")
    wait_status(fast_cluster, "node-a", "Running")
    tasks = [fast_cluster.add_task(tick_command(marks), retries=1) for _ in range(3)]
    wait_until(lambda: all((marks / str(t.id)).exists() for t in tasks), 20,
               message="the three tasks to start on node-a")
    start_node("node-b", "--cap", "3")
    wait_status(fast_cluster, "node-b", "Running")

    frozen.signal(signal.SIGSTOP)
    thawed_at = time.monotonic() + 2 * settings.offline_after
    try:
        wait_until(lambda: all("node-b" in ticks_by_node(marks / str(t.id)) for t in tasks),
                   settings.offline_after + 15, message="attempt 2 of each task to run on node-b")
        while time.monotonic() < thawed_at:  # the freeze lasts twice offline_after
            time.sleep(0.05)
    finally:
        frozen.signal(signal.SIGCONT)
    for task in tasks:
        frozen.wait_log(f"task {task.id} (attempt 1) is no longer this node's", timeout=10)
    for task in tasks:
        fast_cluster.cancel(task.id)
        ended = fast_cluster.wait(task.id, timeout=20)
        assert (ended.state, ended.node, ended.attempt) == ("Canceled", "node-b", 2), ended
        ticks = ticks_by_node(marks / str(task.id))
        assert ticks.keys() == {"node-a", "node-b"}, ticks.keys()
        assert max(ticks["node-a"]) < min(ticks["node-b"]), (
            f"task {task.id}: attempt 1 still ran when attempt 2 started")
    log = frozen.log()
    assert "already ended by the cluster" not in log, log
    assert frozen.alive(), log
    wait_status(fast_cluster, "node-a", "Running")


def test_a_frozen_node_s_tasks_die_at_the_fence_while_it_is_stopped(
        fast_cluster, start_node, tmp_path):
    """Without retries: the watchdog kills the tasks at the fence threshold,
    before the cluster may call the node lost, while the node is still
    stopped; resumed, the node records them Failed and claims again."""
    settings = fast_cluster.settings()
    node = start_node("node-a")
    wait_status(fast_cluster, "node-a", "Running")
    tasks, pids = [], []
    for i in range(2):
        pid_file = tmp_path / f"pid-{i}"
        tasks.append(fast_cluster.add_task(
            ["sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pid_file)]))
        pids.append(read_pid(pid_file))

    node.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_until(lambda: not any(pid_alive(p) for p in pids), settings.offline_after,
                   interval=0.02, message="the watchdog to kill the frozen node's tasks")
        killed_after = time.monotonic() - stopped
        assert killed_after < settings.offline_after
        assert killed_after <= fence_after(settings.heartbeat_interval, settings.offline_after) + 1.0
        assert node.alive()
    finally:
        node.signal(signal.SIGCONT)
    for task in tasks:
        ended = fast_cluster.wait(task.id, timeout=20)
        assert ended.state == "Failed" and "cannot run twice" in ended.error, ended
    wait_status(fast_cluster, "node-a", "Running")
    assert fast_cluster.wait(fast_cluster.add_task(["true"]).id, timeout=20).state == "Success"


@pytest.mark.only_backend("sqlite")
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_node_whose_database_file_goes_away_says_so_and_fences(
        fast_cluster, start_node, tmp_path, how):
    settings = fast_cluster.settings()
    node = start_http_node(start_node, "node-a")
    node.wait_ping(200)
    pid_file = tmp_path / "pid"
    fast_cluster.add_task(["sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pid_file)])
    pid = read_pid(pid_file)

    path = Path(fast_cluster.db)
    for side in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        side.unlink(missing_ok=True)
    if how == "replaced":
        made = octonodes(str(path), "init")
        assert made.returncode == 0, made.stderr
    gone = time.monotonic()
    wait_until(lambda: node.ping_status() == 503, 2 * settings.heartbeat_interval + 0.5,
               interval=0.02, message="the ping to say 503")
    assert time.monotonic() - gone <= 2 * settings.heartbeat_interval + 0.5
    wait_until(lambda: not pid_alive(pid), 5, message="the task to be killed")
    node.process.wait_log("was deleted or replaced", timeout=5)
    assert "lost its database" in node.process.log()
    assert node.process.alive()

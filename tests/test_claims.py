"""Claims obey drain and cap from the moment they are committed.

A drained node keeps checking in and claims nothing; undrained, it claims
again. Lowering a cap stops new claims and kills nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

import octonodes as lib
from conftest import wait_status
from helpers import octonodes, wait_until
from octonodes.store.base import Finish, Registration

slow = pytest.mark.slow

HEARTBEATS = 3
"""How many check-ins a held-back queue is watched for."""


def hold_until(path) -> list[str]:
    """A task that runs until `path` exists."""
    return ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.05; done', "sh", str(path)]


def watch_checkins(cluster, name: str, count: int, check) -> None:
    """Run `check` until the node has checked in `count` more times (by its
    last_seen), so a claim it would make has had every chance to happen."""
    interval = cluster.settings().heartbeat_interval
    since = cluster.node(name, with_tasks=False).last_seen

    def done():
        check()
        node = cluster.node(name, with_tasks=False)
        assert node.online, node
        return (node.last_seen - since).total_seconds() >= count * interval * 0.9

    wait_until(done, timeout=count * interval + 10,
               message=f"{name} to check in {count} times")


@slow
def test_a_drained_node_claims_nothing_and_claims_again_when_undrained(
        fast_cluster, start_node, db):
    start_node("node-1", "--cap", "4")
    wait_status(fast_cluster, "node-1", "Running")
    result = octonodes(db, "drain", "node-1")
    assert result.returncode == 0, result.stderr
    assert "node-1 is drained" in result.stdout
    wait_status(fast_cluster, "node-1", "Drained")

    tasks = fast_cluster.add_tasks([["true"]] * 3)

    def still_queued():
        states = [fast_cluster.task(t.id).state for t in tasks]
        assert states == ["Queued"] * 3, states

    watch_checkins(fast_cluster, "node-1", HEARTBEATS, still_queued)
    assert fast_cluster.node("node-1", with_tasks=False).status == "Drained"

    result = octonodes(db, "undrain", "node-1")
    assert result.returncode == 0, result.stderr
    for task in tasks:
        done = fast_cluster.wait(task.id, timeout=20)
        assert done.state == "Success" and done.node == "node-1", done
    wait_status(fast_cluster, "node-1", "Running")


@slow
def test_drain_holds_from_its_commit_while_the_node_is_busy_claiming(fast_cluster, start_node):
    """Drain lands while the node is claiming a stream of tasks: no task
    starts on it after the drain committed."""
    start_node("node-1", "--cap", "2")
    wait_status(fast_cluster, "node-1", "Running")
    tasks = fast_cluster.add_tasks([["sleep", "0.05"]] * 60)
    wait_until(lambda: sum(1 for t in fast_cluster.tasks(limit=None) if t.ended) >= 6, 20,
               message="the node to be busy claiming")

    fast_cluster.drain("node-1")
    drained_at = fast_cluster.now()
    wait_status(fast_cluster, "node-1", "Drained")

    after = fast_cluster.tasks(limit=None)
    late = [(t.id, t.started_at) for t in after if t.started_at and t.started_at > drained_at]
    assert not late, f"claimed after the drain committed at {drained_at}: {late}"
    queued = [t for t in after if t.state == "Queued"]
    assert queued, "the node ran every task before the drain: the test proves nothing"
    assert all(t.state in ("Success", "Queued") for t in after)

    fast_cluster.undrain("node-1")
    wait_until(lambda: fast_cluster.queue_summary().queued == 0
               and not fast_cluster.node("node-1", with_tasks=False).tasks, 60, interval=0.2,
               message="the node to run the rest")
    states = {t.state for t in fast_cluster.tasks(limit=None)}
    assert states == {"Success"}, states
    assert len(tasks) == 60


@slow
def test_lowering_the_cap_stops_claims_and_kills_nothing(fast_cluster, start_node, db, tmp_path):
    release = tmp_path / "release"
    start_node("node-1", "--cap", "3")
    wait_status(fast_cluster, "node-1", "Running")
    long = [fast_cluster.add_task(hold_until(release), name=f"long-{i}") for i in range(3)]
    wait_until(lambda: fast_cluster.node("node-1", with_tasks=False).tasks == 3, 20,
               message="three tasks running")

    result = octonodes(db, "cap", "node-1", "1")
    assert result.returncode == 0, result.stderr
    assert "3 -> 1" in result.stdout
    new = [fast_cluster.add_task(["true"], name=f"new-{i}") for i in range(2)]

    def nothing_changed():
        assert [fast_cluster.task(t.id).state for t in long] == ["Executing"] * 3
        assert [fast_cluster.task(t.id).state for t in new] == ["Queued"] * 2

    watch_checkins(fast_cluster, "node-1", HEARTBEATS, nothing_changed)
    node = fast_cluster.node("node-1", with_tasks=False)
    assert (node.task_cap, node.tasks) == (1, 3), node

    release.touch()
    ended_long = [fast_cluster.wait(t.id, timeout=20) for t in long]
    assert [t.state for t in ended_long] == ["Success"] * 3, ended_long
    ended_new = [fast_cluster.wait(t.id, timeout=20) for t in new]
    assert [t.state for t in ended_new] == ["Success"] * 2, ended_new

    # Cap 1: each new task started only once nothing else ran, oldest first.
    last_long_end = max(t.finished_at for t in ended_long)
    assert ended_new[0].started_at >= last_long_end, (ended_new[0], last_long_end)
    assert ended_new[1].started_at >= ended_new[0].finished_at, ended_new


@slow
def test_a_node_with_cap_zero_claims_nothing(fast_cluster, start_node):
    start_node("node-1", "--cap", "0")
    wait_status(fast_cluster, "node-1", "Running")
    task = fast_cluster.add_task(["true"])

    def still_queued():
        assert fast_cluster.task(task.id).state == "Queued"

    watch_checkins(fast_cluster, "node-1", HEARTBEATS, still_queued)
    fast_cluster.set_cap("node-1", 1)
    assert fast_cluster.wait(task.id, timeout=20).state == "Success"


# -- the claim itself, through the store: no node process, an injected clock ---

def _register(store, name: str, instance: str, cap: int) -> None:
    store.register(Registration(name=name, instance_id=instance, host="test-host", pid=1,
                                version=lib.__version__, heartbeat_interval=10.0, task_cap=cap))


def test_the_claim_itself_reads_drain_cap_and_liveness(clocked):
    """Whatever the node believes, the claim transaction decides: drain,
    cap, shutting down, instance and liveness as committed, oldest first."""
    cluster, clock = clocked
    store = cluster.store
    _register(store, "node-1", "i-1", cap=2)
    tasks = cluster.add_tasks([["true"]] * 6)

    first = store.claim("node-1", "i-1", 1000)
    assert [t.id for t in first] == [tasks[0].id, tasks[1].id], "cap 2, oldest first"
    assert all(t.state == "Executing" and t.node == "node-1" and t.attempt == 1 for t in first)
    assert store.claim("node-1", "i-1", 1000) == [], "at its cap"

    cluster.set_cap("node-1", 3)
    assert [t.id for t in store.claim("node-1", "i-1", 1000)] == [tasks[2].id]
    cluster.set_cap("node-1", 1)
    assert store.claim("node-1", "i-1", 1000) == [], "a lowered cap stops claims"
    assert [t.state for t in cluster.tasks(node="node-1")] == ["Executing"] * 3, \
        "a lowered cap kills nothing"
    assert store.finish_task(tasks[0].id, "i-1", 1, lib.TaskState.SUCCESS, exit_code=0)
    assert store.finish_task(tasks[1].id, "i-1", 1, lib.TaskState.SUCCESS, exit_code=0)
    assert store.finish_task(tasks[2].id, "i-1", 1, lib.TaskState.SUCCESS, exit_code=0)
    cluster.set_cap("node-1", 5)

    cluster.drain("node-1")
    assert store.claim("node-1", "i-1", 1000) == [], "drained"
    cluster.undrain("node-1")
    assert store.claim("node-1", "i-2", 1000) == [], "another instance owns nothing"
    assert store.check_in("node-1", "i-1", shutting_down=True, heartbeat_interval=10.0)
    assert store.claim("node-1", "i-1", 1000) == [], "shutting down"
    assert store.check_in("node-1", "i-1", shutting_down=False, heartbeat_interval=10.0)

    clock.now += timedelta(seconds=cluster.settings().offline_after + 1)
    assert store.claim("node-1", "i-1", 1000) == [], "offline: no check-in for too long"
    assert store.check_in("node-1", "i-1", shutting_down=False, heartbeat_interval=10.0)
    claimed = store.claim("node-1", "i-1", 2)
    assert [t.id for t in claimed] == [tasks[3].id, tasks[4].id], "the node's own limit counts too"
    assert [t.id for t in store.claim("node-1", "i-1", 1)] == [tasks[5].id], \
        "a limit below the cap, with tasks running, still takes what the cap leaves room for"
    assert cluster.queue_summary().queued == 0


def test_recording_ends_claims_what_they_made_room_for(clocked):
    """`exchange`: ends recorded and their successors claimed in one
    transaction, within the cap as it stands once the ends count."""
    cluster, _ = clocked
    store = cluster.store
    _register(store, "node-1", "i-1", cap=3)
    tasks = cluster.add_tasks([["true"]] * 8)
    running = store.claim("node-1", "i-1", 1000)
    assert [t.id for t in running] == [t.id for t in tasks[:3]]

    ends = [Finish(running[0].id, 1, lib.TaskState.SUCCESS, 0, None),
            Finish(running[1].id, 1, lib.TaskState.FAILED, 2, "exited with code 2")]
    owned, claimed = store.exchange("node-1", "i-1", ends, [], 2)
    assert owned == [True, True]
    assert [t.id for t in claimed] == [tasks[3].id, tasks[4].id], "two ended, two taken"
    assert [(t.state, t.exit_code) for t in (cluster.task(tasks[0].id), cluster.task(tasks[1].id))] \
        == [("Success", 0), ("Failed", 2)]

    # Already ended (by the cluster, say): not ours any more, and no room made.
    owned, claimed = store.exchange("node-1", "i-1", ends, [], 1)
    assert owned == [False, False] and claimed == [], "at its cap: 3 still run"
    cluster.set_cap("node-1", 4)
    owned, claimed = store.exchange("node-1", "i-1", [], [], 5)
    assert [t.id for t in claimed] == [tasks[5].id], "a raised cap, read inside the claim"
    cluster.drain("node-1")
    ended = Finish(tasks[2].id, 1, lib.TaskState.SUCCESS, 0, None)
    owned, claimed = store.exchange("node-1", "i-1", [ended], [], 5)
    assert owned == [True] and claimed == [], "drained: the end is recorded, nothing claimed"


def test_an_end_keeps_its_error_text_and_exit_code_exactly(clocked):
    """Whatever a task's error says (quotes, backslashes, braces, commas, a
    new line, the word NULL, any script) is stored as it was sent; so is a
    missing exit code."""
    cluster, _ = clocked
    store = cluster.store
    _register(store, "node-1", "i-1", cap=5)
    cluster.add_tasks([["true"]] * 5)
    running = store.claim("node-1", "i-1", 5)
    errors = ['cannot start \'a "b"\': c:\\d\\', "{x,y}", "two\nlines", "NULL", "ünïcödé ✓ 日本"]
    ends = [Finish(t.id, 1, lib.TaskState.FAILED, code, error)
            for t, code, error in zip(running, [None, 1, -9, 255, 2], errors)]
    owned, _ = store.exchange("node-1", "i-1", ends, [], 0)
    assert owned == [True] * 5
    assert [(cluster.task(t.id).exit_code, cluster.task(t.id).error) for t in running] \
        == list(zip([None, 1, -9, 255, 2], errors))


def test_two_nodes_never_claim_the_same_task(clocked):
    cluster, _ = clocked
    store = cluster.store
    _register(store, "node-1", "i-1", cap=1000)
    _register(store, "node-2", "i-2", cap=1000)
    tasks = cluster.add_tasks([["true"]] * 10)
    one = store.claim("node-1", "i-1", 4)
    two = store.claim("node-2", "i-2", 1000)
    assert [t.id for t in one] == [t.id for t in tasks[:4]]
    assert [t.id for t in two] == [t.id for t in tasks[4:]]
    assert store.claim("node-1", "i-1", 1000) == []

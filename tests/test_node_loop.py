"""The node loop's rules, one `run_once(now)` at a time, on a fake clock.

A real SQLite file whose clock is the test's; a node loop (`Worker`) with
that clock and no watchdog, whose tasks are `FakeRun`s the test ends by
hand. No processes and no waiting: each test runs in milliseconds. The
same rules with real processes are in test_fencing, test_shutdown,
test_node_lost and test_claims.
"""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

import octonodes
from octonodes.errors import Refused
from octonodes.models import NodeStatus, TaskState
from octonodes.node.exchange import REACTION_INTERVAL
from octonodes.node.held import FINISH_BATCH_WINDOW
from octonodes.node.liveness import RETRY_INTERVAL, fence_after
from octonodes.node.loop import Worker
from octonodes.node.shutdown import COLD_STOP_EXTRA
from octonodes.store.base import Registration, TaskSpec
from octonodes.store.sqlite import SQLiteStore
from octonodes.task_result import FINAL_REASONS, KillReason, outcome

STEP = 0.001
"""A turn of the loop, well inside FINISH_BATCH_WINDOW."""


class FakeClock:
    """The node's monotonic and boot clocks and the store's clock, moved together by hand."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.start = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def boottime(self) -> float:
        return self.seconds + 5.0

    def __call__(self) -> datetime:  # the store's clock
        return self.start + timedelta(seconds=self.seconds)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


class FakeRun:
    """A task's run whose "process" the test ends (`exit`); SIGKILL ends it
    at once, SIGTERM too unless it is `stubborn`."""

    def __init__(self, clock: FakeClock, task) -> None:
        self.clock, self.task = clock, task
        self.disowned = False
        self.stubborn = False
        self.term_sent_at: float | None = None
        self.grace = 0.0
        self.kill_reason: KillReason | None = None
        self.kill_detail: str | None = None
        self.returncode: int | None = None
        self.output = bytearray()

    def exit(self, code: int = 0, output: bytes = b"") -> None:
        self.output += output
        self.returncode = code

    def finished(self) -> bool:
        return self.returncode is not None

    def outcome(self):
        return outcome(started=True, returncode=self.returncode, kill_reason=self.kill_reason,
                       kill_detail=self.kill_detail, timeout=self.task.timeout)

    def take_output(self) -> bytes:
        data, self.output = bytes(self.output), bytearray()
        return data

    def _signal(self, sig: int) -> None:
        if not self.finished() and (sig == signal.SIGKILL or not self.stubborn):
            self.returncode = -sig

    def kill(self, reason: KillReason, detail: str | None = None) -> None:
        if self.kill_reason is None or reason in FINAL_REASONS:
            self.kill_reason, self.kill_detail = reason, detail
        self._signal(signal.SIGKILL)

    def disown(self) -> None:
        self.disowned = True
        self._signal(signal.SIGKILL)

    def terminate(self, reason: KillReason, grace: float, detail: str | None = None) -> None:
        if self.term_sent_at is None:
            self.kill_reason, self.kill_detail = reason, detail
            self.term_sent_at, self.grace = self.clock.monotonic(), grace
            self._signal(signal.SIGTERM)

    def escalate(self, now: float) -> None:
        if self.term_sent_at is not None and now - self.term_sent_at >= self.grace:
            self._signal(signal.SIGKILL)


class Node:
    """A `Worker` on the fake clock, its runs by task id, and a way to turn it."""

    def __init__(self, path: str, clock: FakeClock, name: str, cap: int | None = None) -> None:
        self.clock = clock
        self.runs: dict[int, FakeRun] = {}
        self.store = SQLiteStore(path, clock=clock, busy_timeout=0)  # a held lock fails at once
        self.worker = Worker(self.store, name, cap=cap, clock=clock, start_run=self._start_run,
                             start_watchdog=None)
        self.worker.start()

    def _start_run(self, task, node_name, log_limit, events, *, environment, watchdog) -> FakeRun:
        assert watchdog is None and node_name == self.worker.name
        run = self.runs[task.id] = FakeRun(self.clock, task)
        return run

    def turn(self, seconds: float = STEP) -> None:
        """Move the clock on, then one step of the loop."""
        self.clock.advance(seconds)
        self.worker.run_once(self.clock.monotonic())

    def react(self) -> None:
        """A turn late enough for a busy node to look at others' commits."""
        self.turn(REACTION_INTERVAL)

    def running(self) -> list[int]:
        return sorted(self.worker.held.runs)

    def end(self, *task_ids: int, code: int = 0) -> None:
        for task_id in task_ids:
            self.runs[task_id].exit(code)

    def close(self) -> None:
        if self.worker.lock is not None and self.worker.lock.is_locked:
            self.worker.stop.close()
        self.store.close()


@pytest.fixture(autouse=True)
def node_log(caplog):
    caplog.set_level(logging.INFO, logger="octonodes.node")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "cluster.db")


@pytest.fixture
def cluster(path, clock):
    c = octonodes.open(path, create=True, clock=clock)
    c.store.initialize()
    yield c
    c.close()


@pytest.fixture
def start(cluster, path, clock):
    nodes: list[Node] = []

    def start(name: str = "node-1", cap: int | None = None) -> Node:
        nodes.append(Node(path, clock, name, cap))
        return nodes[-1]

    yield start
    for node in nodes:
        node.close()


def add(cluster, count: int, retries: int = 0) -> list[int]:
    return [t.id for t in cluster.add_tasks([TaskSpec(command=["true"], retries=retries)] * count)]


def states(cluster, ids) -> list[str]:
    return [cluster.task(i).state.value for i in ids]


class WriteLock:
    """SQLite's write lock, held by another connection: the node can read but not write."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def react_while_locked(node: Node, path: str, caplog) -> None:
    """A turn that looks at others' commits while another connection holds
    the write lock: a node that may claim nothing does not ask (a claim would
    fail and say so), so a full or drained node costs the others no lock."""
    lock = WriteLock(path)
    try:
        node.react()
    finally:
        lock.release()
    assert "cannot claim" not in caplog.text, "a node that may claim nothing asked the database"


# -- claims: cap and drain ------------------------------------------------------------


def test_claims_up_to_the_cap_and_each_end_makes_room_for_one(cluster, start, path, caplog):
    node = start(cap=3)
    ids = add(cluster, 4)
    node.turn()
    assert node.running() == ids[:3]
    ids += add(cluster, 1)
    react_while_locked(node, path, caplog)
    assert states(cluster, ids) == ["Executing"] * 3 + ["Queued"] * 2
    node.end(ids[0])
    node.turn()  # recorded at once? no: others run; the end waits its window
    node.turn(FINISH_BATCH_WINDOW)
    assert node.running() == ids[1:4]
    assert states(cluster, ids)[0] == "Success"


def test_a_lowered_cap_claims_nothing_and_kills_nothing_until_there_is_room(cluster, start):
    node = start(cap=3)
    ids = add(cluster, 8)
    node.turn()
    cluster.set_cap("node-1", 1)
    node.react()
    node.react()
    assert node.worker.live.task_cap == 1
    assert node.running() == ids[:3]
    assert all(not run.finished() for run in node.runs.values()), "a lowered cap killed a task"
    node.end(ids[0], ids[1])
    node.turn()
    node.turn(FINISH_BATCH_WINDOW)
    assert node.running() == [ids[2]], "claimed past a lowered cap"
    node.end(ids[2])
    node.turn()
    assert node.running() == [ids[3]]
    cluster.set_cap("node-1", 4)
    node.react()
    assert node.running() == ids[3:7]


def test_a_drained_node_claims_nothing_until_undrained(cluster, start, path, caplog):
    node = start(cap=2)
    cluster.drain("node-1")
    node.turn()
    assert node.worker.live.drain
    ids = add(cluster, 3)
    react_while_locked(node, path, caplog)
    assert node.running() == []
    cluster.undrain("node-1")
    node.turn()
    assert node.running() == ids[:2]
    cluster.drain("node-1")
    node.react()
    node.end(*ids[:2])
    node.turn()
    assert node.running() == [] and states(cluster, ids) == ["Success", "Success", "Queued"]


def test_a_busy_node_looks_at_others_commits_at_most_every_reaction_interval(cluster, start):
    node = start(cap=1)
    [first] = add(cluster, 1)
    node.turn()  # an idle node answers a commit at once
    assert node.running() == [first]
    cluster.set_cap("node-1", 3)
    node.turn(REACTION_INTERVAL / 2)
    assert node.worker.live.task_cap == 1, "a busy node answered a commit at once"
    node.turn(REACTION_INTERVAL / 2)
    assert node.worker.live.task_cap == 3


# -- batching of task ends ---------------------------------------------------------------


def test_ends_within_the_window_are_recorded_in_one_exchange(cluster, start, clock):
    node = start(cap=3)
    ids = add(cluster, 3)
    node.turn()
    node.end(ids[0])
    node.turn()
    node.end(ids[1])
    node.turn()
    assert states(cluster, ids) == ["Executing"] * 3, "an end was recorded before its window"
    node.turn(FINISH_BATCH_WINDOW)
    first, second = (cluster.task(i) for i in ids[:2])
    assert (first.state, second.state) == (TaskState.SUCCESS, TaskState.SUCCESS)
    assert first.finished_at == second.finished_at == clock(), "not one transaction"


def test_a_lone_end_is_recorded_at_once(cluster, start, clock):
    node = start()
    [task_id] = add(cluster, 1)
    node.turn()
    node.end(task_id)
    node.turn()
    task = cluster.task(task_id)
    assert task.state is TaskState.SUCCESS and task.finished_at == clock()


def test_an_end_while_others_run_waits_the_window(cluster, start):
    node = start()
    ids = add(cluster, 2)
    node.turn()
    node.end(ids[0], code=3)
    node.turn()
    node.turn(FINISH_BATCH_WINDOW - STEP)
    assert states(cluster, ids) == ["Executing", "Executing"]
    node.turn(2 * STEP)
    assert states(cluster, ids) == ["Failed", "Executing"]
    assert cluster.task(ids[0]).exit_code == 3


# -- fencing, take-over, lost nodes -------------------------------------------------------


def test_after_a_gap_past_its_lease_a_node_kills_first_then_checks_in(cluster, start, caplog):
    node = start()
    ids = add(cluster, 2)
    node.turn()
    killed_at_check_in = []
    check_in = node.store.check_in

    def check_in_seen(*args, **kwargs):
        killed_at_check_in.append([run.kill_reason for run in node.runs.values()])
        return check_in(*args, **kwargs)

    node.store.check_in = check_in_seen
    settings = node.worker.settings
    node.turn(fence_after(settings.heartbeat_interval, settings.offline_after))  # frozen so long
    assert killed_at_check_in == [[KillReason.FENCE] * 2], "checked in before killing"
    assert "claiming again" in caplog.text and not node.worker.live.fenced
    node.turn()
    assert states(cluster, ids) == ["Failed", "Failed"]


def test_a_node_that_cannot_check_in_fences_itself_then_recovers(cluster, start, path, caplog):
    node = start(cap=2)
    settings = node.worker.settings
    ids = add(cluster, 2)
    node.turn()
    assert node.running() == ids
    lock = WriteLock(path)
    limit = fence_after(settings.heartbeat_interval, settings.offline_after)
    node.turn(settings.heartbeat_interval)  # the check-in fails
    assert "cannot check in" in caplog.text
    while node.worker.checkins.last_ok + limit - node.clock.boottime() > RETRY_INTERVAL:
        node.turn(RETRY_INTERVAL)
        assert not node.worker.live.fenced and not any(r.finished() for r in node.runs.values())
    node.turn(RETRY_INTERVAL)
    assert node.worker.live.fenced
    assert [r.kill_reason for r in node.runs.values()] == [KillReason.FENCE] * 2
    assert "claiming nothing" in caplog.text
    lock.release()
    more = add(cluster, 2)
    node.turn()  # before the next check-in: the ends are recorded, nothing is claimed
    assert node.running() == []
    assert states(cluster, ids + more) == ["Failed", "Failed", "Queued", "Queued"]
    assert "cannot run twice" in cluster.task(ids[0]).error
    node.turn(RETRY_INTERVAL)  # the check-in goes through
    assert not node.worker.live.fenced and "claiming again" in caplog.text
    node.turn()
    assert node.running() == more


@pytest.mark.parametrize("reaped", [False, True], ids=["still-its-own", "given-up-on"])
def test_a_claim_answered_past_the_lease_starts_nothing_until_the_next_check_in(
        cluster, start, reaped, caplog):
    """Frozen while its claim was on its way (the claim committed, its answer
    came once the lease had run out, perhaps once the cluster had given up on
    the node): the node starts nothing and fences; after its next check-in it
    runs what is still its own. The attempt given up on never starts."""
    node = start()
    [task_id] = add(cluster, 1, retries=1)
    settings = node.worker.settings
    claim = node.store.claim

    def claim_then_freeze(*args):
        claimed = claim(*args)
        node.clock.advance(fence_after(settings.heartbeat_interval, settings.offline_after))
        if reaped:
            node.clock.advance(settings.offline_after)
            assert cluster.store.reap().requeued == [task_id]
        return claimed

    node.store.claim = claim_then_freeze
    node.turn()
    assert node.runs == {}, "started a task claimed past the lease"
    assert node.worker.live.fenced and "claiming nothing" in caplog.text
    del node.store.claim
    node.turn()  # checks in, then runs what is still its own
    started = [(run.task.id, run.task.attempt) for run in node.runs.values()]
    assert started == [(task_id, 2 if reaped else 1)]


@pytest.mark.parametrize("how", ["deleted", "taken over"])
def test_a_node_whose_row_is_gone_kills_its_tasks_and_exits_4(cluster, start, how, caplog):
    node = start()
    ids = add(cluster, 2)
    node.turn()
    if how == "deleted":
        cluster.delete("node-1", force=True)
    else:
        cluster.store.register(Registration(
            name="node-1", instance_id="another", host=socket.gethostname(), pid=1, version="0",
            heartbeat_interval=10, holder_gone=True))
    node.turn(node.worker.settings.heartbeat_interval)
    assert node.worker.done and node.worker.exit_code == Refused.exit_code == 4
    assert [r.kill_reason for r in node.runs.values()] == [KillReason.ORPHANED] * 2
    assert "deleted or taken over" in caplog.text


@pytest.mark.parametrize("retries", [0, 1])
def test_a_check_in_reaps_a_lost_nodes_tasks(cluster, start, retries, caplog):
    this, lost = start("node-1"), start("node-2", cap=1)
    [task_id] = add(cluster, 1, retries=retries)
    lost.turn()
    assert lost.running() == [task_id]
    settings = this.worker.settings
    waited = 0.0
    while waited <= settings.offline_after:
        this.turn(settings.heartbeat_interval)  # node-2 no longer checks in
        waited += settings.heartbeat_interval
        if waited < settings.offline_after:
            assert cluster.task(task_id).state is TaskState.EXECUTING, "reaped too soon"
    task = cluster.task(task_id)
    if retries:
        assert (task.state, task.node) == (TaskState.EXECUTING, "node-1"), "not queued again"
        assert task.attempt == 2 and this.running() == [task_id]
        assert f"task {task_id} queued again: its node was lost" in caplog.text
    else:
        assert task.state is TaskState.FAILED and this.running() == []
        assert f"task {task_id} failed: its node was lost" in caplog.text


def test_tasks_claimed_as_the_answer_was_lost_are_adopted(cluster, start):
    node = start(cap=2)
    ids = add(cluster, 2)
    store = node.store
    claim = store.claim

    def claim_then_fail(*args):
        claim(*args)
        raise octonodes.DatabaseError("lost the connection to the database")

    store.claim = claim_then_fail
    node.turn()
    assert node.running() == [] and states(cluster, ids) == ["Executing"] * 2
    del store.claim
    node.turn()
    assert node.running() == ids


# -- stopping ------------------------------------------------------------------------------


def test_a_warm_stop_claims_nothing_lets_tasks_finish_and_marks_the_node_stopped(
        cluster, start, path, caplog):
    node = start(cap=2)
    ids = add(cluster, 1)
    node.turn()
    node.worker.stop.request_stop()
    node.turn()
    assert node.worker.live.shutting_down and not node.worker.done
    ids += add(cluster, 1)
    react_while_locked(node, path, caplog)
    node.turn(node.worker.settings.heartbeat_interval)
    assert node.running() == [ids[0]] and not node.runs[ids[0]].finished()
    node.end(ids[0])
    node.turn()
    assert node.worker.done and node.running() == []
    assert states(cluster, ids) == ["Success", "Queued"]
    node.worker.stop.close()
    assert cluster.node("node-1").status is NodeStatus.OFFLINE
    assert node.worker.live.stopped


def test_a_cold_stop_cancels_running_tasks(cluster, start):
    node = start(cap=2)
    ids = add(cluster, 2)
    node.turn()
    node.worker.stop.request_stop()
    node.worker.stop.request_stop()
    node.turn()
    assert [r.kill_reason for r in node.runs.values()] == [KillReason.SHUTDOWN] * 2
    node.turn()
    assert node.worker.done
    ended = [(t.state, t.error) for t in map(cluster.task, ids)]
    assert ended == [(TaskState.CANCELED, "node shut down")] * 2


def test_a_cold_stop_gives_up_on_a_database_that_takes_nothing(cluster, start, path, caplog):
    node = start()
    [task_id] = add(cluster, 1)
    node.turn()
    lock = WriteLock(path)
    node.worker.stop.request_stop()
    node.turn()
    node.worker.stop.request_stop()
    node.turn()
    assert node.runs[task_id].kill_reason is KillReason.SHUTDOWN
    grace = node.worker.settings.cancel_grace
    node.turn(grace + COLD_STOP_EXTRA - STEP)
    assert not node.worker.done and node.worker.held.finishes
    node.turn(2 * STEP)
    assert node.worker.done and not node.worker.held.finishes
    assert "giving up on 1 task record(s)" in caplog.text
    lock.release()
    assert cluster.task(task_id).state is TaskState.EXECUTING

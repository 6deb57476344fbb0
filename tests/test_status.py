"""Node status derivation at its boundaries, and the node verbs and
documents that show it (list, show, drain, undrain, cap, delete).

Time is injected through the store: a `FakeClock` the test moves, so every
boundary is exact and no test sleeps. Nodes are registered and checked in
through the store, as a `node run` process would.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

import octonodes
from octonodes.cli.app import app
from octonodes.errors import NotFound, Refused
from octonodes.models import NodeStatus, OfflineReason, TaskState
from octonodes.store.base import Registration

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
NODE_FIELDS = {"name", "status", "last_seen", "task_cap", "tasks", "drain"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def register(c: octonodes.Cluster, name: str, *, interval: float = 10.0, cap: int | None = None,
             host: str = "host-a", pid: int = 4242, instance: str | None = None,
             holder_gone: bool = False) -> str:
    """Register `name` as a fresh `node run` instance would; returns its instance id."""
    instance = instance or uuid.uuid4().hex
    c.store.register(Registration(name=name, instance_id=instance, host=host, pid=pid,
                                  version="test", heartbeat_interval=interval, task_cap=cap,
                                  holder_gone=holder_gone))
    return instance


def check_in(c: octonodes.Cluster, name: str, instance: str, *, interval: float = 10.0,
             shutting_down: bool = False):
    result = c.store.check_in(name, instance, shutting_down=shutting_down,
                              heartbeat_interval=interval)
    assert result is not None, f"check-in of {name} was refused"
    return result


def status(c: octonodes.Cluster, name: str) -> NodeStatus:
    return c.node(name, with_tasks=False).status


def claim_one(c: octonodes.Cluster, name: str, instance: str):
    task = c.add_task(["sleep", "60"])
    claimed = c.store.claim(name, instance, 1)
    assert [t.id for t in claimed] == [task.id]
    return claimed[0]


# -- derivation at the boundaries -----------------------------------------------


def test_a_registered_node_is_running(timed, clock):
    register(timed, "node-1")
    node = timed.node("node-1")
    assert node.status is NodeStatus.RUNNING
    assert node.status == "Running"
    assert node.last_seen == T0 and node.last_seen.tzinfo is not None
    assert node.drain is False and node.tasks == 0 and node.task_cap == 5
    assert node.offline_reason is None and node.active_tasks == []


def test_online_exactly_at_offline_after_and_lost_just_past_it(timed, clock):
    instance = register(timed, "node-1")
    clock.advance(30)
    check_in(timed, "node-1", instance)  # last seen now T0 + 30 s
    seen = clock.now
    clock.advance(60)  # exactly offline_after (default 60 s)
    assert status(timed, "node-1") is NodeStatus.RUNNING
    clock.advance(0.001)
    node = timed.node("node-1")
    assert node.status is NodeStatus.OFFLINE
    assert node.offline_reason is OfflineReason.LOST
    assert node.last_seen == seen
    assert node.offline_since == seen + timedelta(seconds=60)


def test_a_check_in_keeps_a_node_online(timed, clock):
    instance = register(timed, "node-1")
    for _ in range(5):
        clock.advance(50)
        check_in(timed, "node-1", instance)
        assert status(timed, "node-1") is NodeStatus.RUNNING
    assert timed.node("node-1").last_seen == clock.now


@pytest.mark.parametrize("offline_after, interval, threshold", [
    ("60s", 10.0, 60.0),   # the setting rules
    ("60s", 30.0, 60.0),   # exactly twice the interval: the same
    ("60s", 40.0, 80.0),   # a slow node: twice its own interval
    ("12s", 5.0, 12.0),
    ("12s", 9.0, 18.0),
])
def test_offline_after_is_never_less_than_twice_the_nodes_own_interval(
        timed, clock, offline_after, interval, threshold):
    timed.set_setting("heartbeat_interval", "5s")
    timed.set_setting("offline_after", offline_after)
    register(timed, "node-1", interval=interval)
    clock.advance(threshold)
    assert status(timed, "node-1") is NodeStatus.RUNNING
    clock.advance(0.001)
    assert status(timed, "node-1") is NodeStatus.OFFLINE


def test_the_interval_a_node_reports_at_check_in_counts(timed, clock):
    instance = register(timed, "node-1", interval=10.0)
    check_in(timed, "node-1", instance, interval=45.0)
    assert timed.node("node-1").heartbeat_interval == 45.0
    clock.advance(90)
    assert status(timed, "node-1") is NodeStatus.RUNNING
    clock.advance(0.001)
    assert status(timed, "node-1") is NodeStatus.OFFLINE


def test_a_changed_offline_after_applies_when_read(timed, clock):
    register(timed, "node-1")
    clock.advance(40)
    assert status(timed, "node-1") is NodeStatus.RUNNING
    timed.set_setting("offline_after", "30s")
    assert status(timed, "node-1") is NodeStatus.OFFLINE


def test_drain_on_an_idle_node_is_drained_and_undrain_is_running(timed):
    register(timed, "node-1")
    assert timed.drain("node-1") is True
    node = timed.node("node-1")
    assert node.status is NodeStatus.DRAINED and node.drain is True
    assert timed.undrain("node-1") is True
    node = timed.node("node-1")
    assert node.status is NodeStatus.RUNNING and node.drain is False


def test_drain_with_active_tasks_is_draining_until_they_end(timed):
    instance = register(timed, "node-1")
    task = claim_one(timed, "node-1", instance)
    timed.drain("node-1")
    node = timed.node("node-1")
    assert node.status is NodeStatus.DRAINING
    assert node.tasks == 1 and [t.id for t in node.active_tasks] == [task.id]
    assert timed.store.finish_task(task.id, instance, task.attempt, TaskState.SUCCESS, exit_code=0)
    node = timed.node("node-1")
    assert node.status is NodeStatus.DRAINED and node.tasks == 0


def test_a_cancelling_task_still_counts_as_running(timed):
    instance = register(timed, "node-1")
    task = claim_one(timed, "node-1", instance)
    timed.cancel(task.id)
    timed.drain("node-1")
    node = timed.node("node-1")
    assert node.status is NodeStatus.DRAINING and node.tasks == 1


def test_a_node_shutting_down_is_draining(timed, clock):
    instance = register(timed, "node-1")
    claim_one(timed, "node-1", instance)
    clock.advance(5)
    check_in(timed, "node-1", instance, shutting_down=True)
    node = timed.node("node-1")
    assert node.status is NodeStatus.DRAINING
    assert node.shutting_down is True and node.drain is False


def test_a_node_shutting_down_with_nothing_left_is_not_running(timed):
    instance = register(timed, "node-1")
    check_in(timed, "node-1", instance, shutting_down=True)
    # Drain is off, so not Drained; it is on its way out, so not Running either.
    assert status(timed, "node-1") is NodeStatus.DRAINING


def test_a_stopped_node_is_offline_at_once(timed, clock):
    instance = register(timed, "node-1")
    clock.advance(1)
    timed.store.mark_stopped("node-1", instance)
    node = timed.node("node-1")  # no time passes: stopped shows at once
    assert node.status is NodeStatus.OFFLINE
    assert node.offline_reason is OfflineReason.STOPPED
    assert node.stopped_at == clock.now and node.offline_since == clock.now
    clock.advance(3600)  # and stays "stopped", never "lost"
    assert timed.node("node-1").offline_reason is OfflineReason.STOPPED


def test_a_stopped_instance_cannot_check_in_again(timed):
    instance = register(timed, "node-1")
    timed.store.mark_stopped("node-1", instance)
    assert timed.store.check_in("node-1", instance, shutting_down=False,
                                heartbeat_interval=10.0) is None
    assert status(timed, "node-1") is NodeStatus.OFFLINE


@pytest.mark.parametrize("how", ["lost", "stopped"])
def test_offline_wins_over_drain(timed, clock, how):
    instance = register(timed, "node-1")
    timed.drain("node-1")
    if how == "lost":
        clock.advance(60.001)
    else:
        timed.store.mark_stopped("node-1", instance)
    node = timed.node("node-1")
    assert node.status is NodeStatus.OFFLINE
    assert node.drain is True
    assert node.offline_reason == how


def test_offline_wins_over_draining_with_tasks(timed, clock):
    instance = register(timed, "node-1")
    claim_one(timed, "node-1", instance)
    timed.drain("node-1")
    clock.advance(61)
    node = timed.node("node-1")
    assert node.status is NodeStatus.OFFLINE and node.drain is True
    assert node.offline_reason is OfflineReason.LOST


def test_times_are_aware_utc_with_sub_second_precision(timed, clock):
    clock.now = T0 + timedelta(microseconds=123456)
    register(timed, "node-1")
    node = timed.node("node-1")
    assert node.last_seen.utcoffset() == timedelta(0)
    assert abs(node.last_seen - clock.now) < timedelta(microseconds=2)
    assert node.last_seen.microsecond != 0


def test_nodes_filter_by_status(timed, clock):
    old = register(timed, "lost-1")
    clock.advance(120)
    register(timed, "run-1")
    register(timed, "drained-1")
    timed.drain("drained-1")
    stopped = register(timed, "stopped-1")
    timed.store.mark_stopped("stopped-1", stopped)
    assert old
    by_status = {n.name: n.status for n in timed.nodes()}
    assert by_status == {"drained-1": "Drained", "lost-1": "Offline", "run-1": "Running",
                         "stopped-1": "Offline"}
    assert [n.name for n in timed.nodes(["Offline"])] == ["lost-1", "stopped-1"]
    assert [n.name for n in timed.nodes([NodeStatus.RUNNING, "Drained"])] == ["drained-1", "run-1"]


# -- one name, one process ----------------------------------------------


def test_a_live_holder_keeps_its_name_and_is_named(timed, clock):
    register(timed, "node-1", host="host-a", pid=111)
    clock.advance(59)
    with pytest.raises(Refused) as refused:
        register(timed, "node-1", host="host-b", pid=222)
    assert refused.value.exit_code == 4
    assert "111" in str(refused.value) and "host-a" in str(refused.value)
    node = timed.node("node-1")
    assert (node.host, node.pid) == ("host-a", 111)


def test_a_same_host_holder_proven_gone_is_taken_over_at_once(timed, clock):
    old = register(timed, "node-1", host="host-a", pid=111)
    task = claim_one(timed, "node-1", old)
    clock.advance(1)
    # A process on another host cannot prove the holder dead: refused.
    with pytest.raises(Refused):
        register(timed, "node-1", host="host-b", pid=333, holder_gone=True)
    new = register(timed, "node-1", host="host-a", pid=222, holder_gone=True)
    node = timed.node("node-1")
    assert node.status is NodeStatus.RUNNING
    assert (node.instance_id, node.pid) == (new, 222)
    assert timed.task(task.id).state is TaskState.FAILED  # left behind: ended at once
    assert timed.store.check_in("node-1", old, shutting_down=False, heartbeat_interval=10) is None


def test_an_offline_holder_is_taken_over_from_anywhere(timed, clock):
    register(timed, "node-1", host="host-a", pid=111)
    clock.advance(60.001)
    new = register(timed, "node-1", host="host-b", pid=222)
    node = timed.node("node-1")
    assert node.status is NodeStatus.RUNNING and node.instance_id == new
    assert node.host == "host-b"


def test_drain_and_cap_are_kept_across_restarts(timed, clock):
    first = register(timed, "node-1", cap=3)
    timed.drain("node-1")
    timed.store.mark_stopped("node-1", first)
    clock.advance(5)
    register(timed, "node-1")  # no cap given: the stored one stands
    node = timed.node("node-1")
    assert node.status is NodeStatus.DRAINED and node.task_cap == 3
    second = node.instance_id
    timed.store.mark_stopped("node-1", second)
    register(timed, "node-1", cap=8)  # a cap given at start replaces it
    node = timed.node("node-1")
    assert node.task_cap == 8 and node.drain is True


# -- the verbs and documents, through the CLI --------------------------------------


def run(db: str, *args: str):
    # A wide terminal, so Rich does not fold a long temporary path or a row.
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, ["--db", db, *args])


def past_cluster(db: str, seconds_ago: float) -> octonodes.Cluster:
    """The same database, through a store whose clock runs `seconds_ago` behind
    the real one: rows it writes look that old to the CLI."""
    return octonodes.open(db, clock=lambda: datetime.now(UTC) - timedelta(seconds=seconds_ago))


def test_idempotent_verbs_say_so_and_exit_0(cluster, db):
    register(cluster, "node-2")
    first = run(db, "drain", "node-2")
    assert first.exit_code == 0, first.output
    assert "already" not in first.stdout
    second = run(db, "drain", "node-2")
    assert second.exit_code == 0, second.output
    assert "node-2 is already drained" in second.stdout
    assert cluster.node("node-2").drain is True

    first = run(db, "undrain", "node-2")
    assert first.exit_code == 0 and "already" not in first.stdout, first.output
    second = run(db, "undrain", "node-2")
    assert second.exit_code == 0, second.output
    assert "already" in second.stdout and "node-2" in second.stdout
    assert cluster.node("node-2").drain is False

    first = run(db, "cap", "node-2", "7")
    assert first.exit_code == 0 and "already" not in first.stdout, first.output
    second = run(db, "cap", "node-2", "7")
    assert second.exit_code == 0, second.output
    assert "already" in second.stdout and "7" in second.stdout
    assert cluster.node("node-2").task_cap == 7


def test_cap_zero_and_the_maximum_are_accepted(cluster, db):
    register(cluster, "node-1")
    for n in (0, 1000):
        result = run(db, "cap", "node-1", str(n))
        assert result.exit_code == 0, result.output
        assert cluster.node("node-1").task_cap == n


def test_list_json_shape(cluster, db):
    register(cluster, "node-a")
    register(cluster, "node-b", cap=2)
    cluster.drain("node-b")
    with past_cluster(db, 600) as old:
        register(old, "node-c")
    result = run(db, "list", "--json")
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.stdout)
    assert isinstance(nodes, list) and [n["name"] for n in nodes] == ["node-a", "node-b", "node-c"]
    for node in nodes:
        assert NODE_FIELDS <= set(node)
        assert ISO_UTC.match(node["last_seen"]), node["last_seen"]
        assert isinstance(node["drain"], bool)
        assert isinstance(node["task_cap"], int) and isinstance(node["tasks"], int)
        assert node["status"] in {"Running", "Draining", "Drained", "Offline"}
    a, b, c = nodes
    assert (a["status"], a["drain"], a["task_cap"], a["tasks"]) == ("Running", False, 5, 0)
    assert (b["status"], b["drain"], b["task_cap"]) == ("Drained", True, 2)
    assert c["status"] == "Offline"
    seen = datetime.fromisoformat(c["last_seen"].replace("Z", "+00:00"))
    assert timedelta(seconds=590) < datetime.now(UTC) - seen < timedelta(seconds=700)


def test_show_json_has_active_tasks(cluster, db):
    instance = register(cluster, "node-1")
    task = claim_one(cluster, "node-1", instance)
    result = run(db, "show", "node-1", "--json")
    assert result.exit_code == 0, result.output
    node = json.loads(result.stdout)
    assert NODE_FIELDS | {"active_tasks"} <= set(node)
    assert node["name"] == "node-1" and node["status"] == "Running" and node["tasks"] == 1
    assert [t["id"] for t in node["active_tasks"]] == [task.id]
    active = node["active_tasks"][0]
    assert active["state"] == "Executing" and active["node"] == "node-1"
    assert active["command"] == ["sleep", "60"]
    assert ISO_UTC.match(active["started_at"])


def test_show_json_of_an_idle_node_has_an_empty_task_list(cluster, db):
    register(cluster, "node-1")
    node = json.loads(run(db, "show", "node-1", "--json").stdout)
    assert node["active_tasks"] == [] and node["tasks"] == 0


def test_list_status_filters(cluster, db):
    register(cluster, "run-1")
    register(cluster, "drained-1")
    cluster.drain("drained-1")
    with past_cluster(db, 600) as old:
        register(old, "lost-1")
    result = run(db, "list", "--json", "--status", "offline", "--status", "Drained")
    assert result.exit_code == 0, result.output
    assert sorted(n["name"] for n in json.loads(result.stdout)) == ["drained-1", "lost-1"]
    result = run(db, "list", "--json", "-s", "Running")
    assert [n["name"] for n in json.loads(result.stdout)] == ["run-1"]
    result = run(db, "list", "--json", "--status", "Draining")
    assert json.loads(result.stdout) == []


def test_list_status_rejects_an_unknown_status(cluster, db):
    register(cluster, "run-1")
    result = run(db, "list", "--status", "Sleeping")
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.stdout == ""


def test_list_names_the_database_and_the_offline_reason(cluster, db):
    register(cluster, "run-1")
    stopped = register(cluster, "stopped-1")
    cluster.store.mark_stopped("stopped-1", stopped)
    with past_cluster(db, 600) as old:
        register(old, "lost-1")
    result = run(db, "list")
    assert result.exit_code == 0, result.output
    assert cluster.db in result.stdout
    run_row = next(line for line in result.stdout.splitlines() if "run-1" in line)
    assert "Running" in run_row
    stopped_row = next(line for line in result.stdout.splitlines() if "stopped-1" in line)
    lost_row = next(line for line in result.stdout.splitlines() if "lost-1" in line)
    assert "Offline" in stopped_row and "stopped" in stopped_row.lower()
    assert "Offline" in lost_row and "lost" in lost_row.lower()


def test_show_human_output_names_the_node(cluster, db):
    register(cluster, "node-1")
    result = run(db, "show", "node-1")
    assert result.exit_code == 0, result.output
    assert "node-1" in result.stdout and "Running" in result.stdout


def test_delete_is_refused_while_online_and_works_once_stopped(cluster, db):
    instance = register(cluster, "node-1")
    result = run(db, "delete", "node-1")
    assert result.exit_code == 4, result.output
    assert len([l for l in result.stderr.splitlines() if l.startswith("Error:")]) == 1
    assert cluster.node("node-1").status is NodeStatus.RUNNING
    cluster.store.mark_stopped("node-1", instance)
    result = run(db, "delete", "node-1")
    assert result.exit_code == 0, result.output
    with pytest.raises(NotFound):
        cluster.node("node-1")


def test_delete_is_refused_for_a_drained_online_node(cluster, db):
    register(cluster, "node-1")
    cluster.drain("node-1")
    assert run(db, "delete", "node-1").exit_code == 4
    assert cluster.node("node-1").status is NodeStatus.DRAINED


def test_delete_is_refused_for_an_offline_node_with_active_tasks(cluster, db):
    with past_cluster(db, 600) as old:
        instance = register(old, "node-1")
        task = claim_one(old, "node-1", instance)
    assert cluster.node("node-1").status is NodeStatus.OFFLINE
    result = run(db, "delete", "node-1")
    assert result.exit_code == 4, result.output
    assert cluster.task(task.id).state is TaskState.EXECUTING


def test_delete_a_lost_idle_node(cluster, db):
    with past_cluster(db, 600) as old:
        register(old, "node-1")
    result = run(db, "delete", "node-1")
    assert result.exit_code == 0, result.output
    assert cluster.nodes() == []


def test_delete_force_removes_an_online_node_and_fails_its_tasks(cluster, db):
    instance = register(cluster, "node-1")
    register(cluster, "node-2")
    task = claim_one(cluster, "node-1", instance)
    result = run(db, "delete", "node-1", "--force")
    assert result.exit_code == 0, result.output
    assert [n.name for n in cluster.nodes()] == ["node-2"]
    ended = cluster.task(task.id)
    assert ended.state is TaskState.FAILED and "deleted" in ended.error
    # The deleted node's process learns it at its next check-in and must stop.
    assert cluster.store.check_in("node-1", instance, shutting_down=False,
                                  heartbeat_interval=10) is None

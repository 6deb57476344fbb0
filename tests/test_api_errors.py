"""The Python API's errors: scripts catch them by name from `octonodes`,
each with the exit code the CLI would use."""

from __future__ import annotations

import pytest

import octonodes


def test_the_error_classes_scripts_need_are_exported():
    for name, code in (("UsageError", 2), ("NotFound", 3), ("Refused", 4), ("TimedOut", 5),
                       ("DatabaseError", 6)):
        error = getattr(octonodes, name)
        assert name in octonodes.__all__
        assert issubclass(error, octonodes.OctonodesError) and error.exit_code == code


def test_each_is_raised_where_a_script_meets_it(cluster, tmp_path):
    with pytest.raises(octonodes.NotFound):
        cluster.task(999)
    with pytest.raises(octonodes.NotFound):
        cluster.node("no-such-node")
    task = cluster.add_task(["true"])  # no node: it stays queued
    with pytest.raises(octonodes.TimedOut):
        cluster.wait(task.id, timeout=0.2)
    with pytest.raises(octonodes.UsageError):
        cluster.set_cap("node-1", 1001)
    with pytest.raises(octonodes.DatabaseError):
        octonodes.open(str(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()


def test_refused_when_deleting_an_online_node(cluster):
    import uuid

    from octonodes.store.base import Registration

    cluster.store.register(Registration(name="node-1", instance_id=uuid.uuid4().hex, host="h",
                                        pid=1, version="t", heartbeat_interval=10.0, task_cap=None))
    with pytest.raises(octonodes.Refused):
        cluster.delete("node-1")


def test_queue_state_is_exported_and_reports_the_queue(cluster):
    cluster.add_task(["true"])
    queue = cluster.queue()
    assert isinstance(queue, octonodes.QueueState)
    assert queue.queued == 1 and queue.paused and queue.oldest_wait is not None

"""`check`: a node drained with a reason is planned maintenance."""

from __future__ import annotations

import json

from helpers import octonodes as run_cli, register


def _nodes(cluster, *names):
    for name in names:
        register(cluster, name)


def test_a_drain_with_a_reason_is_ok_with_a_note_unless_warn_drained(cluster):
    _nodes(cluster, "node-1", "node-2")
    cluster.drain("node-1", actor="alice@ops", reason="kernel upgrade CHG-7")
    ok = run_cli(cluster.db, "check")
    assert ok.returncode == 0, ok.stdout
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("OCTONODES OK - ") and "planned maintenance" in lines[0]
    assert lines[1].startswith("- note: node-1 is drained for maintenance: kernel upgrade CHG-7 "
                               "(alice@ops, ")
    doc = json.loads(run_cli(cluster.db, "check", "--json").stdout)
    assert doc["code"] == 0 and doc["problems"] == [] and len(doc["notes"]) == 1
    warned = run_cli(cluster.db, "check", "--warn-drained")
    assert warned.returncode == 1
    assert warned.stdout.splitlines()[0] == (
        "OCTONODES WARNING - node-1 is drained | 1 drained, 1 running; 0 queued")


def test_a_drain_without_a_reason_still_warns(cluster):
    _nodes(cluster, "node-1", "node-2")
    cluster.drain("node-1")
    result = run_cli(cluster.db, "check")
    assert result.returncode == 1
    assert "node-1 is drained" in result.stdout.splitlines()[0]


def test_planned_maintenance_does_not_hide_real_trouble(cluster):
    """The only node that could run the queue is drained for maintenance:
    the queue cannot move, which is still CRITICAL."""
    _nodes(cluster, "node-1")
    cluster.drain("node-1", reason="maintenance")
    cluster.add_task(["true"])
    result = run_cli(cluster.db, "check")
    assert result.returncode == 2
    assert "no online node can take them" in result.stdout.splitlines()[0]

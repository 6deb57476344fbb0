"""Real `octonodes node run` processes and real signals: nodes
come up Running, drain at once, are lost after offline_after when killed,
stop cleanly on SIGTERM, hold their name against a second process, keep
drain and cap across restarts, and log to stderr.

Cluster settings are the fast ones (conftest.FAST_SETTINGS: check-in every
0.5 s, offline after 3 s) unless a test says otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

import helpers
from conftest import FAST_SETTINGS, wait_status
from helpers import wait_until
from octonodes.settings import parse_duration

pytestmark = pytest.mark.slow

OFFLINE_AFTER = parse_duration(FAST_SETTINGS["offline_after"])
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\s+[A-Z]+\s+node-1: \S")


def show(db: str, name: str) -> dict:
    result = helpers.octonodes(db, "show", name, "--json")
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def test_two_nodes_come_up_running(fast_cluster, db, start_node):
    one = start_node("node-1")
    two = start_node("node-2", "--cap", "2")
    wait_status(fast_cluster, "node-1", "Running")
    wait_status(fast_cluster, "node-2", "Running")
    result = helpers.octonodes(db, "list", "--json")
    assert result.returncode == 0, result
    nodes = {n["name"]: n for n in json.loads(result.stdout)}
    assert set(nodes) == {"node-1", "node-2"}
    assert [nodes[n]["status"] for n in ("node-1", "node-2")] == ["Running", "Running"]
    assert (nodes["node-1"]["pid"], nodes["node-2"]["pid"]) == (one.pid, two.pid)
    assert nodes["node-1"]["host"] == socket.gethostname()
    assert (nodes["node-1"]["task_cap"], nodes["node-2"]["task_cap"]) == (5, 2)
    assert nodes["node-1"]["instance_id"] != nodes["node-2"]["instance_id"]
    # They keep checking in: last seen moves on.
    first = fast_cluster.node("node-1").last_seen
    wait_until(lambda: fast_cluster.node("node-1").last_seen > first, 10,
               message="node-1 to check in again")


def test_drain_makes_an_idle_node_drained_at_once(fast_cluster, db, start_node):
    start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    result = helpers.octonodes(db, "drain", "node-1")
    assert result.returncode == 0, result
    assert "drained" in result.stdout
    node = fast_cluster.node("node-1")  # no waiting: drain acts at once
    assert node.status == "Drained" and node.drain is True
    result = helpers.octonodes(db, "undrain", "node-1")
    assert result.returncode == 0, result
    assert fast_cluster.node("node-1").status == "Running"


def test_kill_9_makes_a_node_lost_after_offline_after(fast_cluster, db, start_node):
    node = start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    node.kill9()
    last_seen = fast_cluster.node("node-1").last_seen  # frozen: the process is gone
    deadline = timedelta(seconds=OFFLINE_AFTER)
    observed = []

    def lost() -> bool:
        before = datetime.now(UTC)
        status = fast_cluster.node("node-1").status
        after = datetime.now(UTC)
        observed.append(status)
        if status == "Offline":
            assert after - last_seen > deadline, "Offline before offline_after ran out"
            return True
        assert status == "Running"
        assert before - last_seen <= deadline, "still Running after offline_after ran out"
        return False

    wait_until(lost, OFFLINE_AFTER + 10, message="node-1 to be lost")
    assert observed[0] == "Running"  # not at once: only the deadline tells
    doc = show(db, "node-1")
    assert doc["status"] == "Offline" and doc["offline_reason"] == "lost"


def test_a_new_process_takes_over_a_killed_node_at_once(fast_cluster, db, start_node):
    # A long offline_after, so "at once" cannot be confused with "once it was lost".
    fast_cluster.set_setting("offline_after", "60s")
    old = start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    old_instance = fast_cluster.node("node-1").instance_id
    old.kill9()
    killed = time.monotonic()
    new = start_node("node-1")
    node = fast_cluster.node("node-1")
    assert node.status == "Running" and node.pid == new.pid
    assert node.instance_id != old_instance
    assert time.monotonic() - killed < 30
    assert "took over" in new.log()
    assert new.alive()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_node_cleanly_and_at_once(fast_cluster, db, start_node, sig):
    node = start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    node.signal(sig)
    assert node.wait_exit() == 0
    doc = show(db, "node-1")  # no waiting for offline_after
    assert doc["status"] == "Offline" and doc["offline_reason"] == "stopped"
    assert doc["stopped_at"] is not None
    assert "stopped" in node.log()
    # An idle node says it has nothing to wait for (when it logs the request
    # at all: a signal between loop turns may stop it before it could).
    assert "stopping: nothing running" in node.log() or "stop requested" not in node.log()
    assert "waiting for 0" not in node.log()


def test_a_second_process_for_a_live_name_is_refused_and_names_the_holder(
        fast_cluster, db, start_node):
    holder = start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    instance = fast_cluster.node("node-1").instance_id
    second = start_node("node-1", wait=False)
    assert second.wait_exit() == 4
    output = second.log()
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert str(holder.pid) in errors[0] and socket.gethostname() in errors[0]
    assert "Traceback" not in output
    node = fast_cluster.node("node-1")  # the holder is untouched
    assert node.status == "Running" and node.instance_id == instance and node.pid == holder.pid
    assert holder.alive()


def test_drain_and_cap_survive_a_restart(fast_cluster, db, start_node):
    first = start_node("node-1", "--cap", "3")
    wait_status(fast_cluster, "node-1", "Running")
    assert fast_cluster.node("node-1").task_cap == 3
    assert helpers.octonodes(db, "drain", "node-1").returncode == 0
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = start_node("node-1")  # no --cap: the stored cap stands
    node = fast_cluster.node("node-1")
    assert node.pid == second.pid
    assert node.status == "Drained" and node.drain is True and node.task_cap == 3
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0

    third = start_node("node-1", "--cap", "8")  # --cap replaces it; drain stays
    node = fast_cluster.node("node-1")
    assert node.pid == third.pid
    assert node.status == "Drained" and node.task_cap == 8


def test_a_drained_node_claims_nothing_after_a_restart(fast_cluster, db, start_node):
    first = start_node("node-1")
    fast_cluster.drain("node-1")
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    task = fast_cluster.add_task(["true"])
    second = start_node("node-1")
    wait_status(fast_cluster, "node-1", "Drained")
    # Let it check in twice (it looks at the queue every turn of its loop)...
    seen = fast_cluster.node("node-1").last_seen
    wait_until(lambda: fast_cluster.node("node-1").last_seen > seen, 10, message="a check-in")
    seen = fast_cluster.node("node-1").last_seen
    wait_until(lambda: fast_cluster.node("node-1").last_seen > seen, 10, message="a check-in")
    # ...drained, so the task still waits; undrain and it runs.
    assert fast_cluster.task(task.id).state == "Queued"
    assert "claimed" not in second.log()
    fast_cluster.undrain("node-1")
    assert fast_cluster.wait(task.id, timeout=20).state == "Success"


# -- the node's own log -----------------------------------------------------------------


@pytest.fixture
def raw_node(db, tmp_path):
    """A `node run` process with stdout and stderr kept apart."""
    started: list[subprocess.Popen] = []

    def start(name: str, *extra: str):
        out = open(tmp_path / f"{name}.out", "wb")
        err = open(tmp_path / f"{name}.err", "wb")
        env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "octonodes", "--db", db, "node", "run", "--name", name, *extra],
            stdout=out, stderr=err, env=env)
        out.close()
        err.close()
        started.append(proc)
        read = lambda suffix: (tmp_path / f"{name}.{suffix}").read_text(errors="replace")  # noqa: E731
        return proc, (lambda: read("out")), (lambda: read("err"))

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_node_logs_its_start_and_stop_to_stderr(fast_cluster, raw_node):
    proc, stdout, stderr = raw_node("node-1")
    wait_until(lambda: "started" in stderr(), 30, message="the start line")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    lines = stderr().splitlines()
    assert stdout() == ""
    assert any("node-1 started" in line for line in lines), lines
    assert any("stopped" in line for line in lines), lines
    for line in lines:
        assert TEXT_LINE.match(line), line  # one event a line: time, level, node, message


def test_log_format_json_gives_one_object_a_line(fast_cluster, raw_node):
    proc, stdout, stderr = raw_node("node-1", "--log-format", "json")
    wait_until(lambda: "started" in stderr(), 30, message="the start line")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert stdout() == ""
    events = [json.loads(line) for line in stderr().splitlines()]
    assert len(events) >= 2
    for event in events:
        assert isinstance(event, dict)
        assert {"time", "level", "message"} <= set(event)
        assert event["time"].endswith("Z") or event["time"].endswith("+00:00")
    messages = [e["message"] for e in events]
    assert any("started" in m for m in messages) and any("stopped" in m for m in messages)


# -- the database a node creates ------------------------------------------------------


@pytest.mark.only_backend("sqlite")
def test_node_run_creates_a_missing_sqlite_database_readable_by_its_owner_only(
        backend, tmp_path, start_node):
    path = tmp_path / "cluster.db"  # the `db` fixture's file: not created yet
    assert not path.exists()
    node = start_node("node-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0
    result = helpers.octonodes(str(path), "show", "node-1", "--json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["status"] == "Offline"

"""`octonodes check` for cron and monitoring: monitoring-plugin exit
codes for every node situation, a one-line summary first.

Situations made of rows use the store: the library's `check()` under a fake
clock for exact boundaries, and the CLI (in-process) over rows written by a
store whose clock runs behind the real one, so they look old to the CLI.
Situations about processes (a node killed, a node stopped by a signal) use
real `node run` processes.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

import octonodes
import helpers
from conftest import wait_status
from helpers import register
from octonodes.cli.app import app

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def claim_one(c: octonodes.Cluster, name: str, instance: str) -> None:
    c.add_task(["sleep", "60"])
    assert len(c.store.claim(name, instance, 1)) == 1


def past(db: str, seconds_ago: float) -> octonodes.Cluster:
    """The database through a store whose clock runs `seconds_ago` behind."""
    return octonodes.open(db, clock=lambda: datetime.now(UTC) - timedelta(seconds=seconds_ago))


def check(db: str, *args: str):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, ["--db", db, "check", *args])


def assert_check(result, code: int, *mentions: str) -> list[str]:
    """Exit `code`; the first stdout line is the summary for it; returns the lines."""
    output = result.stdout + result.stderr
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output
    lines = result.stdout.splitlines()
    assert lines, output
    assert lines[0].startswith(f"OCTONODES {NAMES[code]}"), lines[0]
    for text in mentions:
        assert text in lines[0], (text, lines[0])
    return lines


# -- the situations, through the CLI ------------------------------------------------


def test_all_running_is_ok(cluster, db):
    register(cluster, "node-1")
    register(cluster, "node-2")
    lines = assert_check(check(db), OK)
    assert "2 running" in lines[0]
    assert any(cluster.db in line for line in lines)  # says which database it read


def test_a_draining_node_is_a_warning(cluster, db):
    register(cluster, "node-1")
    instance = register(cluster, "node-2")
    claim_one(cluster, "node-2", instance)
    cluster.drain("node-2")
    assert cluster.node("node-2").status == "Draining"
    assert_check(check(db), WARNING, "node-2")


def test_a_drained_node_is_a_warning(cluster, db):
    register(cluster, "node-1")
    register(cluster, "node-2")
    cluster.drain("node-2")
    assert_check(check(db), WARNING, "node-2", "drained")


def test_a_node_shutting_down_is_a_warning(cluster, db):
    register(cluster, "node-1")
    instance = register(cluster, "node-2")
    cluster.store.check_in("node-2", instance, shutting_down=True, heartbeat_interval=10.0)
    assert_check(check(db), WARNING, "node-2")


def test_a_cleanly_stopped_node_is_a_warning(cluster, db):
    register(cluster, "node-1")
    instance = register(cluster, "node-2")
    cluster.store.mark_stopped("node-2", instance)
    assert_check(check(db), WARNING, "node-2", "stopped")


def test_a_lost_node_is_critical(cluster, db):
    register(cluster, "node-1")
    with past(db, 120) as old:
        register(old, "node-2")
    assert_check(check(db), CRITICAL, "node-2", "lost")


def test_a_lost_node_that_was_drained_is_still_critical(cluster, db):
    register(cluster, "node-1")
    with past(db, 120) as old:
        register(old, "node-2")
        old.drain("node-2")
    assert_check(check(db), CRITICAL, "node-2")


def test_critical_wins_over_warnings(cluster, db):
    register(cluster, "node-1")
    cluster.drain("node-1")
    stopped = register(cluster, "node-2")
    cluster.store.mark_stopped("node-2", stopped)
    with past(db, 120) as old:
        register(old, "node-3")
    result = check(db)
    lines = assert_check(result, CRITICAL, "node-3")
    assert "node-1" in result.stdout and "node-2" in result.stdout  # the warnings are listed too
    assert len(lines) > 1


@pytest.mark.parametrize("situation", ["no nodes", "all drained", "all stopped", "all lost",
                                       "caps zero", "only draining"])
def test_tasks_queued_with_no_online_node_able_to_take_them_is_critical(cluster, db, situation):
    if situation == "all drained":
        register(cluster, "node-1")
        cluster.drain("node-1")
    elif situation == "all stopped":
        cluster.store.mark_stopped("node-1", register(cluster, "node-1"))
    elif situation == "all lost":
        with past(db, 120) as old:
            register(old, "node-1")
    elif situation == "caps zero":
        register(cluster, "node-1", cap=0)
    elif situation == "only draining":
        instance = register(cluster, "node-1")
        claim_one(cluster, "node-1", instance)
        cluster.drain("node-1")
    cluster.add_task(["true"])
    lines = assert_check(check(db), CRITICAL)
    assert "queued" in lines[0]


def test_tasks_queued_with_an_able_node_are_fine_at_first(cluster, db):
    register(cluster, "node-1")
    cluster.add_task(["true"])
    assert_check(check(db), OK)


def test_tasks_queued_longer_than_warn_wait_are_a_warning(cluster, db):
    register(cluster, "node-1")
    with past(db, 120) as old:
        old.add_task(["true"])  # queued two minutes ago
    assert_check(check(db), OK)  # the default --warn-wait is 10 m
    assert_check(check(db, "--warn-wait", "5m"), OK)
    lines = assert_check(check(db, "--warn-wait", "1m"), WARNING)
    assert "queued" in lines[0]
    assert_check(check(db, "--warn-wait", "90"), WARNING)


def test_the_default_warn_wait_is_ten_minutes(cluster, db):
    register(cluster, "node-1")
    with past(db, 11 * 60) as old:
        old.add_task(["true"])
    assert_check(check(db), WARNING, "queued")


def test_check_json(cluster, db):
    register(cluster, "node-1")
    register(cluster, "node-2")
    cluster.drain("node-2")
    result = check(db, "--json")
    assert result.exit_code == WARNING, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "WARNING" and doc["code"] == WARNING
    assert doc["summary"].startswith("OCTONODES WARNING")
    assert any("node-2" in p for p in doc["problems"])
    assert sorted(n["name"] for n in doc["nodes"]) == ["node-1", "node-2"]


# -- database trouble and usage errors: UNKNOWN ------------------------------------


def test_a_missing_database_is_unknown(tmp_path):
    path = tmp_path / "nope.db"
    result = check(str(path))
    assert assert_check(result, UNKNOWN) == [result.stdout.strip()]  # one line, said once
    assert result.stderr == ""
    assert "octonodes init" in result.stdout
    assert not path.exists()
    result = check(str(path), "--json")
    assert result.exit_code == UNKNOWN and result.stderr == ""
    assert json.loads(result.stdout)["status"] == "UNKNOWN"


def test_a_file_that_is_not_a_database_is_unknown(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"\x00garbage" * 512)
    assert_check(check(str(path)), UNKNOWN)


@pytest.mark.parametrize("args", [["--bogus"], ["--warn-wait", "nonsense"], ["--warn-wait", "0"],
                                  ["--warn-wait"], ["extra-argument"]])
def test_a_usage_error_is_unknown(cluster, db, args):
    register(cluster, "node-1")
    result = check(db, *args)
    assert assert_check(result, UNKNOWN) == [result.stdout.strip()]
    assert result.stderr == ""
    result = check(db, "--json", *args)
    assert result.exit_code == UNKNOWN and result.stderr == "", result.output
    assert json.loads(result.stdout)["status"] == "UNKNOWN"


def test_unknown_through_the_real_cli(tmp_path):
    for args in (["check"], ["check", "--bogus"], ["check", "--warn-wait", "-1"]):
        result = helpers.octonodes(str(tmp_path / "nope.db"), *args)
        assert result.returncode == UNKNOWN, result
        assert result.stdout.startswith("OCTONODES UNKNOWN") and result.stdout.count("\n") == 1
        assert result.stderr == "", result.stderr  # cron mails one line, not two


# -- exact boundaries, through the library with a fake clock ---------------------------


def test_lost_exactly_past_offline_after(timed, clock):
    register(timed, "node-1")
    clock.advance(60)
    assert timed.check().code == OK
    clock.advance(0.001)
    result = timed.check()
    assert result.code == CRITICAL and result.summary.startswith("OCTONODES CRITICAL")


def test_warn_wait_boundary(timed, clock):
    register(timed, "node-1")
    timed.add_task(["true"])
    clock.advance(50)
    instance = timed.node("node-1").instance_id
    timed.store.check_in("node-1", instance, shutting_down=False, heartbeat_interval=10.0)
    assert timed.check(warn_wait=50).code == OK  # exactly: not longer than
    clock.advance(0.001)
    assert timed.check(warn_wait=50).code == WARNING
    assert timed.check(warn_wait=600).code == OK


def test_a_node_coming_back_clears_the_alarm(timed, clock):
    register(timed, "node-1")
    clock.advance(61)
    assert timed.check().code == CRITICAL
    register(timed, "node-1")  # a new process takes the offline name back
    assert timed.check().code == OK


# -- real processes -----------------------------------------------------------------


@pytest.mark.slow
def test_check_follows_real_nodes_stopping_and_dying(fast_cluster, db, start_node):
    one = start_node("node-1")
    two = start_node("node-2")
    wait_status(fast_cluster, "node-1", "Running")
    wait_status(fast_cluster, "node-2", "Running")
    result = helpers.octonodes(db, "check")
    assert result.returncode == OK, result
    assert result.stdout.startswith("OCTONODES OK")

    one.signal(signal.SIGTERM)
    assert one.wait_exit() == 0
    result = helpers.octonodes(db, "check")
    assert result.returncode == WARNING, result
    assert result.stdout.startswith("OCTONODES WARNING") and "node-1" in result.stdout

    two.kill9()
    wait_status(fast_cluster, "node-2", "Offline", timeout=15)
    result = helpers.octonodes(db, "check")
    assert result.returncode == CRITICAL, result
    first = result.stdout.splitlines()[0]
    assert first.startswith("OCTONODES CRITICAL") and "node-2" in first

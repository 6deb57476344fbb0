"""Every setting has a range: `config set` refuses a value outside it (exit
2, nothing written), and a value out of range found in the database (written
by hand or by an older version) never stops a node: it logs an error and uses
the default."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

import helpers
from conftest import wait_status
from helpers import wait_until
from octonodes.cli.app import app

pytestmark = pytest.mark.slow

OUT_OF_RANGE = {
    "heartbeat_interval": ["99999999999d", "0.01s", "-5s"],
    "offline_after": ["99999999999d", "31d", "0.1s", "-5s"],
    "queue_timeout": ["99999999999d", "366d", "0.5s", "-1d"],
    "task_log_limit": ["99999999999G", "2G", "100", "-1M"],
    "cancel_grace": ["99999999999d", "2d", "0.01s", "-10s"],
    "task_retention": ["99999999999d", "3651d", "59s", "-30d"],
    "package_store": ["relative/folder", "./packages", "-"],
    "event_retention": ["99999999999d", "3651d", "1h", "-1d"],
    "trusted_proxies": ["not-an-address", "999.1.1.1", "-1"],
}


def invoke(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


@pytest.mark.parametrize("key,values", OUT_OF_RANGE.items(), ids=list(OUT_OF_RANGE))
def test_config_set_refuses_values_out_of_range(cluster, db, key, values):
    before = invoke(db, "config", "--json").stdout
    for value in values:
        result = invoke(db, "config", "set", key, "--", value)
        assert result.exit_code == 2, (key, value, result.output)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("Error:") and key in result.output, (key, value, result.output)
        assert "Traceback" not in result.output
    assert invoke(db, "config", "--json").stdout == before


def test_the_bounds_themselves_are_accepted(cluster, db):
    for key, value in [("heartbeat_interval", "0.1s"), ("offline_after", "30d"),
                       ("heartbeat_interval", "1h"), ("task_log_limit", "1K"),
                       ("task_log_limit", "1G"), ("queue_timeout", "365d"),
                       ("task_retention", "1m"), ("cancel_grace", "1d"),
                       ("package_store", "/srv/octonodes/packages")]:
        result = invoke(db, "config", "set", key, value)
        assert result.exit_code == 0, (key, value, result.output)


def write_raw_settings(db: str, backend: str, values: dict[str, str]) -> None:
    """Straight into the settings table, past every check (as by hand)."""
    if backend == "sqlite":
        conn = sqlite3.connect(db, isolation_level=None)
        conn.executemany("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                         values.items())
        conn.close()
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        for key, value in values.items():
            conn.execute("""INSERT INTO settings (key, value) VALUES (%s, %s)
                            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""", (key, value))


def test_a_stored_value_megabytes_long_is_named_in_one_short_line(cluster, db, backend):
    write_raw_settings(db, backend, {"heartbeat_interval": "x" * 10_000_000})
    for args, codes in ((["list"], {0}), (["check"], {0, 1, 2})):  # not check's UNKNOWN
        result = helpers.octonodes(db, *args)
        assert result.returncode in codes, (args, result.returncode, result.stderr[:500])
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and len(lines[0]) < 300, (args, [ln[:300] for ln in lines])
        assert "the stored value of heartbeat_interval is not valid" in lines[0], lines[0]


def test_a_running_node_survives_stored_values_out_of_range(
        fast_cluster, start_node, db, backend):
    node = start_node("node-a")
    wait_status(fast_cluster, "node-a", "Running")
    write_raw_settings(db, backend, {"offline_after": "99999999999d", "task_log_limit": "lots",
                                     "cancel_grace": "-5s", "queue_timeout": "99999999999d"})
    # The values land one by one (on SQLite each insert commits alone), so
    # the node may log a first settings read holding only some of them.
    node.wait_log("the stored value of offline_after is not valid", timeout=10)
    node.wait_log("the stored value of task_log_limit is not valid", timeout=10)
    assert "using the default, 60s" in node.log(), node.log()

    task = fast_cluster.add_task(["sh", "-c", "echo still here"])
    assert fast_cluster.wait(task.id, timeout=20).state == "Success"
    assert node.alive(), node.log()
    listed = helpers.octonodes(db, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    wait_until(lambda: fast_cluster.node("node-a", with_tasks=False).status == "Running", 10,
               message="node-a to stay Running")

    # A second node starts on the same values.
    other = start_node("node-b")
    wait_status(fast_cluster, "node-b", "Running")
    assert other.alive()

"""Cluster settings through `octonodes config`: defaults, changes,
the duration spellings, the JSON document, which database is shown, and a
running node taking a change at its next check-in."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import helpers
from conftest import wait_status
from helpers import wait_until
from octonodes.cli.app import app

DEFAULTS = {
    "heartbeat_interval": "10s",
    "offline_after": "60s",
    "queue_timeout": "1d",
    "task_log_limit": "1M",
    "cancel_grace": "10s",
    "task_retention": "30d",
}


def run(db: str, *args: str, env: dict | None = None):
    return CliRunner(env={"COLUMNS": "250", **(env or {})}).invoke(app, ["--db", db, *args])


def config_json(db: str) -> dict:
    result = run(db, "config", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_config_shows_the_defaults_and_the_database(cluster, db):
    result = run(db, "config")
    assert result.exit_code == 0, result.output
    assert cluster.db in result.stdout
    for key, value in DEFAULTS.items():
        row = next((line for line in result.stdout.splitlines() if key in line), None)
        assert row is not None, f"{key} missing from:\n{result.stdout}"
        assert value in row, row


def test_config_json_shows_the_defaults(cluster, db):
    doc = config_json(db)
    assert doc["database"] == cluster.db
    for key, value in DEFAULTS.items():
        assert doc["settings"][key] == value, key


def test_the_library_reads_the_defaults(cluster):
    settings = cluster.settings()
    assert (settings.heartbeat_interval, settings.offline_after) == (10.0, 60.0)
    assert (settings.queue_timeout, settings.cancel_grace) == (86400.0, 10.0)
    assert settings.task_retention == 30 * 86400.0
    assert cluster.stored_settings() == {}


@pytest.mark.parametrize("key, value, shown, seconds", [
    ("heartbeat_interval", "5", "5s", 5.0),
    ("heartbeat_interval", "5s", "5s", 5.0),
    ("heartbeat_interval", "1.5s", "1.5s", 1.5),
    ("offline_after", "90", "90s", 90.0),
    ("offline_after", "90s", "90s", 90.0),
    ("offline_after", "5m", "5m", 300.0),
    ("queue_timeout", "2h", "2h", 7200.0),
    ("queue_timeout", "24h", "1d", 86400.0),
    ("queue_timeout", "1d", "1d", 86400.0),
    ("cancel_grace", "120s", "2m", 120.0),
    ("task_retention", "7d", "7d", 7 * 86400.0),
])
def test_config_set_takes_every_duration_spelling(cluster, db, key, value, shown, seconds):
    result = run(db, "config", "set", key, value)
    assert result.exit_code == 0, result.output
    assert shown in result.stdout
    assert config_json(db)["settings"][key] == shown
    assert getattr(cluster.settings(), key) == seconds
    assert cluster.stored_settings() == {key: shown}


def test_config_set_changes_only_its_key_and_shows_in_config(cluster, db):
    assert run(db, "config", "set", "cancel_grace", "30s").exit_code == 0
    assert run(db, "config", "set", "task_log_limit", "64K").exit_code == 0
    settings = config_json(db)["settings"]
    assert settings["cancel_grace"] == "30s" and settings["task_log_limit"] == "64K"
    for key in ("heartbeat_interval", "offline_after", "queue_timeout", "task_retention"):
        assert settings[key] == DEFAULTS[key]
    result = run(db, "config")
    row = next(line for line in result.stdout.splitlines() if "cancel_grace" in line)
    assert "30s" in row
    assert cluster.settings().task_log_limit == 64 * 1024


def test_setting_a_value_again_is_fine(cluster, db):
    for _ in range(2):
        result = run(db, "config", "set", "cancel_grace", "5s")
        assert result.exit_code == 0, result.output
    assert cluster.settings().cancel_grace == 5.0


def test_heartbeat_and_offline_after_move_together_in_the_right_order(cluster, db):
    # Raising both: offline_after first, then the interval, each step valid.
    assert run(db, "config", "set", "offline_after", "10m").exit_code == 0
    assert run(db, "config", "set", "heartbeat_interval", "4m").exit_code == 0
    assert run(db, "config", "set", "heartbeat_interval", "5m").exit_code == 2  # 2 x 5m == 10m
    settings = cluster.settings()
    assert (settings.heartbeat_interval, settings.offline_after) == (240.0, 600.0)


def test_the_environment_chooses_the_database_and_db_wins(cluster, db, tmp_path):
    cluster.set_setting("cancel_grace", "7s")
    result = CliRunner(env={"OCTONODES_DB": db, "COLUMNS": "250"}).invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["cancel_grace"] == "7s"
    other = tmp_path / "other.db"
    result = CliRunner(env={"OCTONODES_DB": str(other)}).invoke(app, ["--db", db, "config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["cancel_grace"] == "7s"
    assert not other.exists()


def test_config_through_the_real_cli(cluster, db):
    result = helpers.octonodes(db, "config", "set", "queue_timeout", "36h")
    assert result.returncode == 0, result
    result = helpers.octonodes(db, "config", "--json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["settings"]["queue_timeout"] == "36h"


@pytest.mark.slow
def test_a_running_node_takes_a_new_heartbeat_interval_at_its_next_check_in(
        fast_cluster, db, start_node):
    start_node("node-1")
    wait_status(fast_cluster, "node-1", "Running")
    assert fast_cluster.node("node-1").heartbeat_interval == 0.5
    result = helpers.octonodes(db, "config", "set", "heartbeat_interval", "1s")
    assert result.returncode == 0, result

    def reported() -> float:
        shown = run(db, "show", "node-1", "--json")
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.stdout)["heartbeat_interval"]

    wait_until(lambda: reported() == 1.0, 15, message="node-1 to report a 1 s interval")
    # And it keeps to it: still online, checking in at the new pace.
    seen = fast_cluster.node("node-1").last_seen
    wait_until(lambda: fast_cluster.node("node-1").last_seen > seen, 10, message="a check-in")
    assert fast_cluster.node("node-1").status == "Running"


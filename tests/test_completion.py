"""Shell completion for bash, zsh and fish, through the real console script's
completion protocol: node names from the database, statuses and task states
(also after a comma), setting names; a database that cannot be read gives
no names and creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import register


def complete(shell: str, line: str, db: str | None = None) -> list[str]:
    """What the shell would offer after typing `line`, as the script answers it."""
    env = {**os.environ, "_OCTONODES_COMPLETE": f"complete_{shell}"}
    env.pop("OCTONODES_DB", None)
    if db:
        env["OCTONODES_DB"] = db
    if shell == "bash":
        words = line.split(" ")
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    else:
        env["_TYPER_COMPLETE_ARGS"] = line
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    result = subprocess.run([sys.executable, "-m", "octonodes"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


@pytest.fixture
def nodes(cluster):
    for name in ("node-1", "node-2", "web-1"):
        register(cluster, name)
    return cluster


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_node_names_come_from_the_database(nodes, db, shell):
    offered = complete(shell, "octonodes drain no", db)
    assert "node-1" in offered and "node-2" in offered and "web-1" not in offered, offered
    offered = complete(shell, f"octonodes --db {db} show ")  # --db on the line counts too
    assert all(name in offered for name in ("node-1", "node-2", "web-1")), offered


def test_statuses_and_states_complete_after_a_comma(nodes, db):
    assert complete("bash", "octonodes list -s Running,Dr", db).split() == \
        ["Running,Draining", "Running,Drained"]
    assert complete("bash", "octonodes task list --state Tim", db).split() == ["TimedOut"]
    assert complete("bash", "octonodes config set offline", db).split() == ["offline_after"]


def test_a_missing_database_offers_nothing_and_creates_nothing(tmp_path):
    missing = tmp_path / "nope.db"
    assert complete("bash", "octonodes drain ", str(missing)).split() == []
    assert os.listdir(tmp_path) == []


def test_completion_can_be_installed_for_each_shell():
    for shell in ("bash", "zsh", "fish"):
        result = subprocess.run([sys.executable, "-m", "octonodes", "--show-completion", shell],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result
        assert "_OCTONODES_COMPLETE" in result.stdout, result.stdout


def test_a_file_that_is_not_a_database_offers_nothing_and_is_left_alone(tmp_path):
    junk = tmp_path / "cluster.db"
    junk.write_bytes(b"\x00not a database" * 64)
    before = junk.read_bytes()
    assert complete("bash", "octonodes undrain ", str(junk)).split() == []
    assert junk.read_bytes() == before and os.listdir(tmp_path) == ["cluster.db"]

"""What the commands print, for people and for pipes: the queue under the
nodes table and in `check`, tables that fit their content when stdout is not
a terminal, and `list --watch` through a pipe."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest
from typer.testing import CliRunner

import helpers
from helpers import register
from octonodes.cli.app import app


def invoke(db: str, *args: str):
    # A narrow "terminal" on purpose: through a pipe, the width must not matter.
    return CliRunner(env={"COLUMNS": "40", "OCTONODES_DEBUG": None}).invoke(app, ["--db", db, *args])


def queue_line(stdout: str) -> str:
    lines = [l for l in stdout.splitlines() if l.startswith("queue: ")]
    assert len(lines) == 1, stdout
    return lines[0]


def test_list_shows_the_queue_under_the_table(cluster, db):
    assert queue_line(invoke(db, "list").stdout) == \
        "queue: empty; paused (no online node can take tasks)"
    register(cluster, "node-1", cap=4)
    assert queue_line(invoke(db, "list").stdout) == "queue: empty; 4 free slot(s)"
    for _ in range(15):
        cluster.add_task(["true"])
    cluster.drain("node-1")
    result = invoke(db, "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == queue_line(result.stdout)  # under the table
    assert queue_line(result.stdout).startswith("queue: 15 queued, oldest waiting ")
    assert queue_line(result.stdout).endswith("; paused (no online node can take tasks)")
    filtered = invoke(db, "list", "-s", "Offline")  # the queue is the cluster's, not the rows'
    assert queue_line(filtered.stdout).startswith("queue: 15 queued")


def test_check_reports_the_same_queue_fields(cluster, db):
    register(cluster, "node-1", cap=2)
    first = cluster.add_task(["true"])
    cluster.add_task(["true"])
    doc = json.loads(invoke(db, "check", "--json").stdout)
    queue = doc["queue"]
    assert queue["queued"] == 2 and queue["paused"] is False and queue["free_slots"] == 2
    assert queue["oldest_queued_at"] == first.to_json()["queued_at"]
    assert 0 <= queue["oldest_wait_seconds"] < 60
    text = invoke(db, "check")
    assert queue_line(text.stdout).startswith("queue: 2 queued, oldest waiting ")
    cluster.drain("node-1")
    doc = json.loads(invoke(db, "check", "--json").stdout)
    assert doc["code"] == 2 and doc["queue"]["paused"] is True and doc["queue"]["free_slots"] == 0


def test_piped_tables_fit_their_content_without_trailing_spaces(cluster, db, tmp_path):
    register(cluster, "a-node-with-a-rather-long-name-for-a-narrow-terminal", cap=7)
    cluster.add_task(["sh", "-c", "echo a fairly long command line " * 3], name="x" * 50)
    for args in (["list"], ["show", "a-node-with-a-rather-long-name-for-a-narrow-terminal"],
                 ["task", "list"], ["task", "show", "1"], ["config"], ["apikey", "list"]):
        result = invoke(db, *args)
        assert result.exit_code == 0, (args, result.output)
        lines = result.stdout.splitlines()
        assert lines, args
        assert all(line == line.rstrip() for line in lines), (args, result.stdout)
        # Every table row is one line: the widest value is never folded.
        if args[0] in ("list", "task") and args[-1] != "1":
            widths = {len(line) for line in lines[1:] if line[:1] in "┏┃┡│└"}
            assert len(widths) == 1, (args, result.stdout)
    listing = invoke(db, "list").stdout
    assert listing.splitlines()[0] == f"Nodes in {cluster.db}"  # the title whole, on its line
    assert "a-node-with-a-rather-long-name-for-a-narrow-terminal" in listing


def test_a_long_database_url_in_a_title_is_never_broken(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "cluster.db"
    deep.parent.mkdir(parents=True)
    result = CliRunner(env={"COLUMNS": "40"}).invoke(app, ["--db", str(deep), "init"])
    assert result.exit_code == 0, result.output
    for args in (["list"], ["config"], ["apikey", "list"]):
        out = invoke(str(deep), *args).stdout
        assert str(deep) in out.splitlines()[0], out


def test_package_list_keeps_the_sha256_on_one_line(cluster, db, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    cluster.set_setting("package_store", str(store))
    data = os.urandom(4096)
    (store / "Acme.Web.Frontend.With.A.Long.Name.1.2.3.zip").write_bytes(data)
    result = invoke(db, "package", "list")
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(data).hexdigest()
    rows = [line for line in result.stdout.splitlines() if digest in line]
    assert len(rows) == 1 and "Acme.Web.Frontend.With.A.Long.Name" in rows[0], result.stdout
    assert all(line == line.rstrip() for line in result.stdout.splitlines())


@pytest.mark.slow
def test_list_watch_through_a_pipe_prints_a_full_table_each_interval(cluster, db):
    register(cluster, "node-1")
    proc = helpers.start_octonodes(db, "list", "--watch", env={"OCTONODES_DEBUG": "0"})
    try:
        seen: list[str] = []

        def tables() -> int:
            seen.append(proc.stdout.readline())
            return "".join(seen).count(f"Nodes in {cluster.db}\n") >= 3

        helpers.wait_until(tables, timeout=30, interval=0, message="three tables through the pipe")
        text = "".join(seen)
        first = text.split(f"Nodes in {cluster.db}\n")[1]
        assert "node-1" in first and "queue: " in first
        assert first.endswith("\n\n")  # each table followed by an empty line
        assert "\x1b[" not in text  # no cursor movement or colour into a pipe
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0  # Ctrl-C is how a watch ends
        proc.stdout.close()
        proc.stderr.close()

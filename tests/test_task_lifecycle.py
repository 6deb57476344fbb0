"""One task from queue to end: how it runs, how it ends, what the CLI shows.

Cancel (with children, ignoring SIGTERM, queued, already ended), timeouts,
failures, output limits and ordering, the task's environment, the `task`
commands, and retention and queue timeouts through `reap()` with an injected
clock.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from datetime import datetime

import pytest

import octonodes
from conftest import wait_status
from helpers import octonodes as cli
from helpers import wait_until
from octonodes.store.base import LogChunk, Registration

slow = pytest.mark.slow

TASK_FIELDS = {"id", "name", "state", "node", "command", "exit_code", "error", "queued_at",
               "started_at", "finished_at", "attempt"}


# -- processes --------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def pid_alive(pid: int) -> bool:
    """Exists and is not a zombie (nobody may reap orphans here)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes in the process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def read_pids(path, count: int) -> list[int]:
    """Wait for `count` complete lines of pids in `path`."""
    def pids():
        text = path.read_text() if path.exists() else ""
        lines = text.splitlines() if text.endswith("\n") else []
        return [int(p) for p in lines] if len(lines) >= count else None

    return wait_until(pids, 20, message=f"{count} pid(s) in {path}")


def task_log(cluster, task_id: int) -> bytes:
    return b"".join(cluster.log(task_id))


def cli_ok(db: str, *args: str) -> subprocess.CompletedProcess:
    result = cli(db, *args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def add(db: str, *args: str) -> int:
    """`task add ARGS`; its stdout is the id alone."""
    out = cli_ok(db, "task", "add", *args).stdout
    assert out.strip().isdigit() and out == out.strip() + "\n", repr(out)
    return int(out)


# -- cancel -----------------------------------------------------------------

@slow
def test_cancel_stops_the_whole_process_group(fast_cluster, start_node, db, tmp_path):
    settings = fast_cluster.settings()
    start_node("node-1")
    pids_file = tmp_path / "pids"
    script = ('sleep 300 & echo $! >> "$1"; sleep 300 & echo $! >> "$1"; '
              'echo $$ >> "$1"; wait')
    task_id = add(db, "--", "sh", "-c", script, "sh", str(pids_file))
    *children, leader = read_pids(pids_file, 3)
    assert sorted(group_members(leader)) == sorted([leader, *children])
    assert fast_cluster.task(task_id).state == "Executing"

    result = cli_ok(db, "task", "cancel", str(task_id))
    canceled_at = time.monotonic()
    assert f"task {task_id} is cancelling on node-1" in result.stdout

    limit = settings.cancel_grace + 1.5
    ended = fast_cluster.wait(task_id, timeout=limit)
    assert ended.state == "Canceled", ended
    assert time.monotonic() - canceled_at < limit
    wait_until(lambda: not group_members(leader), 5, message="the task's process group to die")
    assert not any(pid_alive(p) for p in children)


@slow
def test_a_task_ignoring_sigterm_is_killed_after_cancel_grace(fast_cluster, start_node, tmp_path):
    grace = fast_cluster.settings().cancel_grace
    node = start_node("node-1")
    pid_file = tmp_path / "pid"
    script = "trap '' TERM; echo $$ > \"$1\"; sleep 300 & wait"
    task = fast_cluster.add_task(["sh", "-c", script, "sh", str(pid_file)])
    [leader] = read_pids(pid_file, 1)

    changed_task, changed = fast_cluster.cancel(task.id)
    canceled_at = time.monotonic()
    assert changed and changed_task.state == "Cancelling", changed_task
    node.wait_log(f"cancelling task {task.id}", timeout=5)
    assert pid_alive(leader), "SIGTERM should have been ignored"

    ended = fast_cluster.wait(task.id, timeout=grace + 3)
    took = time.monotonic() - canceled_at
    assert ended.state == "Canceled", ended
    assert took >= grace * 0.9, f"ended {took:.2f}s after the cancel, before cancel_grace"
    assert took < grace + 2.5
    wait_until(lambda: not group_members(leader), 5, message="the task's process group to die")


def test_cancel_of_a_queued_task_is_at_once_and_cancel_is_idempotent(cluster, db):
    task_id = add(db, "--", "true")
    result = cli_ok(db, "task", "cancel", str(task_id))
    assert f"task {task_id} canceled" in result.stdout
    task = cluster.task(task_id)
    assert task.state == "Canceled" and task.finished_at is not None, task
    assert task.node is None and task.started_at is None
    assert "before a node picked it up" in task.error

    again = cli_ok(db, "task", "cancel", str(task_id))
    assert "already ended" in again.stdout and "Canceled" in again.stdout
    assert cluster.task(task_id) == task

    missing = cli(db, "task", "cancel", "9999")
    assert missing.returncode == 3, missing
    assert missing.stderr.startswith("Error:")


@slow
def test_cancel_of_a_finished_task_says_so_and_changes_nothing(fast_cluster, start_node, db):
    start_node("node-1")
    task = fast_cluster.add_task(["true"])
    done = fast_cluster.wait(task.id, timeout=20)
    assert done.state == "Success"
    result = cli_ok(db, "task", "cancel", str(task.id))
    assert "already ended (Success)" in result.stdout
    assert fast_cluster.task(task.id) == done


# -- how a task ends ----------------------------------------------------------

@slow
def test_a_task_past_its_timeout_is_killed_and_timed_out(fast_cluster, start_node, db):
    start_node("node-1")
    task_id = add(db, "--timeout", "1s", "--", "sleep", "30")
    ended = fast_cluster.wait(task_id, timeout=10)
    assert ended.state == "TimedOut", ended
    assert "timeout" in ended.error, ended.error
    ran = (ended.finished_at - ended.started_at).total_seconds()
    assert 0.9 <= ran < 5, ran
    assert cli(db, "task", "wait", str(task_id)).returncode == 1


@slow
def test_a_task_no_node_picks_up_times_out_in_the_queue(fast_cluster, start_node, db):
    settings = fast_cluster.settings()
    start_node("node-1", "--cap", "0")  # online, checks in and reaps, claims nothing
    wait_status(fast_cluster, "node-1", "Running")
    task_id = add(db, "--queue-timeout", "1s", "--", "true")
    ended = fast_cluster.wait(task_id, timeout=1 + settings.heartbeat_interval + 5)
    assert ended.state == "TimedOut", ended
    assert "no node picked it up" in ended.error, ended.error
    assert (ended.node, ended.started_at, ended.attempt) == (None, None, 0)
    assert (ended.finished_at - ended.queued_at).total_seconds() >= 1


@slow
def test_a_failing_command_fails_with_its_exit_code(fast_cluster, start_node, db):
    start_node("node-1")
    task_id = add(db, "--name", "fails", "--", "sh", "-c", "echo about to fail; exit 3")
    waited = cli(db, "task", "wait", str(task_id), "--timeout", "20s")
    assert waited.returncode == 1, waited
    assert "Failed" in waited.stdout and "exit code 3" in waited.stdout, waited.stdout

    shown = json.loads(cli_ok(db, "task", "show", str(task_id), "--json").stdout)
    assert TASK_FIELDS <= set(shown), set(shown)
    assert shown["id"] == task_id and shown["name"] == "fails"
    assert shown["state"] == "Failed" and shown["exit_code"] == 3
    assert shown["node"] == "node-1" and shown["attempt"] == 1
    assert shown["command"] == ["sh", "-c", "echo about to fail; exit 3"]
    assert "3" in shown["error"]
    for key in ("queued_at", "started_at", "finished_at"):
        assert shown[key].endswith("Z"), shown[key]
        datetime.fromisoformat(shown[key].replace("Z", "+00:00"))
    assert shown["queued_at"] <= shown["started_at"] <= shown["finished_at"]
    assert task_log(fast_cluster, task_id) == b"about to fail\n"

    human = cli_ok(db, "task", "show", str(task_id)).stdout
    assert "Failed" in human and "fails" in human


@slow
def test_a_command_that_does_not_exist_fails_and_the_node_goes_on(fast_cluster, start_node):
    node = start_node("node-1")
    missing = fast_cluster.add_task(["/nonexistent/octonodes-no-such-command", "--flag"])
    ended = fast_cluster.wait(missing.id, timeout=20)
    assert ended.state == "Failed", ended
    assert "/nonexistent/octonodes-no-such-command" in ended.error, ended.error
    assert "cannot start" in ended.error or "No such file" in ended.error, ended.error
    nxt = fast_cluster.add_task(["sh", "-c", "echo still here"])
    assert fast_cluster.wait(nxt.id, timeout=20).state == "Success"
    assert task_log(fast_cluster, nxt.id) == b"still here\n"
    assert node.alive()


@slow
def test_output_past_the_log_limit_is_truncated_and_never_blocks(fast_cluster, start_node):
    fast_cluster.set_setting("task_log_limit", "64K")
    limit = 64 * 1024
    node = start_node("node-1")
    flood = fast_cluster.add_task(["sh", "-c", "yes octonodes | head -c 20000000; echo done >&2"])
    ended = fast_cluster.wait(flood.id, timeout=30)
    assert ended.state == "Success", ended
    assert (ended.finished_at - ended.started_at).total_seconds() < 10
    log = task_log(fast_cluster, flood.id)
    assert log.startswith(b"octonodes\noctonodes\n")
    assert limit <= len(log) < limit + 200, len(log)
    assert b"truncated" in log[limit:], log[limit:]
    assert b"done" not in log

    nxt = fast_cluster.add_task(["echo", "next"])
    assert fast_cluster.wait(nxt.id, timeout=20).state == "Success"
    assert task_log(fast_cluster, nxt.id) == b"next\n"
    assert node.alive()


@slow
def test_stdout_and_stderr_are_merged_in_order(fast_cluster, start_node):
    start_node("node-1")
    script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf tail"
    task = fast_cluster.add_task(["sh", "-c", script])
    assert fast_cluster.wait(task.id, timeout=20).state == "Success"
    assert task_log(fast_cluster, task.id) == b"out1\nerr1\nout2\nerr2\ntail"


@slow
def test_a_task_sees_its_id_and_node_but_not_the_database(fast_cluster, db, tmp_path):
    """The node is given its database through OCTONODES_DB (no --db); the task
    must not inherit it, though it inherits the rest of the node's environment."""
    env = {**os.environ, "OCTONODES_DB": db, "OCTONODES_TEST_MARKER": "kept"}
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "octonodes", "node", "run", "--name", "env-node"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: "started" in log_path.read_text(), 30, message="the node to start")
        task = fast_cluster.add_task(["env"])
        assert fast_cluster.wait(task.id, timeout=20).state == "Success"
    finally:
        proc.kill()
        proc.wait(10)
    seen = dict(line.split("=", 1) for line in task_log(fast_cluster, task.id).decode().splitlines()
                if "=" in line)
    assert seen["OCTONODES_TASK_ID"] == str(task.id)
    assert seen["OCTONODES_NODE"] == "env-node"
    assert "OCTONODES_DB" not in seen
    assert seen["OCTONODES_TEST_MARKER"] == "kept"


# -- the task commands ----------------------------------------------------------

@slow
def test_task_log_follow_streams_until_the_task_ends(fast_cluster, start_node, db, tmp_path):
    start_node("node-1")
    release = tmp_path / "release"
    script = 'echo one; while [ ! -e "$1" ]; do sleep 0.05; done; echo two'
    task = fast_cluster.add_task(["sh", "-c", script, "sh", str(release)])
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    follow = subprocess.Popen([sys.executable, "-m", "octonodes", "--db", db, "task", "log",
                               str(task.id), "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out = b""
        deadline = time.monotonic() + 20
        while b"one\n" not in out:
            assert time.monotonic() < deadline, f"no streamed output: {out!r}"
            ready, _, _ = select.select([follow.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(follow.stdout.fileno(), 4096)
                assert chunk, f"--follow ended early: {out!r} {follow.stderr.read()!r}"
                out += chunk
        assert follow.poll() is None, "--follow returned while the task still ran"
        assert fast_cluster.task(task.id).state == "Executing"

        release.touch()
        rest, err = follow.communicate(timeout=20)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    assert out + rest == b"one\ntwo\n"
    assert fast_cluster.task(task.id).state == "Success"


@slow
def test_task_list_filters_and_is_newest_first(fast_cluster, start_node, db):
    start_node("node-a")
    start_node("node-b")
    fast_cluster.drain("node-b")
    ok_a = fast_cluster.add_task(["true"])
    failed_a = fast_cluster.add_task(["false"])
    assert fast_cluster.wait(ok_a.id, timeout=20).node == "node-a"
    assert fast_cluster.wait(failed_a.id, timeout=20).state == "Failed"
    fast_cluster.drain("node-a")
    fast_cluster.undrain("node-b")
    ok_b = fast_cluster.add_task(["true"])
    assert fast_cluster.wait(ok_b.id, timeout=20).node == "node-b"
    fast_cluster.drain("node-b")
    queued = fast_cluster.add_task(["true"])

    def ids(*args: str) -> list[int]:
        return [t["id"] for t in json.loads(cli_ok(db, "task", "list", "--json", *args).stdout)]

    assert ids() == [queued.id, ok_b.id, failed_a.id, ok_a.id]
    assert ids("--node", "node-a") == [failed_a.id, ok_a.id]
    assert ids("--node", "node-b") == [ok_b.id]
    assert ids("--state", "Failed") == [failed_a.id]
    assert ids("--state", "success", "--state", "Queued") == [queued.id, ok_b.id, ok_a.id]
    assert ids("--node", "node-a", "--state", "Success") == [ok_a.id]
    assert ids("--limit", "2") == [queued.id, ok_b.id]
    assert ids("--state", "Canceled") == []
    assert [t.id for t in fast_cluster.tasks(limit=3)] == [queued.id, ok_b.id, failed_a.id]

    human = cli_ok(db, "task", "list").stdout
    assert str(failed_a.id) in human and "Failed" in human
    bad = cli(db, "task", "list", "--state", "Sleeping")
    assert bad.returncode == 2, bad
    assert cli(db, "task", "list", "--limit", "0").returncode == 2


def test_task_add_prints_the_id_alone_and_keeps_its_options(cluster, db):
    first = add(db, "--", "echo", "hello world")
    second = add(db, "--name", "nightly", "--timeout", "5m", "--queue-timeout", "1h",
                 "--retries", "2", "--", "sh", "-c", "exit 0")
    assert second > first
    task = cluster.task(second)
    assert (task.name, task.timeout, task.queue_timeout, task.retries, task.state) == \
        ("nightly", 300, 3600, 2, "Queued")
    assert task.command == ["sh", "-c", "exit 0"]
    assert cluster.task(first).command == ["echo", "hello world"]

    doc = json.loads(cli_ok(db, "task", "add", "--json", "--", "true").stdout)
    assert doc["id"] > second and doc["state"] == "Queued" and TASK_FIELDS <= set(doc)
    assert doc["node"] is None and doc["attempt"] == 0


def test_task_wait_exits_5_at_its_timeout(cluster, db):
    task_id = add(db, "--", "true")  # no node: it stays queued
    started = time.monotonic()
    result = cli(db, "task", "wait", str(task_id), "--timeout", "1s")
    assert result.returncode == 5, result
    assert time.monotonic() - started < 10
    assert result.stderr.startswith("Error:") and "Queued" in result.stderr, result.stderr
    assert cluster.task(task_id).state == "Queued"
    assert cli(db, "task", "wait", "9999", "--timeout", "1s").returncode == 3


# -- retention and queue timeout, with an injected clock ------------------------

def _claim_with_output(store, tasks_and_outputs):
    """Claim tasks and log their output through the store, as a node would."""
    instance = "instance-1"
    store.register(Registration(name="node-1", instance_id=instance, host="test-host", pid=1,
                                version=octonodes.__version__, heartbeat_interval=10.0))
    claimed = store.claim("node-1", instance, len(tasks_and_outputs))
    assert [t.id for t in claimed] == [t.id for t, _ in tasks_and_outputs]
    for task, output in zip(claimed, [o for _, o in tasks_and_outputs]):
        store.append_logs(instance, [LogChunk(task.id, task.attempt, output)])
    return instance, claimed


def test_output_is_kept_in_order_per_task_and_only_from_its_owner(cluster):
    """Output gathered over several batches, several chunks per task in
    one, reads back in order; chunks from a stale attempt or another
    instance are dropped, as the ends they come with would be."""
    store = cluster.store
    first, second = cluster.add_tasks([["true"]] * 2)
    instance, claimed = _claim_with_output(store, [(first, b"a1"), (second, b"b1")])
    one, two = claimed
    store.append_logs(instance, [LogChunk(one.id, one.attempt, b"a2"),
                                 LogChunk(two.id, two.attempt, b"b2"),
                                 LogChunk(one.id, one.attempt, b"a3")])
    store.append_logs(instance, [LogChunk(one.id, one.attempt + 1, b"stale attempt"),
                                 LogChunk(two.id, two.attempt, b"b3")])
    store.append_logs("another-instance", [LogChunk(one.id, one.attempt, b"not ours")])
    assert store.read_log(one.id) == [(1, b"a1"), (2, b"a2"), (3, b"a3")]
    assert store.read_log(two.id) == [(1, b"b1"), (2, b"b2"), (3, b"b3")]
    assert store.read_log(two.id, after=2) == [(3, b"b3")]


def test_finished_tasks_are_pruned_after_task_retention_with_their_logs(clocked):
    cluster, clock = clocked
    cluster.set_setting("task_retention", "1h")
    old, recent, waiting = cluster.add_tasks([["echo", "old"], ["echo", "recent"], ["true"]])
    store = cluster.store
    instance, (old_run, recent_run) = _claim_with_output(
        store, [(old, b"old output\n"), (recent, b"recent output\n")])

    assert store.finish_task(old.id, instance, old_run.attempt, octonodes.TaskState.SUCCESS,
                             exit_code=0)
    clock.advance(minutes=50)
    assert store.finish_task(recent.id, instance, recent_run.attempt, octonodes.TaskState.SUCCESS,
                             exit_code=0)
    clock.advance(minutes=9)
    assert store.reap().pruned == 0, "nothing is past retention yet"
    assert task_log(cluster, old.id) == b"old output\n"

    clock.advance(minutes=2)  # old ended 61 min ago, recent 11 min ago
    assert store.reap().pruned == 1
    with pytest.raises(octonodes.OctonodesError):
        cluster.task(old.id)
    assert store.read_log(old.id) == [], "the pruned task's log is left behind"
    assert cluster.task(recent.id).state == "Success"
    assert task_log(cluster, recent.id) == b"recent output\n"
    assert cluster.task(waiting.id).state == "Queued", "queued tasks are never pruned"

    clock.advance(minutes=50)
    assert store.reap().pruned == 1
    assert store.read_log(recent.id) == []
    assert [t.id for t in cluster.tasks(limit=None)] == [waiting.id]
    assert cluster.add_task(["true"]).id > waiting.id


def test_queue_timeouts_end_waiting_tasks_through_reap(clocked):
    cluster, clock = clocked
    short = cluster.add_task(["true"], queue_timeout=60)
    default = cluster.add_task(["true"])  # the queue_timeout setting: 1d
    store = cluster.store

    clock.advance(seconds=59)
    assert store.reap().queue_timed_out == []
    clock.advance(seconds=2)
    assert store.reap().queue_timed_out == [short.id]
    ended = cluster.task(short.id)
    assert ended.state == "TimedOut" and ended.finished_at == clock.now, ended
    assert "no node picked it up within 1m" in ended.error, ended.error
    assert cluster.task(default.id).state == "Queued"

    clock.advance(days=1)
    assert store.reap().queue_timed_out == [default.id]
    ended = cluster.task(default.id)
    assert ended.state == "TimedOut" and "within 1d" in ended.error, ended.error
    assert store.reap().queue_timed_out == []

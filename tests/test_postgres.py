"""PostgreSQL: one cluster across many hosts.

PostgreSQL only. Here `db` is a fresh schema on the test server, as
conftest's `db` builds for its postgresql case, so every fixture built on it
(`cluster`, `fast_cluster`, `start_node`) is PostgreSQL too. Without a server
these tests skip, except under CI, where they fail (conftest's `_pg_admin`).

Exactly-once claims by racing nodes are covered for both backends by
test_queue_exactly_once.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

import octonodes
from conftest import BACKENDS, FAST_SETTINGS, PG_BASE, _pg_admin, pg_schema, wait_status
from helpers import FakeClock, NodeProcess, octonodes as run_cli, unavailable, wait_until
from http_helpers import KEY_HEADER, NODES, start_http_node
from octonodes.errors import DatabaseBusy, DatabaseError
from octonodes.node.liveness import WORKER_BUSY_TIMEOUT
from octonodes.node.loop import Worker
from octonodes.settings import SETTINGS, parse_duration
from octonodes.store.base import Finish, LogChunk, Registration
from octonodes.store.postgres import PostgresStore
from octonodes.store.postgres_listen import TASK_ENDS, channel_for
from octonodes.store.postgres_schema import REGISTERING_LOCK, WAITING_LOCK

SKEW = 300.0
"""How far ahead the skewed "host" runs: five minutes, far past offline_after."""

SKEWED_CLOCK = '''\
"""Loaded by Python at start-up (sitecustomize), before octonodes or anything
else imports datetime: moves this process's wall clock OCTONODES_TEST_SKEW
seconds ahead, as on a host whose clock is wrong."""
import datetime as _datetime
import os as _os
import time as _time

_skew = float(_os.environ.get("OCTONODES_TEST_SKEW") or 0)
if _skew:
    _real_time, _real_time_ns, _Real = _time.time, _time.time_ns, _datetime.datetime
    _time.time = lambda: _real_time() + _skew
    _time.time_ns = lambda: _real_time_ns() + int(_skew * 1e9)

    class _Meta(type):
        # datetimes made elsewhere (by the database driver) still count as ours
        def __instancecheck__(cls, obj):
            return isinstance(obj, _Real)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, _Real)

    class datetime(_Real, metaclass=_Meta):
        __slots__ = ()  # the size C extensions expect of datetime.datetime

        @classmethod
        def now(cls, tz=None):
            return _Real.now(tz) + _datetime.timedelta(seconds=_skew)

        @classmethod
        def utcnow(cls):
            return _Real.utcnow() + _datetime.timedelta(seconds=_skew)

        @classmethod
        def today(cls):
            return cls.now()

    datetime.__name__ = datetime.__qualname__ = "datetime"
    datetime.__module__ = "datetime"
    _datetime.datetime = datetime
'''


@pytest.fixture
def db():
    """A fresh schema on the test PostgreSQL server, for this test only."""
    if "postgresql" not in BACKENDS:
        unavailable("OCTONODES_TEST_BACKENDS leaves PostgreSQL out",
                    "CI runs every test on PostgreSQL: OCTONODES_TEST_BACKENDS must include it")
    yield from pg_schema()


@pytest.fixture
def admin(db):
    """A plain connection to the test server, for what a DBA would do."""
    conn = _pg_admin()
    yield conn
    conn.close()


@pytest.fixture
def skewed_env(tmp_path) -> dict:
    """The environment of a process whose clocks run SKEW seconds ahead."""
    folder = tmp_path / "skewed-clock"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SKEWED_CLOCK)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "OCTONODES_TEST_SKEW": str(SKEW)}


def unique(prefix: str) -> str:
    """A node name no other test on the same server uses: the connections
    these tests cut are found by it."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def list_json(db: str, env: dict | None = None) -> dict[str, dict]:
    result = run_cli(db, "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {doc["name"]: doc for doc in json.loads(result.stdout)}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- (a) clocks that disagree --------------------------------------------------


def test_the_skewed_clock_reaches_a_python_process(skewed_env):
    probe = ("import time; from datetime import datetime, UTC; "
             "print(time.time(), datetime.now(UTC).timestamp(), datetime.now().timestamp())")
    before = time.time()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, **skewed_env}, check=True).stdout
    after = time.time()
    for value in map(float, out.split()):
        assert before + SKEW - 1 < value < after + SKEW + 1, out


@pytest.mark.slow
def test_on_sqlite_the_skew_shows_so_it_reaches_octonodes(tmp_path, skewed_env):
    """The control: with the local clock as the cluster's clock, a host five
    minutes ahead writes check-ins from the future and sees honest nodes Offline."""
    path = str(tmp_path / "skewed.db")
    with octonodes.open(path, create=True) as local:
        local.store.initialize()
        for key, value in FAST_SETTINGS.items():
            local.set_setting(key, value)
    honest = NodeProcess(path, "honest", tmp_path)
    skewed = NodeProcess(path, "skewed", tmp_path, env=skewed_env)
    try:
        honest.wait_log("started", 30)
        skewed.wait_log("started", 30)
        seen_honestly = list_json(path)
        ahead = parse_time(seen_honestly["skewed"]["last_seen"]) - datetime.now(UTC)
        assert ahead > timedelta(seconds=SKEW - 30), seen_honestly
        seen_skewed = list_json(path, env=skewed_env)
        assert seen_skewed["honest"]["status"] == "Offline", seen_skewed
    finally:
        honest.close()
        skewed.close()


@pytest.mark.slow
def test_nodes_whose_clocks_disagree_by_minutes_see_each_other_running(
        db, fast_cluster, start_node, skewed_env):
    _, key = fast_cluster.add_api_key("test")
    honest = start_http_node(start_node, "honest")
    skewed = start_http_node(start_node, "skewed", env=skewed_env)
    names = {"honest", "skewed"}

    # Past offline_after (3 s) twice over, by the server's clock: long enough
    # for a five-minute skew to show if it counted anywhere.
    until = fast_cluster.now() + timedelta(seconds=2 * fast_cluster.settings().offline_after)
    wait_until(lambda: all(n.last_seen > until for n in fast_cluster.nodes()), 30,
               message="both nodes to check in past twice offline_after")

    server_now = fast_cluster.now()
    for view, env in (("an honest host", None), ("the skewed host", skewed_env)):
        seen = list_json(db, env)
        assert set(seen) == names, view
        for name, doc in seen.items():
            assert doc["status"] == "Running", (view, doc)
            assert abs(parse_time(doc["last_seen"]) - server_now) < timedelta(seconds=10), (view, doc)
    for node in (honest, skewed):  # each node's own view, through its API
        items = httpx.get(node.url + NODES, headers={KEY_HEADER: key}, timeout=10).json()["Items"]
        assert {i["Name"] for i in items} == names
        assert not any(i["IsOffline"] for i in items), (node.name, items)

    # The skewed node's own clock is five minutes ahead (its log says so)...
    stamps = [parse_time(n.process.log().split()[0]) for n in (honest, skewed)]
    assert stamps[1] - stamps[0] > timedelta(seconds=SKEW - 60), stamps
    # ...and it claims and runs tasks beside the honest one, ending none as lost.
    tasks = fast_cluster.add_tasks([["sleep", "0.5"]] * 16)
    ended = [fast_cluster.wait(t.id, timeout=60) for t in tasks]
    assert all(t.state == "Success" and t.error is None for t in ended), ended
    assert {t.node for t in ended} == names
    assert all(n.status == "Running" for n in fast_cluster.nodes())


# -- (b) connections cut while nodes run -----------------------------------------

NODE_BACKENDS = """SELECT pid, application_name FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
    AND application_name LIKE %s"""
CUTS = 5
TASKS = 150
RECORD = 'echo "$OCTONODES_TASK_ID" >> "$1"; sleep 0.05'


def node_backends(admin, group: str) -> dict[int, str]:
    """The server processes of the nodes named `group-…`, by the
    application_name each node gives its connections."""
    rows = admin.execute(NODE_BACKENDS, (f"octonodes node {group}-%",)).fetchall()
    return dict(rows)


def cut(admin, group: str) -> int:
    """Terminate those server processes, as a DBA or a failover would."""
    rows = admin.execute(
        f"SELECT pg_terminate_backend(pid) FROM ({NODE_BACKENDS}) AS b",
        (f"octonodes node {group}-%",)).fetchall()
    return sum(1 for (done,) in rows if done)


@pytest.mark.slow
def test_nodes_ride_out_connections_cut_while_they_run(fast_cluster, start_node, admin, tmp_path):
    # Fencing, which may end a task twice (once killed, once run again), comes
    # only after offline_after less a heartbeat and a lock wait: 8.5 s here,
    # far longer than these cuts last.
    fast_cluster.set_setting("offline_after", "10s")
    group = unique("cut")
    names = [f"{group}-1", f"{group}-2"]
    nodes = [start_node(name, "--cap", "2") for name in names]
    for name in names:
        wait_status(fast_cluster, name, "Running")
    # Each node: one connection for statements, one listening.
    wanted = {f"octonodes node {name}{suffix}" for name in names for suffix in ("", " listen")}
    wait_until(lambda: sorted(node_backends(admin, group).values()) == sorted(wanted), 10,
               message="each node's two connections")

    record = tmp_path / "ran.txt"
    tasks = fast_cluster.add_tasks([["sh", "-c", RECORD, "sh", str(record)]] * TASKS)
    ids = [t.id for t in tasks]

    def successes() -> int:
        return len(fast_cluster.tasks(states=["Success"], limit=None))

    def reconnected(old: set[int]) -> bool:
        now = node_backends(admin, group)
        return not set(now) & old and sorted(now.values()) == sorted(wanted)

    # Cut every node connection each time another sixth of the tasks have
    # ended, so the cuts fall while tasks are being claimed, run and recorded.
    reconnects, recoveries = [], []
    for target in range(TASKS // (CUTS + 1), TASKS, TASKS // (CUTS + 1)):
        done = wait_until(lambda: (n := successes()) >= target and n, 60,
                          message=f"{target} tasks to have ended")
        if done >= TASKS:
            break
        before = set(node_backends(admin, group))
        cut_at, cut_at_server = time.monotonic(), fast_cluster.now()
        assert cut(admin, group) >= 2, "nothing to cut"
        wait_until(lambda: reconnected(before), 15, interval=0.01,
                   message="both nodes to connect and listen again")
        reconnects.append(time.monotonic() - cut_at)
        wait_until(lambda: all(fast_cluster.node(n).last_seen > cut_at_server for n in names),
                   15, interval=0.01, message="both nodes to check in again")
        recoveries.append(time.monotonic() - cut_at)
    assert len(recoveries) >= 3, f"only {len(recoveries)} cut(s) before the tasks ran out"

    def all_ended() -> list | None:
        now = [fast_cluster.task(i) for i in ids]
        return now if all(t.ended for t in now) else None

    ended = wait_until(all_ended, 120, interval=0.2, message="every task to end")
    assert Counter(t.state for t in ended) == {"Success": TASKS}, \
        [(t.id, t.state, t.error) for t in ended if t.state != "Success"]
    assert all(t.attempt == 1 and t.error is None for t in ended)
    runs = Counter(int(line) for line in record.read_text().split())
    assert runs == Counter(ids), {i: n for i, n in runs.items() if n != 1}

    for name in names:
        wait_status(fast_cluster, name, "Running")
    for node in nodes:
        assert node.alive()
        log = node.log()
        assert "lost the connection to the database" in log, log
        assert "reached the database again" in log, log
        assert "killing" not in log, log  # never fenced
    print("after pg_terminate_backend, connected and listening again in",
          ", ".join(f"{r * 1000:.0f}" for r in reconnects), "ms; checked in again in",
          ", ".join(f"{r * 1000:.0f}" for r in recoveries), "ms")


class ClaimAnswerLost(PostgresStore):
    """A store whose first claim commits on the server and then fails, as
    when the connection breaks after COMMIT and before its answer arrives
    (the cuts above hit this now and then; here it happens every time)."""

    losses = 1

    def claim(self, name: str, instance_id: str, limit: int):
        claimed = super().claim(name, instance_id, limit)
        if claimed and self.losses:
            self.losses -= 1
            raise DatabaseError("lost the connection to the database: server closed the "
                                "connection unexpectedly")
        return claimed


def test_tasks_claimed_as_the_connection_broke_still_run_exactly_once(cluster, db, tmp_path):
    store = ClaimAnswerLost(db)
    store.set_lock_wait(WORKER_BUSY_TIMEOUT)
    worker = Worker(store, unique("answer-lost"))
    worker.start()
    loop = threading.Thread(target=worker.run, name="node-loop", daemon=True)
    loop.start()
    try:
        record = tmp_path / "ran.txt"
        tasks = cluster.add_tasks([["sh", "-c", RECORD, "sh", str(record)]] * 3)
        ended = [cluster.wait(t.id, timeout=20) for t in tasks]
        assert store.losses == 0, "the claim's answer was never lost"
        assert [(t.state, t.attempt, t.node) for t in ended] == [("Success", 1, worker.name)] * 3
        assert Counter(int(line) for line in record.read_text().split()) == \
            Counter(t.id for t in tasks)
    finally:
        worker.stop.request_stop()
        loop.join(10)
        store.close()
    assert not loop.is_alive()


# -- (d) a server that refuses -----------------------------------------------------

PASSWORD = "Sw0rdf1sh-9d2c"


def with_password(url: str, path: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':')[0] or 'postgres'}:{PASSWORD}@{host}"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


@pytest.mark.parametrize("url", [
    f"postgresql://octo:{PASSWORD}@127.0.0.1:1/test",  # nothing listens on port 1
    f"postgres://octo@127.0.0.1:1/test?password={PASSWORD}&sslmode=disable",
    with_password(PG_BASE, "/octonodes_no_such_database"),  # the server says no
], ids=["refused", "password-in-query", "no-such-database"])
@pytest.mark.parametrize("command", [["node", "run", "--name", "node-1"], ["list"],
                                     ["list", "--json"]], ids=" ".join)
def test_a_server_that_refuses_is_one_error_line_exit_6_and_no_password(url, command):
    result = run_cli(url, *command, timeout=60)
    assert result.returncode == 6, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot connect to the database "), \
        result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr


# -- (e) wake-ups and an idle node's cost -------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_an_idle_node_picks_up_a_new_task_at_once_and_costs_little(cluster, start_node):
    if not Path("/proc/self/stat").exists():
        unavailable("reads CPU time from /proc",
                    "CI runs on Linux: this test reads CPU time from /proc")
    name = unique("idle")
    node = start_node(name)  # default settings: a check-in every 10 s
    wait_status(cluster, name, "Running")

    # A window to measure over, not a wait for something to happen.
    start_cpu, start = cpu_seconds(node.pid), time.monotonic()
    time.sleep(3)
    share = (cpu_seconds(node.pid) - start_cpu) / (time.monotonic() - start)
    assert share < 0.05, f"an idle node used {share:.1%} of a core"

    latencies = []
    for _ in range(20):
        [task] = cluster.add_tasks([["true"]])
        done = cluster.wait(task.id, timeout=10)
        assert done.state == "Success", done
        # Both times are the server's: queued at the adding transaction,
        # started at the claiming one.
        latencies.append((done.started_at - done.queued_at).total_seconds())
    median = statistics.median(latencies)
    assert median < 0.1, sorted(latencies)
    print(f"idle CPU {share:.2%} of a core; pick-up median {median * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")


# -- (e) what a node's batch does in SQL ----------------------------------------


def in_schema(admin, db: str) -> None:
    """Point the admin connection at the test's schema (from its URL)."""
    schema = urlsplit(db).query.split("search_path%3D")[-1]
    admin.execute(f'SET search_path TO "{schema}"')


@pytest.mark.parametrize("spelling", [None, "90", "90s", "1.5s", "5m", "2h", "1d"])
def test_the_claim_reads_offline_after_as_python_does(db, admin, spelling):
    """The claim, in SQL, reads `offline_after` from its stored spelling (or
    takes the default): a node claims until a moment before that long
    without a check-in, and not a moment after, whichever way it is written."""
    clock = FakeClock()
    cluster = octonodes.open(db, create=True, clock=clock)
    try:
        cluster.store.initialize()
        if spelling is not None:
            in_schema(admin, db)
            # heartbeat_interval as low as it goes, so that every spelling
            # exceeds twice it (else both count as their defaults).
            admin.execute("""INSERT INTO settings (key, value)
                             VALUES ('offline_after', %s), ('heartbeat_interval', '0.1s')""",
                          (spelling,))
        offline_after = parse_duration(spelling or SETTINGS["offline_after"].default)
        store = cluster.store
        # A check-in interval too short to raise the threshold.
        store.register(Registration(name="node-1", instance_id="i-1", host="test-host", pid=1,
                                    version=octonodes.__version__, heartbeat_interval=0.1))
        cluster.add_tasks([["true"]] * 2)
        clock.advance(offline_after + 0.5)
        assert store.exchange("node-1", "i-1", [], [], 1)[1] == [], "claimed while offline"
        clock.advance(-1.0)
        assert len(store.exchange("node-1", "i-1", [], [], 1)[1]) == 1
    finally:
        cluster.close()


def test_a_node_is_not_woken_by_others_task_ends(cluster, db):
    """A node's store does not listen for task ends, which a busy cluster
    commits all the time; anything else still wakes it at once. A waiting
    command's store hears the ends."""
    node_store, waiter, other = PostgresStore(db), PostgresStore(db), cluster.store
    try:
        node_store.ignore_task_ends()
        other.register(Registration(name="node-1", instance_id="i-1", host="test-host", pid=1,
                                    version=octonodes.__version__, heartbeat_interval=10.0))
        cluster.add_tasks([["true"]])
        [claimed] = other.claim("node-1", "i-1", 1)
        for store in (node_store, waiter):
            wait_until(lambda: not store.wait_for_change(0.2), 10,
                       message="the stores to hear all that came before")
        assert other.finish_task(claimed.id, "i-1", claimed.attempt, octonodes.TaskState.SUCCESS,
                                 exit_code=0)
        assert waiter.wait_for_change(10), "a waiting command must hear a task end"
        # A window to listen in, not a wait for something to happen: the
        # notification reached the waiter already.
        assert not node_store.wait_for_change(0.5), "woken by a task's end"
        cluster.add_tasks([["true"]])
        assert node_store.wait_for_change(10), "a new task must still wake it"
    finally:
        node_store.close()
        waiter.close()


def heard(conn, seconds: float, stop_after: int | None = None) -> list[str]:
    """What a plain connection that LISTENs heard within `seconds` (or as
    soon as it has heard `stop_after` notifications)."""
    return [note.payload for note in conn.notifies(timeout=seconds, stop_after=stop_after)]


def test_task_ends_are_announced_only_while_a_command_waits(cluster, db, admin):
    """A batch sends no "tasks ended" notification (which would serialise
    every notifying commit and wake every listener) unless a waiting
    command's store listens for it; while one does, every end reaches it."""
    store = cluster.store
    store.register(Registration(name="node-1", instance_id="i-1", host="test-host", pid=1,
                                version=octonodes.__version__, heartbeat_interval=10.0))
    bystander = _pg_admin()  # LISTENs, but is not a waiting command
    bystander.execute(f'LISTEN "{channel_for(store.schema, TASK_ENDS)}"')
    cluster.add_tasks([["true"]] * 3)

    def end_one() -> None:
        [task] = store.claim("node-1", "i-1", 1)
        assert store.finish_task(task.id, "i-1", task.attempt, octonodes.TaskState.SUCCESS,
                                 exit_code=0)

    waiter = PostgresStore(db)
    try:
        end_one()
        # A window to listen in: a notification would be here already.
        assert heard(bystander, 0.5) == [], "announced an end with nobody waiting"

        wait_until(lambda: not waiter.wait_for_change(0.2), 10,
                   message="the waiter to listen and hear all that came before")
        end_one()
        assert waiter.wait_for_change(10), "a waiting command must hear a task end"
        assert heard(bystander, 10, stop_after=1) == ["end"]
    finally:
        waiter.close()
    # Its session's lock goes when the server has ended the session.
    wait_until(lambda: admin.execute(
        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s
           AND objid = (hashtext(%s)::bigint & 4294967295)::oid AND objsubid = 2""",
        (WAITING_LOCK, channel_for(store.schema, TASK_ENDS))).fetchone()[0] == 0, 10,
        message="the waiter's session to end")
    end_one()
    assert heard(bystander, 0.5) == [], "announced an end after the waiter left"
    bystander.close()


def test_a_waiter_counts_as_listening_only_once_batches_in_flight_are_done(cluster, db, admin):
    """A batch that found nobody waiting holds a lock (shared) until it
    commits; a waiter that comes meanwhile is not listening (it keeps
    saying "changed", so it polls) until that batch is done, and then reads
    what it committed."""
    store = cluster.store
    in_schema(admin, db)
    waiter = PostgresStore(db)
    try:
        with admin.transaction():
            admin.execute("SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))",
                          (REGISTERING_LOCK, channel_for(store.schema, TASK_ENDS)))
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # the window a batch holds the lock in
                assert waiter.changed(), "listening before the batch in flight was done"
                time.sleep(0.05)
        wait_until(lambda: not waiter.wait_for_change(0.2), 10,
                   message="the waiter to listen once the batch committed")
    finally:
        waiter.close()


def test_a_batch_that_fails_part_way_leaves_nothing_behind(cluster, db, admin):
    """Output, ends and a claim go as one statement: when it fails part way
    (here the node's row stays locked), none of it is kept, and the
    connection works on."""
    store = cluster.store
    store.register(Registration(name="node-1", instance_id="i-1", host="test-host", pid=1,
                                version=octonodes.__version__, heartbeat_interval=10.0, task_cap=2))
    first = cluster.add_tasks([["true"]] * 4)
    running = store.claim("node-1", "i-1", 2)
    assert [t.id for t in running] == [first[0].id, first[1].id]
    ends = [Finish(t.id, t.attempt, octonodes.TaskState.SUCCESS, 0) for t in running]
    output = [LogChunk(t.id, t.attempt, b"done\n") for t in running]

    in_schema(admin, db)
    store.set_lock_wait(0.2)
    with admin.transaction():
        admin.execute("SELECT 1 FROM nodes WHERE name = 'node-1' FOR UPDATE")
        with pytest.raises(DatabaseBusy):
            store.exchange("node-1", "i-1", ends, output, 2)
    assert [cluster.task(t.id).state for t in first] == ["Executing"] * 2 + ["Queued"] * 2
    assert store.read_log(first[0].id) == []

    owned, claimed = store.exchange("node-1", "i-1", ends, output, 2)
    assert owned == [True, True]
    assert [t.id for t in claimed] == [first[2].id, first[3].id]
    assert [cluster.task(t.id).state for t in first] == ["Success"] * 2 + ["Executing"] * 2
    assert store.read_log(first[0].id) == [(1, b"done\n")]


def test_a_version_2_schema_is_upgraded_additively(db, admin):
    """Version 3 adds the function a busy node calls (version 4 replaces its
    body), 5 roles and the audit trail, 6 the web page's sessions, and records
    that code at version 1 may still use the schema (a rolling upgrade)."""
    from octonodes.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION

    in_schema(admin, db)
    with admin.transaction():
        for version in (1, 2):
            for statement in MIGRATIONS[version]:
                admin.execute(statement)
        admin.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2'), "
                      "('min_compatible', '1')")
    refused = run_cli(db, "list")
    assert refused.returncode == 6 and "octonodes init" in refused.stderr, refused.stderr
    upgraded = run_cli(db, "init")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from schema version 2 to {SCHEMA_VERSION}" in upgraded.stdout
    meta = dict(admin.execute("SELECT key, value FROM meta").fetchall())
    assert meta == {"schema_version": str(SCHEMA_VERSION), "min_compatible": "1"}
    cluster = octonodes.open(db)
    try:
        cluster.store.register(Registration(name="node-1", instance_id="i-1", host="test-host",
                                            pid=1, version=octonodes.__version__,
                                            heartbeat_interval=10.0))
        [task] = cluster.add_tasks([["true"]])
        assert [t.id for t in cluster.store.claim("node-1", "i-1", 1)] == [task.id]
    finally:
        cluster.close()


def test_the_batch_goes_by_index_even_when_planned_on_a_young_table(cluster, db, admin):
    """The exchange's plans are made once a connection; made while `tasks`
    was young, they must still go by index once it has grown, not scan the
    whole table at every batch (they did: a round of a benchmark took a
    fifth longer than the one before)."""
    store = cluster.store
    store.register(Registration(name="node-1", instance_id="i-1", host="test-host", pid=1,
                                version=octonodes.__version__, heartbeat_interval=10.0))
    cluster.add_tasks([["true"]] * 10)

    def batches(count: int) -> None:
        running: list = []
        for _ in range(count):
            ends = [Finish(t.id, t.attempt, octonodes.TaskState.SUCCESS, 0) for t in running]
            running = store.exchange("node-1", "i-1", ends, [], 1)[1]
        store.exchange("node-1", "i-1", [Finish(t.id, t.attempt, octonodes.TaskState.SUCCESS, 0)
                                         for t in running], [], 0)

    def seq_scans() -> int:
        with store._cursor() as cur:  # the batch's own connection, flushed when idle
            cur.execute("SELECT pg_stat_force_next_flush()")
        with store._cursor() as cur:
            cur.execute("SELECT 1")
        admin.execute("SELECT pg_stat_clear_snapshot()")
        return admin.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'tasks' "
                             "AND schemaname = current_schema()").fetchone()[0]

    in_schema(admin, db)
    batches(8)  # planned now, on ten rows
    cluster.add_tasks([["true"]] * 3000)
    before = seq_scans()
    batches(20)
    assert seq_scans() == before

"""Fixtures: a fresh database per test, on SQLite and on PostgreSQL.

Every test that takes `db` runs once per backend. PostgreSQL tests get a
fresh schema on the machine's server (OCTONODES_TEST_PG, by default
postgresql://postgres@127.0.0.1:5432/test); where no server answers they
skip, except under CI, where they fail. OCTONODES_TEST_BACKENDS=sqlite
limits a local run to one backend.
"""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import quote

import pytest

import octonodes
from helpers import FakeClock, NodeProcess, unavailable, wait_until

PG_BASE = os.environ.get("OCTONODES_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [b for b in os.environ.get("OCTONODES_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]

DROP_ATTEMPTS = 20
DROP_RETRY_PAUSE = 0.5
"""A test schema's teardown retries for up to ten seconds while the server restarts."""

FAST_SETTINGS = {"heartbeat_interval": "0.5s", "offline_after": "3s", "cancel_grace": "2s"}
"""Settings for tests with real nodes: a lost node shows within seconds."""


def _pg_admin():
    import psycopg

    try:
        return psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5)
    except Exception as exc:
        unavailable(f"no PostgreSQL server at {PG_BASE}: {exc}",
                    f"PostgreSQL is required in CI and did not answer at {PG_BASE}: {exc}")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "only_backend(name): run this test on that database backend alone")


def pytest_collection_modifyitems(config, items):
    """A test about one backend (SQLite's write lock, PostgreSQL's package
    store) is not collected for the other, rather than collected and skipped."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("only_backend")
        param = getattr(getattr(item, "callspec", None), "params", {}).get("backend")
        (drop if marker and param and param != marker.args[0] else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db(backend, tmp_path) -> str:
    """A database URL of a fresh, uninitialised database for this test."""
    if backend == "sqlite":
        yield str(tmp_path / "cluster.db")
        return
    yield from pg_schema()


def pg_schema():
    """Yield the URL of a fresh schema on the test server; drop it afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    admin.execute(f'CREATE SCHEMA "{schema}"')
    admin.close()
    sep = "&" if "?" in PG_BASE else "?"
    yield f"{PG_BASE}{sep}options={quote(f'-csearch_path={schema}')}"
    drop_schema(schema)


def drop_schema(schema: str, attempts: int = DROP_ATTEMPTS, url: str = PG_BASE) -> None:
    """Drop a test schema, each attempt on a fresh connection: a server
    restarted by the test (or one that dropped the connection) must not
    leave the schema behind."""
    import psycopg

    for attempt in range(attempts):
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            return
        except psycopg.Error:
            if attempt == attempts - 1:
                raise
            time.sleep(DROP_RETRY_PAUSE)  # the server is coming back; try again


@pytest.fixture
def cluster(db) -> octonodes.Cluster:
    """An initialised cluster on `db`."""
    c = octonodes.open(db, create=True)
    c.store.initialize()
    yield c
    c.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed(db, clock) -> octonodes.Cluster:
    """An initialised cluster whose store reads the fake clock."""
    c = octonodes.open(db, create=True, clock=clock)
    c.store.initialize()
    yield c
    c.close()


@pytest.fixture
def clocked(timed, clock) -> tuple[octonodes.Cluster, FakeClock]:
    return timed, clock


@pytest.fixture
def fast_cluster(cluster) -> octonodes.Cluster:
    """An initialised cluster whose settings suit real node processes in tests."""
    for key, value in FAST_SETTINGS.items():
        cluster.set_setting(key, value)
    return cluster


@pytest.fixture
def start_node(db, tmp_path):
    """Start real `node run` processes: start_node("node-1", "--cap", "3")."""
    started: list[NodeProcess] = []

    def start(name: str, *extra: str, env: dict | None = None, wait: bool = True) -> NodeProcess:
        node = NodeProcess(db, name, tmp_path, *extra, env=env)
        started.append(node)
        if wait:
            node.wait_log("started", timeout=30)
        return node

    yield start
    for node in started:
        node.close()


def node_status(cluster: octonodes.Cluster, name: str) -> str | None:
    try:
        return cluster.node(name, with_tasks=False).status.value
    except octonodes.OctonodesError:
        return None


def wait_status(cluster: octonodes.Cluster, name: str, status: str, timeout: float = 20) -> None:
    wait_until(lambda: node_status(cluster, name) == status, timeout,
               message=f"{name} to be {status}")

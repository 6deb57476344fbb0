"""What the benchmarks share: results, sizes, fresh databases, node processes.

Every benchmark is a function `bench(dbs, sizes) -> Result`, registered in
run.py's BENCHES; its figure is a ratio against a floor measured in the same
run, or a latency median or percentile, never a bare duration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

import octonodes  # noqa: E402

PG_BASE = os.environ.get("OCTONODES_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1000 * 1000


@dataclass
class Result:
    name: str  # what was measured, with its sizes
    backend: str
    figure: str  # the figure as the table shows it
    target: str
    met: bool
    details: dict = field(default_factory=dict)  # the numbers behind the figure
    bench: str = ""  # its key in BENCHES, set by run.py


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; `--quick` picks QUICK, for a smoke test."""

    dispatch_tasks: int = 1000
    pickup_tasks: int = 100
    idle_seconds: float = 10.0
    list_nodes: int = 1000
    list_finished: int = 100_000
    list_runs: int = 15
    claim_queued: int = 100_000
    claims: int = 300
    ping_clients: int = 50
    ping_requests: int = 40  # per client
    upload_bytes: int = GiB


FULL = Sizes()
QUICK = Sizes(dispatch_tasks=200, pickup_tasks=20, idle_seconds=2.0, list_nodes=200,
              list_finished=10_000, list_runs=5, claim_queued=10_000, claims=100,
              ping_clients=50, ping_requests=10, upload_bytes=64 * MiB)


class Databases:
    """Fresh databases per benchmark: a file in a temp folder, or a schema.
    `tmp` is also where a benchmark keeps its files (a package store)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.tmp = Path(tempfile.mkdtemp(prefix="octonodes-bench-"))
        self.schemas: list[str] = []

    def new(self, label: str) -> str:
        if self.backend == "sqlite":
            return str(self.tmp / f"{label}.db")
        import psycopg

        schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        sep = "&" if "?" in PG_BASE else "?"
        return f"{PG_BASE}{sep}options={quote(f'-csearch_path={schema}')}"

    def package_store(self, cluster: octonodes.Cluster) -> Path:
        """Where `cluster`'s nodes store packages. SQLite has a default
        beside the database file; PostgreSQL needs the setting."""
        if self.backend == "sqlite":
            return Path(cluster.db + "-packages")
        path = self.tmp / f"packages-{uuid.uuid4().hex[:8]}"
        cluster.set_setting("package_store", str(path))
        return path

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.schemas:
            import psycopg

            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def new_cluster(dbs: Databases, label: str) -> octonodes.Cluster:
    """An initialised, empty cluster on a fresh database."""
    cluster = octonodes.open(dbs.new(label), create=True)
    cluster.store.initialize()
    return cluster


def start_node(db: str, name: str, *extra: str) -> subprocess.Popen:
    """A real `node run` process, once the cluster sees it online."""
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    proc = subprocess.Popen([sys.executable, "-m", "octonodes", "--db", db, "node", "run",
                             "--name", name, *extra], stderr=subprocess.DEVNULL, env=env)
    cluster = octonodes.open(db)
    try:
        wait_for(lambda: proc.poll() is not None or any(
            n.name == name and n.online for n in cluster.nodes()), 30)
    finally:
        cluster.close()
    if proc.poll() is not None:
        raise RuntimeError(f"node {name} exited at start (exit {proc.returncode})")
    return proc


def stop(proc: subprocess.Popen) -> None:
    """A warm stop (SIGTERM): running tasks finish, then the node exits."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate, timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError("benchmark condition not reached in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 30) -> None:
    def connects() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(connects, timeout, 0.02)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

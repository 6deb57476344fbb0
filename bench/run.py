"""octonodes benchmarks: each figure against a floor measured in the same run.

    python bench/run.py                      # every benchmark, on SQLite
    python bench/run.py --backend all        # SQLite and PostgreSQL
    python bench/run.py --only dispatch,list

Prints a table and writes bench/results/latest.json. The machines these run
on are shared and noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import octonodes  # noqa: E402
from octonodes.models import TaskState  # noqa: E402
from octonodes.store.base import Registration, TaskSpec  # noqa: E402

from fill import fill  # noqa: E402

PG_BASE = os.environ.get("OCTONODES_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Result:
    name: str
    backend: str
    figure: str
    target: str
    met: bool
    details: dict = field(default_factory=dict)


# -- databases ----------------------------------------------------------------

class Databases:
    """Fresh databases per benchmark: a file in a temp folder, or a schema."""

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

    def cleanup(self) -> None:
        if self.schemas:
            import psycopg

            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def start_node(db: str, name: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    proc = subprocess.Popen([sys.executable, "-m", "octonodes", "--db", db, "node", "run",
                             "--name", name, *extra], stderr=subprocess.DEVNULL, env=env)
    cluster = octonodes.open(db)
    wait_for(lambda: any(n.name == name and n.online for n in cluster.nodes()), 30)
    cluster.close()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(predicate, timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError("benchmark condition not reached in time")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- 1. dispatch ----------------------------------------------------------------

def bench_dispatch(dbs: Databases, tasks: int = 1000) -> Result:
    command = ["true"]

    def run_one(_: int) -> None:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.communicate()

    started = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(run_one, range(tasks)))
    floor_seconds = time.perf_counter() - started

    db = dbs.new("dispatch")
    cluster = octonodes.open(db, create=True)
    cluster.store.initialize()
    nodes = [start_node(db, f"node-{i}", "--cap", "5") for i in range(2)]
    try:
        for i in range(2):
            cluster.drain(f"node-{i}")
        cluster.add_tasks([command] * tasks)
        started = time.perf_counter()
        for i in range(2):
            cluster.undrain(f"node-{i}")
        wait_for(lambda: cluster.queue_summary().queued == 0 and not any(
            n.tasks for n in cluster.nodes()), 600, 0.005)
        seconds = time.perf_counter() - started
        ok = len(cluster.tasks(states=[TaskState.SUCCESS], limit=None))
    finally:
        for proc in nodes:
            stop(proc)
        cluster.close()
    ratio = floor_seconds / seconds
    return Result("dispatch: 1,000 `true` tasks, 2 nodes of cap 5", dbs.backend,
                  f"{tasks / seconds:.0f} tasks/s vs floor {tasks / floor_seconds:.0f} tasks/s "
                  f"= {ratio:.2f}", ">= 0.70 of the floor", ratio >= 0.7,
                  {"seconds": seconds, "floor_seconds": floor_seconds, "succeeded": ok})


# -- 2. pick-up latency and idle CPU ----------------------------------------------

def bench_pickup(dbs: Databases, tasks: int = 100, idle_seconds: float = 10.0) -> Result:
    db = dbs.new("pickup")
    cluster = octonodes.open(db, create=True)
    cluster.store.initialize()
    proc = start_node(db, "node-0", "--cap", "5")
    try:
        time.sleep(1.0)  # let start-up work settle before measuring idleness
        before = cpu_ticks(proc.pid)
        time.sleep(idle_seconds)  # the measurement window itself
        idle_cpu = (cpu_ticks(proc.pid) - before) / os.sysconf("SC_CLK_TCK") / idle_seconds
        latencies = []
        for _ in range(tasks):
            task = cluster.add_task(["true"])
            done = cluster.wait(task.id, timeout=30)
            latencies.append((done.started_at - done.queued_at).total_seconds() * 1000)
    finally:
        stop(proc)
        cluster.close()
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    met = p50 < 25 and p99 < 100 and idle_cpu < 0.01
    return Result("pick-up latency (enqueue to start) and idle CPU", dbs.backend,
                  f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, idle {idle_cpu * 100:.2f}% of a core",
                  "p50 < 25 ms, p99 < 100 ms, idle < 1%", met,
                  {"p50_ms": p50, "p99_ms": p99, "idle_cpu_fraction": idle_cpu})


# -- 3. list --json -------------------------------------------------------------

BARE_LIST = """
import json, sqlite3, sys
conn = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
rows = conn.execute(
    "SELECT n.*, (SELECT count(*) FROM tasks t WHERE t.node = n.name "
    "AND t.state IN ('Executing', 'Cancelling')) FROM nodes n ORDER BY n.name").fetchall()
json.dump([list(r) for r in rows], sys.stdout)
"""

BARE_LIST_PG = """
import json, sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    rows = conn.execute(
        "SELECT n.*, (SELECT count(*) FROM tasks t WHERE t.node = n.name "
        "AND t.state IN ('Executing', 'Cancelling')) FROM nodes n ORDER BY n.name").fetchall()
json.dump([list(r) for r in rows], sys.stdout, default=str)
"""


def _time_process(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_list(dbs: Databases, nodes: int = 1000, finished: int = 100_000, runs: int = 15) -> Result:
    db = dbs.new("list")
    fill(db, nodes=nodes, finished=finished)
    script = BARE_LIST if dbs.backend == "sqlite" else BARE_LIST_PG
    env_free = [sys.executable, "-m", "octonodes", "--db", db, "list", "--json"]
    bare = _time_process([sys.executable, "-c", script, db], runs)
    ours = _time_process(env_free, runs)
    ratio = ours / bare
    return Result(f"`list --json`, {nodes:,} nodes, {finished:,} finished tasks", dbs.backend,
                  f"{ours * 1000:.0f} ms vs bare Python {bare * 1000:.0f} ms = {ratio:.1f}x",
                  "<= 5x", ratio <= 5, {"ms": ours * 1000, "bare_ms": bare * 1000})


# -- 4. claim cost against queue length -----------------------------------------

def _claim_cost(db: str, queued: int, claims: int = 300) -> float:
    fill(db, queued=queued)
    cluster = octonodes.open(db)
    store = cluster.store
    reg = Registration(name="claimer", instance_id=uuid.uuid4().hex, host="bench", pid=1,
                       version=octonodes.__version__, heartbeat_interval=10.0, task_cap=1)
    store.register(reg)
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        claimed = store.claim(reg.name, reg.instance_id, 1)
        times.append(time.perf_counter() - started)
        for task in claimed:
            store.finish_task(task.id, reg.instance_id, task.attempt, TaskState.SUCCESS, exit_code=0)
    cluster.close()
    return statistics.median(times)


def bench_claim(dbs: Databases) -> Result:
    small = _claim_cost(dbs.new("claim_small"), 100 + 300)
    large = _claim_cost(dbs.new("claim_large"), 100_000)
    ratio = large / small
    return Result("claim cost, 100 vs 100,000 queued", dbs.backend,
                  f"{small * 1e6:.0f} us vs {large * 1e6:.0f} us = {ratio:.2f}x", "<= 1.5x",
                  ratio <= 1.5, {"small_us": small * 1e6, "large_us": large * 1e6})


BENCHES = {
    "dispatch": bench_dispatch,
    "pickup": bench_pickup,
    "list": bench_list,
    "claim": bench_claim,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="sqlite")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(BENCHES))
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    chosen = [b for b in args.only.split(",") if b] or list(BENCHES)
    results: list[Result] = []
    for backend in backends:
        dbs = Databases(backend)
        try:
            for name in chosen:
                print(f"running {name} on {backend}...", file=sys.stderr, flush=True)
                result = BENCHES[name](dbs)
                results.append(result)
                print(f"  {result.figure}  [{'met' if result.met else 'MISSED'}: {result.target}]",
                      file=sys.stderr, flush=True)
        finally:
            dbs.cleanup()
    print()
    print(f"{'benchmark':<52} {'backend':<10} {'figure':<60} target")
    for r in results:
        print(f"{r.name:<52} {r.backend:<10} {r.figure:<60} {'met' if r.met else 'MISSED'}: {r.target}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [asdict(r) for r in results],
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

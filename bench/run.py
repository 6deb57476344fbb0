"""octonodes benchmarks: each figure against a floor measured in the same run.

    python bench/run.py                      # every benchmark, on SQLite
    python bench/run.py --backend all        # SQLite and PostgreSQL
    python bench/run.py --only dispatch,list
    python bench/run.py --quick              # small sizes: a smoke test, under a minute

Prints a table (Markdown) and writes bench/results/latest.json. The machines
these run on are shared and noisy: read the ratios, not the seconds.
docs/performance.md says what each figure means and its target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (FULL, QUICK, Databases, Result, Sizes, cpu_ticks, new_cluster,  # noqa: E402
                    percentile, start_node, stop, wait_for)
from fill import fill  # noqa: E402
from http_bench import bench_ping, bench_upload  # noqa: E402
from web_bench import bench_ping_pages  # noqa: E402

import octonodes  # noqa: E402
from octonodes.models import TaskState  # noqa: E402
from octonodes.store.base import Registration  # noqa: E402


# -- 1. dispatch ----------------------------------------------------------------

DISPATCH_ROUNDS = 5
"""Floor and nodes take turns this many times; the figure is the median of
the rounds' ratios, so one noisy second on a shared machine does not make it
(single rounds on the same code spread over 0.2 of the floor)."""


def _dispatch_floor(command: list[str], tasks: int) -> float:
    def run_one(_: int) -> None:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.communicate()

    started = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(run_one, range(tasks)))
    return time.perf_counter() - started


def _dispatch_nodes(cluster: octonodes.Cluster, command: list[str], tasks: int) -> float:
    """Queue the tasks while both nodes are drained, undrain them, and time
    from the undrain to the last end, both read from the database's clock."""
    for i in range(2):
        cluster.drain(f"node-{i}")
    added = cluster.add_tasks([command] * tasks)
    started = cluster.now()
    for i in range(2):
        cluster.undrain(f"node-{i}")
    # Polled slowly, so this process takes no CPU from the nodes.
    wait_for(lambda: cluster.queue_summary().queued == 0 and not any(
        n.tasks for n in cluster.nodes()), 600, 0.2)
    done = [t for t in cluster.tasks(limit=None) if t.id >= added[0].id]
    failed = [t for t in done if t.state != TaskState.SUCCESS]
    if len(done) != tasks or failed:
        raise RuntimeError(f"dispatch: {len(done)} tasks ran, {len(failed)} did not succeed")
    return (max(t.finished_at for t in done) - started).total_seconds()


def bench_dispatch(dbs: Databases, sizes: Sizes) -> Result:
    tasks = sizes.dispatch_tasks
    command = ["true"]
    cluster = new_cluster(dbs, "dispatch")
    nodes = [start_node(cluster.db, f"node-{i}", "--cap", "5") for i in range(2)]
    floors, runs = [], []
    try:
        for _ in range(DISPATCH_ROUNDS):
            floors.append(_dispatch_floor(command, tasks))
            runs.append(_dispatch_nodes(cluster, command, tasks))
    finally:
        for proc in nodes:
            stop(proc)
        cluster.close()
    ratios = [floor / run for floor, run in zip(floors, runs)]
    ratio = statistics.median(ratios)
    middle = ratios.index(ratio)
    return Result(f"dispatch: {tasks:,} `true` tasks, 2 nodes of cap 5", dbs.backend,
                  f"{tasks / runs[middle]:.0f} tasks/s vs floor {tasks / floors[middle]:.0f} "
                  f"tasks/s = {ratio:.2f} (median of {DISPATCH_ROUNDS}: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)})",
                  ">= 0.70 of the floor", ratio >= 0.7,
                  {"seconds": runs, "floor_seconds": floors, "ratios": ratios})


# -- 2. pick-up latency and idle CPU ----------------------------------------------

def bench_pickup(dbs: Databases, sizes: Sizes) -> Result:
    tasks, idle_seconds = sizes.pickup_tasks, sizes.idle_seconds
    cluster = new_cluster(dbs, "pickup")
    proc = start_node(cluster.db, "node-0", "--cap", "5")
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


def bench_list(dbs: Databases, sizes: Sizes) -> Result:
    nodes, finished, runs = sizes.list_nodes, sizes.list_finished, sizes.list_runs
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

def _claim_cost(db: str, queued: int, claims: int) -> float:
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


def bench_claim(dbs: Databases, sizes: Sizes) -> Result:
    # Each claim finishes its task, so the small queue starts `claims` longer
    # and ends at 100: the large one stays near `claim_queued` throughout.
    small = _claim_cost(dbs.new("claim_small"), 100 + sizes.claims, sizes.claims)
    large = _claim_cost(dbs.new("claim_large"), sizes.claim_queued, sizes.claims)
    ratio = large / small
    return Result(f"claim cost, 100 vs {sizes.claim_queued:,} queued", dbs.backend,
                  f"{small * 1e6:.0f} us vs {large * 1e6:.0f} us = {ratio:.2f}x", "<= 1.5x",
                  ratio <= 1.5, {"small_us": small * 1e6, "large_us": large * 1e6})


BENCHES = {
    "dispatch": bench_dispatch,
    "pickup": bench_pickup,
    "list": bench_list,
    "claim": bench_claim,
    "ping": bench_ping,
    "ping_pages": bench_ping_pages,
    "upload": bench_upload,
}


def table(results: list[Result]) -> str:
    """The results as a Markdown table, as docs/performance.md shows them."""
    lines = ["| benchmark | backend | figure | target | |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.name} | {r.backend} | {r.figure} | {r.target} | "
                     f"{'met' if r.met else '**missed**'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="sqlite")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (200 dispatch tasks, 10k finished tasks, a 64 MiB "
                             "upload...): a smoke test, not figures to quote")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    chosen = [b for b in args.only.split(",") if b] or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHES)}")
    sizes = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    results: list[Result] = []
    for backend in backends:
        dbs = Databases(backend)
        try:
            for name in chosen:
                print(f"running {name} on {backend}...", file=sys.stderr, flush=True)
                result = BENCHES[name](dbs, sizes)
                result.bench = name
                results.append(result)
                print(f"  {result.figure}  [{'met' if result.met else 'MISSED'}: {result.target}]",
                      file=sys.stderr, flush=True)
        finally:
            dbs.cleanup()
    print()
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "sizes": asdict(sizes),
        "results": [asdict(r) for r in results],
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

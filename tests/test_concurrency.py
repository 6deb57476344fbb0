"""Many processes on one database at once (safe for any number of
processes on one host; one name, one process).

Twenty processes spend a few seconds checking in, setting caps and toggling
drain on the same handful of nodes through the library. Nothing may raise
(a "database is locked" escaping is a failure), and no update may be lost.

How a lost update would show: every cap written to a shared node is unique,
and `set_cap` returns the cap it replaced, read in the same transaction. If
the writes are serialised, the (replaced, written) pairs form one chain from
the starting cap to the final one, each value replaced exactly once. Two
writers that read the same value (one overwriting the other unseen) would
both report it as replaced. The same idea for drain: the calls that changed
the flag alternate on, off, on..., so "turned on" and "turned off" counts
differ by at most one and agree with the final flag.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import traceback
import uuid

import octonodes
from octonodes.errors import Refused
from octonodes.store.base import Registration

PROCESSES = 20
DURATION = 4.0
SHARED = [f"shared-{i}" for i in range(5)]
SLICE = 1000 // PROCESSES
"""Each process writes caps index*SLICE .. index*SLICE+SLICE-1 to each shared
node, so every value written is unique; START_CAP is in no slice."""
START_CAP = 1000
STARTUP_TIMEOUT = 60.0

# fork: cheap on a 2-core machine; the parent holds no connection to the file
# while children run (SQLite connections must not cross a fork).
CONTEXT = multiprocessing.get_context("fork")


def _registration(name: str, instance: str, host: str = "test-host", cap: int | None = None,
                  interval: float = 0.5) -> Registration:
    return Registration(name=name, instance_id=instance, host=host, pid=os.getpid(),
                        version="test", heartbeat_interval=interval, task_cap=cap)


def _churn(db: str, index: int, barrier, results) -> None:
    """One process: register its own node, then until the deadline check in,
    set caps, toggle drain and read, recording what each write replaced."""
    report: dict = {"index": index}
    try:
        cluster = octonodes.open(db)
        own = f"own-{index}"
        instance = f"{index}-{uuid.uuid4().hex}"
        cluster.store.register(_registration(own, instance, host=f"host-{index}", cap=0))
        rng = random.Random(index)
        writes: dict[str, list[tuple[int, int]]] = {name: [] for name in SHARED}
        drains = {name: {"on": 0, "off": 0} for name in SHARED}
        own_cap = 0
        steps = 0
        barrier.wait(STARTUP_TIMEOUT)
        deadline = time.monotonic() + DURATION
        while time.monotonic() < deadline:
            steps += 1
            if cluster.store.check_in(own, instance, shutting_down=False,
                                      heartbeat_interval=0.5) is None:
                raise AssertionError(f"{own} lost its registration")
            # Its own node: nobody else writes it, so it must read back what it wrote.
            new_cap = steps % 1001
            previous = cluster.set_cap(own, new_cap)
            if previous != own_cap:
                raise AssertionError(f"{own}: cap was {previous}, wrote {own_cap} last")
            own_cap = new_cap
            shared = SHARED[rng.randrange(len(SHARED))]
            written = writes[shared]
            if len(written) < SLICE:
                value = index * SLICE + len(written)
                written.append((cluster.set_cap(shared, value), value))
            target = SHARED[rng.randrange(len(SHARED))]
            if rng.random() < 0.5:
                drains[target]["on"] += cluster.drain(target)
            else:
                drains[target]["off"] += cluster.undrain(target)
            if steps % 7 == 0:
                names = {n.name for n in cluster.nodes()}
                if not set(SHARED) <= names:
                    raise AssertionError(f"nodes() missed some shared nodes: {names}")
                cluster.node(target, with_tasks=True)
        report.update(ok=True, steps=steps, writes=writes, drains=drains, own=own,
                      own_cap=own_cap)
        cluster.close()
    except BaseException:  # anything at all is a failure, reported to the parent
        report.update(ok=False, error=traceback.format_exc())
    results.put(report)


def _run_all(target, args_for, count: int) -> list[dict]:
    barrier = CONTEXT.Barrier(count + 1)
    results = CONTEXT.Queue()
    procs = [CONTEXT.Process(target=target, args=(*args_for(i), barrier, results))
             for i in range(count)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(STARTUP_TIMEOUT)
        reports = [results.get(timeout=STARTUP_TIMEOUT + DURATION + 30) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    assert [p.exitcode for p in procs] == [0] * count
    return sorted(reports, key=lambda r: r["index"])


def test_twenty_processes_churning_lose_no_update_and_raise_nothing(db):
    with octonodes.open(db, create=True) as setup:
        setup.store.initialize()
        for name in SHARED:
            setup.store.register(_registration(name, f"holder-{name}", cap=START_CAP,
                                               interval=60.0))

    started = time.monotonic()
    reports = _run_all(_churn, lambda i: (db, i), PROCESSES)
    assert time.monotonic() - started >= DURATION

    failures = [r["error"] for r in reports if not r["ok"]]
    assert not failures, "\n\n".join(failures)
    assert all(r["steps"] >= 5 for r in reports), [r["steps"] for r in reports]

    with octonodes.open(db) as cluster:
        nodes = {n.name: n for n in cluster.nodes()}
        assert set(nodes) == set(SHARED) | {r["own"] for r in reports}
        for report in reports:
            own = nodes[report["own"]]
            assert own.task_cap == report["own_cap"]
            assert own.status == "Running"
        total_writes = 0
        for name in SHARED:
            pairs = [pair for r in reports for pair in r["writes"][name]]
            total_writes += len(pairs)
            replaced = [old for old, _ in pairs]
            seen_twice = sorted({v for v in replaced if replaced.count(v) > 1})
            assert not seen_twice, f"{name}: lost updates: caps {seen_twice} replaced twice"
            following = dict(pairs)
            cap, steps = START_CAP, 0
            while cap in following:
                cap, steps = following[cap], steps + 1
            assert steps == len(pairs), f"{name}: the chain of writes breaks after {steps}"
            assert nodes[name].task_cap == cap

            on = sum(r["drains"][name]["on"] for r in reports)
            off = sum(r["drains"][name]["off"] for r in reports)
            assert on - off in (0, 1), f"{name}: drain turned on {on} times, off {off} times"
            assert nodes[name].drain is (on - off == 1)
        assert total_writes >= 50, total_writes  # there was contention to speak of


def _claim_name(db: str, index: int, barrier, results) -> None:
    report: dict = {"index": index}
    try:
        cluster = octonodes.open(db)
        instance = f"racer-{index}"
        barrier.wait(STARTUP_TIMEOUT)
        try:
            cluster.store.register(_registration("contested", instance, host=f"host-{index}",
                                                 interval=10.0))
            report.update(ok=True, won=True, instance=instance)
        except Refused as refused:
            report.update(ok=True, won=False, message=str(refused))
        cluster.close()
    except BaseException:
        report.update(ok=False, error=traceback.format_exc())
    results.put(report)


def test_processes_racing_for_one_name_leave_exactly_one_holder(db):
    with octonodes.open(db, create=True) as setup:
        setup.store.initialize()
    reports = _run_all(_claim_name, lambda i: (db, i), 10)
    failures = [r["error"] for r in reports if not r["ok"]]
    assert not failures, "\n\n".join(failures)
    winners = [r for r in reports if r["won"]]
    assert len(winners) == 1, winners
    with octonodes.open(db) as cluster:
        node = cluster.node("contested")
        assert node.instance_id == winners[0]["instance"]
        assert node.status == "Running"
    for loser in (r for r in reports if not r["won"]):
        assert node.host in loser["message"] and str(node.pid) in loser["message"]

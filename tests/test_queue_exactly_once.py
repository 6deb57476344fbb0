"""Every task is claimed by exactly one node, and no node ever runs more than
its cap: three real nodes race for hundreds of tasks queued in one call."""

from __future__ import annotations

from collections import defaultdict

import pytest

from conftest import wait_status
from helpers import wait_until

pytestmark = pytest.mark.slow

CAPS = {"node-a": 2, "node-b": 3, "node-c": 4}
TASKS = 300
TASK_SLEEP = "0.25"

# One line per run, "<task id> <node> <start> <end>", appended with O_APPEND in
# a single write (dash's printf), so concurrent lines never interleave.
RECORD = (
    'start=$(date +%s.%N); sleep "$2"; end=$(date +%s.%N); '
    'printf "%s %s %s %s\\n" "$OCTONODES_TASK_ID" "$OCTONODES_NODE" "$start" "$end" >> "$1"'
)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_max_overlap_counts_what_it_should():
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_overlap([(0, 3), (1, 2), (1.5, 4), (3.5, 5)]) == 3
    assert max_overlap([]) == 0


def test_hundreds_of_tasks_run_exactly_once_within_each_cap(fast_cluster, start_node, tmp_path):
    record = tmp_path / "runs.txt"
    nodes = [start_node(name, "--cap", str(cap)) for name, cap in CAPS.items()]
    for name in CAPS:
        fast_cluster.drain(name)
    for name in CAPS:
        wait_status(fast_cluster, name, "Drained")

    added = fast_cluster.add_tasks(
        [["sh", "-c", RECORD, "sh", str(record), TASK_SLEEP]] * TASKS)
    ids = [t.id for t in added]
    assert len(ids) == TASKS and ids == sorted(ids) and len(set(ids)) == TASKS
    assert all(t.state == "Queued" for t in added)

    # Drained nodes keep checking in and claim nothing.
    added_at = fast_cluster.now()
    for name in CAPS:
        wait_until(lambda: fast_cluster.node(name, with_tasks=False).last_seen > added_at, 10,
                   message=f"{name} to check in after the tasks were queued")
    assert fast_cluster.queue_summary().queued == TASKS
    assert not record.exists()

    for name in CAPS:
        fast_cluster.undrain(name)

    def all_ended():
        return sum(1 for t in fast_cluster.tasks(limit=None) if t.ended) == TASKS

    wait_until(all_ended, timeout=90, interval=0.25, message="every task to end")

    tasks = {t.id: t for t in fast_cluster.tasks(limit=None)}
    assert sorted(tasks) == ids
    not_ok = [(t.id, t.state, t.error) for t in tasks.values() if t.state != "Success"]
    assert not not_ok, not_ok
    assert all(t.attempt == 1 for t in tasks.values())

    lines = record.read_text().splitlines()
    seen: dict[int, int] = defaultdict(int)
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in lines:
        task_id, node, start, end = line.split()
        seen[int(task_id)] += 1
        intervals[node].append((float(start), float(end)))
        assert tasks[int(task_id)].node == node, line
    twice = {task_id: n for task_id, n in seen.items() if n != 1}
    assert not twice, f"tasks run more than once: {twice}"
    assert sorted(seen) == ids, "some tasks never ran"
    assert len(lines) == TASKS

    for name, cap in CAPS.items():
        peak = max_overlap(intervals[name])
        assert peak == cap, (f"{name} (cap {cap}) ran at most {peak} task(s) at once; "
                             f"it ran {len(intervals[name])} task(s)")
    for node in nodes:
        assert node.alive(), node.log()

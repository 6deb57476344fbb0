"""Fill a database through the library: N nodes, M finished tasks, Q queued.

    python bench/fill.py --db /tmp/bench.db --nodes 1000 --finished 100000
"""

from __future__ import annotations

import argparse
import uuid

import octonodes
from octonodes.models import TaskState
from octonodes.store.base import Registration, TaskSpec

BATCH = 1000


def fill(db: str, *, nodes: int = 0, finished: int = 0, queued: int = 0) -> None:
    """Register `nodes` nodes, run `finished` tasks to Success on them (as the
    nodes would: claim, then finish), and leave `queued` tasks queued."""
    cluster = octonodes.open(db, create=True)
    store = cluster.store
    store.initialize()
    names = []
    for i in range(nodes):
        reg = Registration(name=f"node-{i:04d}", instance_id=uuid.uuid4().hex, host="bench",
                           pid=10000 + i, version=octonodes.__version__,
                           heartbeat_interval=10.0, task_cap=1000)
        store.register(reg)
        names.append(reg)
    left = finished
    turn = 0
    while left > 0:
        batch = min(BATCH, left)
        store.add_tasks([TaskSpec(command=["true"]) for _ in range(batch)])
        worker = names[turn % len(names)]
        turn += 1
        store.check_in(worker.name, worker.instance_id, shutting_down=False,
                       heartbeat_interval=10.0)
        for task in store.claim(worker.name, worker.instance_id, batch):
            store.finish_task(task.id, worker.instance_id, task.attempt, TaskState.SUCCESS,
                              exit_code=0)
        left -= batch
    for start in range(0, queued, BATCH):
        store.add_tasks([TaskSpec(command=["true"]) for _ in range(min(BATCH, queued - start))])
    cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--nodes", type=int, default=0)
    parser.add_argument("--finished", type=int, default=0)
    parser.add_argument("--queued", type=int, default=0)
    args = parser.parse_args()
    fill(args.db, nodes=args.nodes, finished=args.finished, queued=args.queued)


if __name__ == "__main__":
    main()

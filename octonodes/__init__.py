"""octonodes: run and administer a high-availability cluster of worker nodes.

    import octonodes
    cluster = octonodes.open()            # --db rules: OCTONODES_DB, else the default file
    task = cluster.add_task(["echo", "hello"])
    print(cluster.wait(task.id, timeout=60).state)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .cluster import Cluster, open  # noqa: E402,A004
from .errors import (DatabaseError, NotFound, OctonodesError, Refused, TimedOut,  # noqa: E402
                     UsageError)
from .health import CheckResult  # noqa: E402
from .models import Node, NodeStatus, Task, TaskState  # noqa: E402
from .queue import QueueState  # noqa: E402
from .store.base import TaskSpec  # noqa: E402

__all__ = [
    "__version__", "open", "Cluster", "CheckResult", "Node", "NodeStatus", "QueueState", "Task",
    "TaskState", "TaskSpec",
    "OctonodesError", "UsageError", "NotFound", "Refused", "TimedOut", "DatabaseError",
]

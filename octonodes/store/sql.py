"""What both SQL backends do with the same statements: settings, nodes,
tasks and ending a lost node's tasks; with `sql_access` (API keys, the audit
trail) and `sql_sessions` (the web page's sessions), everything they share.

`sql_backend.SqlBackend` names what a statement may differ in between the
two. Backends keep connecting, translating errors, notifications, adding
tasks, the claim and the exchange, registration and reap's locking.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from .. import audit
from ..audit import Action, Change, node_actor
from ..errors import NotFound
from ..models import Node, Task, TaskState, make_node
from ..settings import ClusterSettings, validate_setting
from . import common
from .records import CheckIn, QueueSummary, TaskQuery
from .sql_access import SqlAccess
from .sql_sessions import SqlSessions

ACTIVE_SQL = "('Executing', 'Cancelling')"
TASK_COLUMNS = ", ".join((
    "id", "name", "command", "state", "node", "instance_id", "queued_at", "started_at",
    "finished_at", "exit_code", "error", "timeout", "queue_timeout", "retries", "attempt"))
RUNNING_COUNT_SQL = (
    f"(SELECT count(*) FROM tasks t WHERE t.node = n.name AND t.state IN {ACTIVE_SQL})")
"""How many tasks run on the node row `n`."""
NODE_COLUMNS = """n.name, n.task_cap, n.drain, n.shutting_down, n.last_seen, n.started_at,
    n.stopped_at, n.version, n.host, n.pid, n.http_address, n.heartbeat_interval, n.instance_id,
    n.drain_reason, n.drained_by, n.drained_at"""
NODE_TIMES = ("last_seen", "started_at", "stopped_at", "drained_at")


class SqlStore(SqlAccess, SqlSessions):
    """The statements and rules both SQL backends share."""

    # -- settings -------------------------------------------------------------

    def _settings_in(self, cx: Any) -> ClusterSettings:
        return ClusterSettings.from_stored(
            {r["key"]: r["value"] for r in self._rows(cx, "SELECT key, value FROM settings")})

    def _settings_and_now(self, cx: Any) -> tuple[ClusterSettings, datetime]:
        """The settings in force and the cluster's time, as the transaction
        `cx` sees them (PostgreSQL reads both in one statement)."""
        return self._settings_in(cx), self.now()

    def stored_settings(self) -> dict[str, str]:
        with self._reading() as cx:
            return {r["key"]: r["value"] for r in self._rows(cx, "SELECT key, value FROM settings")}

    def settings(self) -> ClusterSettings:
        return ClusterSettings.from_stored(self.stored_settings())

    def set_setting(self, key: str, value: str, change: Change | None = None) -> None:
        P = self.P
        with self._write() as cx:
            # Writers one at a time, so two changes cannot each pass validation
            # against the other's old value (offline_after vs heartbeat_interval).
            self._lock_settings(cx)
            canonical = validate_setting(key, value, self._settings_in(cx))
            old = self._rows(cx, f"SELECT value FROM settings WHERE key = {P}", (key,))
            if old and old[0]["value"] == canonical:
                return
            cx.execute(f"""INSERT INTO settings (key, value) VALUES ({P}, {P})
                           ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                       (key, canonical))
            self._event(cx, change or audit.change(None), Action.SETTING_SET, key,
                        details={"old": old[0]["value"] if old else None, "new": canonical})

    # -- nodes ----------------------------------------------------------------

    def _select_nodes(self, cx: Any, where: str = "", args: tuple = ()) -> list[tuple[dict, int]]:
        """(stored fields, times as datetimes; running tasks) of the nodes `where` picks."""
        result = []
        for row in self._rows(cx, f"SELECT {NODE_COLUMNS}, {RUNNING_COUNT_SQL} AS running "
                                  f"FROM nodes n {where} ORDER BY n.name", args):
            data = dict(row)
            for key in NODE_TIMES:
                data[key] = self._time(data[key])
            result.append((data, data.pop("running")))
        return result

    def _one_node(self, cx: Any, name: str, settings: ClusterSettings, now: datetime) -> Node:
        rows = self._select_nodes(cx, f"WHERE n.name = {self.P}", (name,))
        if not rows:
            raise NotFound(f"no node named {name!r}")
        row, running = rows[0]
        return make_node(row, now=now, running=running,
                         offline_after=settings.offline_after)

    def nodes(self) -> list[Node]:
        with self._read() as cx:
            settings, now = self._settings_and_now(cx)
            return [make_node(row, now=now, running=running, offline_after=settings.offline_after)
                    for row, running in self._select_nodes(cx)]

    def node(self, name: str, *, with_tasks: bool = False) -> Node:
        with self._read() as cx:
            node = self._one_node(cx, name, *self._settings_and_now(cx))
            if with_tasks:
                node.active_tasks = self._select_tasks(
                    cx, f"WHERE node = {self.P} AND state IN {ACTIVE_SQL} ORDER BY id", (name,))
            return node

    def check_in(self, name: str, instance_id: str, *, shutting_down: bool,
                 heartbeat_interval: float) -> CheckIn | None:
        P = self.P
        with self._write() as cx:
            updated = cx.execute(
                f"""UPDATE nodes SET last_seen = {self.NOW}, shutting_down = {P},
                    heartbeat_interval = {P}, lost_instance = NULL
                    WHERE name = {P} AND instance_id = {P} AND stopped_at IS NULL""",
                (self._now_arg(), shutting_down, heartbeat_interval, name, instance_id)).rowcount
            if updated == 0:
                return None
            settings, now = self._settings_and_now(cx)
            return CheckIn(node=self._one_node(cx, name, settings, now), settings=settings)

    def mark_stopped(self, name: str, instance_id: str) -> None:
        P = self.P
        with self._write() as cx:
            stopped = cx.execute(
                f"""UPDATE nodes SET stopped_at = {self.NOW}, shutting_down = {P}
                    WHERE name = {P} AND instance_id = {P} AND stopped_at IS NULL""",
                (self._now_arg(), False, name, instance_id)).rowcount
            if stopped:
                self._event(cx, Change(node_actor(name)), Action.NODE_STOP, name, node=name,
                            details={"instance": instance_id})

    def note_fenced(self, name: str, instance_id: str, details: dict) -> None:
        with self._write() as cx:
            self._event(cx, Change(node_actor(name)), Action.NODE_FENCE, name, node=name,
                        details={"instance": instance_id, **details})

    def _node_field(self, cx: Any, name: str, column: str) -> Any:
        """One stored field of a node, its row locked until the transaction
        ends (where rows can be locked); NotFound for an unknown node."""
        row = self._rows(cx, f"SELECT {column} FROM nodes WHERE name = {self.P}{self.FOR_UPDATE}",
                         (name,))
        if not row:
            raise NotFound(f"no node named {name!r}")
        return row[0][column]

    def set_drain(self, name: str, on: bool, change: Change | None = None) -> bool:
        change = change or audit.change(None)
        P = self.P
        with self._write() as cx:
            was = bool(self._node_field(cx, name, "drain"))
            if was != on:
                cx.execute(
                    f"""UPDATE nodes SET drain = {P}, drain_reason = {P}, drained_by = {P},
                        drained_at = CASE WHEN {P} THEN {self.NOW} END WHERE name = {P}""",
                    (on, change.reason if on else None, change.actor if on else None,
                     on, self._now_arg(), name))
                self._event(cx, change, Action.NODE_DRAIN if on else Action.NODE_UNDRAIN,
                            name, node=name, details={"old": was, "new": on})
            return was

    def set_cap(self, name: str, cap: int, change: Change | None = None) -> int:
        P = self.P
        with self._write() as cx:
            old = self._node_field(cx, name, "task_cap")
            if old != cap:
                cx.execute(f"UPDATE nodes SET task_cap = {P} WHERE name = {P}", (cap, name))
                self._event(cx, change or audit.change(None), Action.NODE_CAP, name,
                            node=name, details={"old": old, "new": cap})
            return old

    def delete_node(self, name: str, *, force: bool, change: Change | None = None) -> list[int]:
        P = self.P
        with self._write() as cx:
            self._lock_node(cx, name)
            node = self._one_node(cx, name, *self._settings_and_now(cx))
            if not force:
                common.refuse_delete(node)
            ids = [r["id"] for r in self._rows(
                cx, f"""SELECT id FROM tasks WHERE node = {P} AND state IN {ACTIVE_SQL}
                        ORDER BY id{self.FOR_UPDATE}""", (name,))]
            if ids:
                cx.execute(
                    f"""UPDATE tasks SET state = 'Failed', finished_at = {self.NOW}, error = {P}
                        WHERE id IN ({', '.join([P] * len(ids))})""",
                    (self._now_arg(), common.ERROR_NODE_DELETED.format(node=name), *ids))
            cx.execute(f"DELETE FROM nodes WHERE name = {P}", (name,))
            self._event(cx, change or audit.change(None), **common.deleted_event(node, force, ids))
            return ids

    # -- tasks ----------------------------------------------------------------

    def _select_tasks(self, cx: Any, tail: str, args: tuple | list = ()) -> list[Task]:
        return [self._task(row) for row in self._rows(cx, f"SELECT {TASK_COLUMNS} FROM tasks {tail}",
                                                      args)]

    def _task(self, row: Mapping) -> Task:
        time = self._time
        return Task(
            id=row["id"], name=row["name"], command=self._command(row["command"]),
            state=TaskState(row["state"]), node=row["node"],
            queued_at=time(row["queued_at"]), started_at=time(row["started_at"]),
            finished_at=time(row["finished_at"]), exit_code=row["exit_code"],
            error=row["error"], timeout=row["timeout"], queue_timeout=row["queue_timeout"],
            retries=row["retries"], attempt=row["attempt"], instance=row["instance_id"],
        )

    def task(self, task_id: int) -> Task:
        with self._reading() as cx:
            found = self._select_tasks(cx, f"WHERE id = {self.P}", (task_id,))
        if not found:
            raise NotFound(f"no task with id {task_id}")
        return found[0]

    def tasks(self, *, node: str | None = None, states: Iterable[TaskState] = (),
              limit: int | None = 50) -> list[Task]:
        P = self.P
        clauses, args = [], []
        if node is not None:
            clauses.append(f"node = {P}")
            args.append(node)
        states = [TaskState(s).value for s in states]
        if states:
            clauses.append(f"state IN ({', '.join([P] * len(states))})")
            args.extend(states)
        tail = ("WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id DESC"
        if limit is not None:
            tail += f" LIMIT {P}"
            args.append(limit)
        with self._reading() as cx:
            return self._select_tasks(cx, tail, args)

    def task_page(self, query: TaskQuery, offset: int, limit: int) -> tuple[int, list[Task]]:
        P = self.P
        clauses, args = [], []
        for column, values in (("state", [TaskState(s).value for s in query.states]),
                               ("id", list(query.ids))):
            if values:
                clauses.append(f"{column} IN ({', '.join([P] * len(values))})")
                args.extend(values)
        for clause, value in ((f"node = {P}", query.node), (f"name = {P}", query.name),
                              (self.NAME_LIKE,
                               query.name_contains and common.like_pattern(query.name_contains))):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        where = "WHERE " + " AND ".join(clauses) if clauses else ""
        with self._reading() as cx:
            total = self._rows(cx, f"SELECT count(*) AS n FROM tasks {where}", args)[0]["n"]
            page = self._select_tasks(cx, f"{where} ORDER BY id DESC LIMIT {P} OFFSET {P}",
                                      (*args, limit, offset)) if offset < total else []
        return total, page

    def cancel(self, task_id: int, change: Change | None = None) -> tuple[Task, bool]:
        P = self.P
        with self._write() as cx:
            found = self._select_tasks(cx, f"WHERE id = {P}{self.FOR_UPDATE}", (task_id,))
            if not found:
                raise NotFound(f"no task with id {task_id}")
            task = found[0]
            if task.state is TaskState.QUEUED:
                cx.execute(
                    f"""UPDATE tasks SET state = 'Canceled', finished_at = {self.NOW}, error = {P}
                        WHERE id = {P}""",
                    (self._now_arg(), common.ERROR_CANCELED_QUEUED, task_id))
            elif task.state is TaskState.EXECUTING:
                cx.execute(f"UPDATE tasks SET state = 'Cancelling' WHERE id = {P}", (task_id,))
            else:
                return task, False
            after = self._select_tasks(cx, f"WHERE id = {P}", (task_id,))[0]
            self._event(cx, change or audit.change(None), **common.canceled_event(task, after))
            return after, True

    def cancel_requests(self, name: str, instance_id: str) -> list[tuple[int, int]]:
        P = self.P
        with self._reading() as cx:
            return [(r["id"], r["attempt"]) for r in self._rows(
                cx, f"""SELECT id, attempt FROM tasks WHERE node = {P} AND state = 'Cancelling'
                        AND instance_id = {P}""", (name, instance_id))]

    def own_active_tasks(self, name: str, instance_id: str) -> list[Task]:
        P = self.P
        with self._reading() as cx:
            return self._select_tasks(
                cx, f"WHERE node = {P} AND instance_id = {P} AND state IN {ACTIVE_SQL} ORDER BY id",
                (name, instance_id))

    def read_log(self, task_id: int, after: int = 0) -> list[tuple[int, bytes]]:
        P = self.P
        with self._reading() as cx:
            return [(r["seq"], bytes(r["data"])) for r in self._rows(
                cx, f"SELECT seq, data FROM task_logs WHERE task_id = {P} AND seq > {P} ORDER BY seq",
                (task_id, after))]

    def queue_summary(self) -> QueueSummary:
        with self._reading() as cx:
            row = self._rows(cx, "SELECT count(*) AS n, min(queued_at) AS oldest FROM tasks "
                                 "WHERE state = 'Queued'")[0]
        return QueueSummary(queued=row["n"], oldest_queued_at=self._time(row["oldest"]))

    def _end_lost(self, cx: Any, now: datetime, where: str, args: tuple,
                  *, skip_locked: bool = False) -> tuple[list[int], list[int]]:
        """Fail (or requeue, while retries remain) the active tasks picked by
        `where`; returns (failed ids, requeued ids). With `skip_locked`, a task
        someone is writing right now waits for the next pass."""
        P = self.P
        rows = self._rows(
            cx, f"""SELECT t.id, t.state, t.attempt, t.retries, t.node, n.last_seen
                    FROM tasks t LEFT JOIN nodes n ON n.name = t.node
                    WHERE t.state IN {ACTIVE_SQL} {where}
                    ORDER BY t.id{self._lost_lock(skip_locked)}""", args)
        failed, requeued, requeue_rows, fail_rows = [], [], [], []
        for row in rows:
            seen = self._time(row["last_seen"])
            if common.requeues(TaskState(row["state"]), row["attempt"], row["retries"]):
                requeue_rows.append((common.requeued_note(row["node"], row["attempt"], seen),
                                     row["id"]))
                requeued.append(row["id"])
            else:
                fail_rows.append((self._stored_time(now), common.lost_error(row["node"], seen),
                                  row["id"]))
                failed.append(row["id"])
        if requeue_rows:
            cx.executemany(
                f"""UPDATE tasks SET state = 'Queued', node = NULL, instance_id = NULL,
                    started_at = NULL, error = {P} WHERE id = {P}""", requeue_rows)
        if fail_rows:
            cx.executemany(
                f"UPDATE tasks SET state = 'Failed', finished_at = {P}, error = {P} WHERE id = {P}",
                fail_rows)
        return failed, requeued

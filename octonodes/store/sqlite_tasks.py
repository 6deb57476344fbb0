"""The task statements SQLite runs its own way: adding tasks, the claim,
a node's output and ends (alone or with a claim, as one `exchange`), and
reap. Each write is one `BEGIN IMMEDIATE` transaction; a cheap read-only
look comes first where an idle node would otherwise take the write lock
every time someone commits.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable

from .. import audit
from ..audit import Action, Change
from ..models import Task, TaskState, is_offline
from ..settings import ClusterSettings
from . import common
from .records import Finish, LogChunk, Reaped, TaskSpec
from .sql import ACTIVE_SQL, RUNNING_COUNT_SQL, SqlStore


def _offline_sql(n: str = "n") -> str:
    """The offline rule for row `n` (arguments: now, offline_after)."""
    return common.offline_sql("?", "?", greatest="max", seconds="", n=n)


class SQLiteTasks(SqlStore):
    """Tasks on SQLite; `sqlite.SQLiteStore` is the rest."""

    def add_tasks(self, specs: Iterable[TaskSpec], change: Change | None = None) -> list[Task]:
        specs = list(specs)
        if not specs:
            return []
        with self._write() as conn:
            now = self._stored_time(self.now())
            added = []
            for spec in specs:
                cursor = conn.execute(
                    """INSERT INTO tasks (name, command, state, queued_at, timeout,
                       queue_timeout, retries, attempt) VALUES (?, ?, 'Queued', ?, ?, ?, ?, 0)
                       RETURNING *""",
                    (spec.name or common.default_task_name(spec.command), json.dumps(spec.command),
                     now, spec.timeout, spec.queue_timeout, spec.retries),
                )
                columns = [d[0] for d in cursor.description]
                added.append(self._task(dict(zip(columns, cursor.fetchone()))))
            self._event(conn, change or audit.change(None), **common.added_event(added))
            return added

    def claim(self, name: str, instance_id: str, limit: int) -> list[Task]:
        if limit <= 0 or not self._anything_queued():
            return []
        with self._write() as conn:
            return self._claim_in(conn, name, instance_id, limit)

    def _anything_queued(self) -> bool:
        # A cheap look, outside any write transaction: an idle node must not
        # take the write lock every time someone commits.
        with self._reading() as cx:
            return cx.execute(
                "SELECT 1 FROM tasks WHERE state = 'Queued' LIMIT 1").fetchone() is not None

    def _claim_in(self, conn: sqlite3.Connection, name: str, instance_id: str,
                  limit: int) -> list[Task]:
        now = self.now()
        row = conn.execute(
            f"""SELECT n.task_cap, n.drain, n.shutting_down, n.stopped_at, n.last_seen,
                n.heartbeat_interval, {RUNNING_COUNT_SQL},
                (SELECT json_group_object(key, value) FROM settings)
                FROM nodes n WHERE n.name = ? AND n.instance_id = ?""",
            (name, instance_id)).fetchone()
        if row is None:
            return []
        cap, drain, shutting_down, stopped_at, last_seen, interval, running, stored = row
        settings = ClusterSettings.from_stored(json.loads(stored))
        if drain or shutting_down or is_offline(
                now=now, last_seen=self._time(last_seen), stopped=stopped_at is not None,
                offline_after=settings.offline_after, heartbeat_interval=interval):
            return []
        room = min(limit, cap - running)
        if room <= 0:
            return []
        cursor = conn.execute(
            """UPDATE tasks SET state = 'Executing', node = ?, instance_id = ?,
               started_at = ?, attempt = attempt + 1, exit_code = NULL
               WHERE id IN (SELECT id FROM tasks WHERE state = 'Queued' ORDER BY id LIMIT ?)
               RETURNING *""",
            (name, instance_id, self._stored_time(now), room))
        columns = [d[0] for d in cursor.description]
        claimed = [self._task(dict(zip(columns, r))) for r in cursor]
        return sorted(claimed, key=lambda t: t.id)

    def exchange(self, name: str, instance_id: str, finishes: list[Finish],
                 chunks: Iterable[LogChunk], claim_limit: int) -> tuple[list[bool], list[Task]]:
        chunks = [c for c in chunks if c.data]
        with self._write() as conn:
            owned = self._finish_in(conn, instance_id, finishes, chunks)
            claimed = self._claim_in(conn, name, instance_id, claim_limit) if claim_limit > 0 else []
        return owned, claimed

    def append_logs(self, instance_id: str, chunks: Iterable[LogChunk]) -> None:
        self.finish_tasks(instance_id, [], chunks)

    def finish_task(self, task_id: int, instance_id: str, attempt: int, state: TaskState,
                    *, exit_code: int | None = None, error: str | None = None) -> bool:
        return self.finish_tasks(instance_id, [Finish(task_id, attempt, state, exit_code, error)])[0]

    def finish_tasks(self, instance_id: str, finishes: list[Finish],
                     chunks: Iterable[LogChunk] = ()) -> list[bool]:
        chunks = [c for c in chunks if c.data]
        if not chunks and not finishes:
            return []
        with self._write() as conn:
            return self._finish_in(conn, instance_id, finishes, chunks)

    def _finish_in(self, conn: sqlite3.Connection, instance_id: str, finishes: list[Finish],
                   chunks: list[LogChunk]) -> list[bool]:
        for chunk in chunks:
            conn.execute(
                f"""INSERT INTO task_logs (task_id, seq, data)
                    SELECT t.id, (SELECT coalesce(max(seq), 0) + 1 FROM task_logs
                                  WHERE task_id = t.id), ?
                    FROM tasks t WHERE t.id = ? AND t.instance_id = ? AND t.attempt = ?
                    AND t.state IN {ACTIVE_SQL}""",
                (chunk.data, chunk.task_id, instance_id, chunk.attempt))
        if not finishes:
            return []
        # One statement for every end.
        values = ", ".join(["(?, ?, ?, ?, ?)"] * len(finishes))
        args: list = []
        for f in finishes:
            args += [f.task_id, f.attempt, TaskState(f.state).value, f.exit_code, f.error]
        args += [self._stored_time(self.now()), instance_id]
        ended = {row[0] for row in conn.execute(
            f"""WITH f(id, attempt, state, exit_code, error) AS (VALUES {values})
                UPDATE tasks SET state = f.state, exit_code = f.exit_code, error = f.error,
                    finished_at = ?
                FROM f WHERE tasks.id = f.id AND tasks.attempt = f.attempt
                AND tasks.instance_id = ? AND tasks.state IN {ACTIVE_SQL}
                RETURNING tasks.id""", args)}
        return [f.task_id in ended for f in finishes]

    def reap(self, actor: str | None = None) -> Reaped:
        with self._reading() as cx:
            settings = self._settings_in(cx)
        now = self.now()
        ts = self._stored_time(now)
        # Read-only looks first, so a quiet cluster never takes the write lock.
        lost_where = f"""AND (n.name IS NULL OR n.instance_id IS NOT t.instance_id
            OR {_offline_sql()})"""
        lost_args = (ts, settings.offline_after)
        queue_where = """state = 'Queued' AND queued_at < ? - coalesce(queue_timeout, ?)"""
        queue_args = (ts, settings.queue_timeout)
        prune_args = (ts - settings.task_retention,)
        # A node offline without a clean stop is recorded lost once per instance.
        newly_lost = f"""stopped_at IS NULL AND instance_id IS NOT NULL
            AND lost_instance IS NOT instance_id AND {_offline_sql("nodes")}"""
        aged = (ts - settings.event_retention,)
        with self._reading() as cx:
            any_lost = cx.execute(
                f"""SELECT 1 FROM tasks t LEFT JOIN nodes n ON n.name = t.node
                    WHERE t.state IN {ACTIVE_SQL} {lost_where} LIMIT 1""", lost_args).fetchone()
            any_late = cx.execute(
                f"SELECT 1 FROM tasks WHERE {queue_where} LIMIT 1", queue_args).fetchone()
            any_old = cx.execute(
                "SELECT 1 FROM tasks WHERE finished_at < ? LIMIT 1", prune_args).fetchone()
            any_gone = cx.execute(
                f"SELECT 1 FROM nodes WHERE {newly_lost} LIMIT 1", lost_args).fetchone()
            any_aged = cx.execute(
                "SELECT 1 FROM events WHERE at < ? LIMIT 1", aged).fetchone()
        if not (any_lost or any_late or any_old or any_gone or any_aged):
            return Reaped()
        with self._write() as conn:
            for name, last_seen, instance in conn.execute(
                    f"""UPDATE nodes SET lost_instance = instance_id WHERE {newly_lost}
                        RETURNING name, last_seen, instance_id""", lost_args).fetchall():
                self._event(conn, Change(actor or audit.default_actor()), Action.NODE_LOST, name,
                            node=name, details={"instance": instance,
                                                "last_seen": common.when(self._time(last_seen))})
            conn.execute("DELETE FROM events WHERE at < ?", aged)
            lost, requeued = self._end_lost(conn, now, lost_where, lost_args)
            timed_out = []
            for task_id, queue_timeout in conn.execute(
                    f"SELECT id, queue_timeout FROM tasks WHERE {queue_where}", queue_args).fetchall():
                conn.execute(
                    """UPDATE tasks SET state = 'TimedOut', finished_at = ?, error = ?
                       WHERE id = ?""",
                    (ts, common.queue_timeout_error(queue_timeout or settings.queue_timeout), task_id))
                timed_out.append(task_id)
            conn.execute(
                """DELETE FROM task_logs WHERE task_id IN
                   (SELECT id FROM tasks WHERE finished_at < ?)""", prune_args)
            pruned = conn.execute("DELETE FROM tasks WHERE finished_at < ?", prune_args).rowcount
        return Reaped(lost=lost, requeued=requeued, queue_timed_out=timed_out, pruned=pruned)


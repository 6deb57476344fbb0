"""The task statements PostgreSQL runs its own way: adding tasks, and what
a node sends: output, ends and a claim, each a call of the schema's
`octonodes_exchange` function (one statement, one transaction), and reap,
whose row locks skip what another node is writing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Iterable

from .. import audit
from ..audit import Action, Change
from ..models import Task, TaskState
from . import common
from .postgres_schema import SECONDS
from .records import Finish, LogChunk, Reaped, TaskSpec
from .sql import ACTIVE_SQL, TASK_COLUMNS, SqlStore

OFFLINE_SQL = common.offline_sql("%s", "%s", greatest="greatest", seconds=SECONDS)
"""The offline rule for node row `n` (arguments: now, offline_after)."""

NEWLY_LOST_SQL = f"""n.stopped_at IS NULL AND n.instance_id IS NOT NULL
    AND n.lost_instance IS DISTINCT FROM n.instance_id AND {OFFLINE_SQL}"""
"""A node offline without a clean stop, not yet recorded lost (arguments: now, offline_after)."""

EXCHANGE_SQL = """SELECT * FROM octonodes_exchange(%s, %s, %s,
    %s::bigint[], %s::integer[], %s::text[], %s::integer[], %s::text[],
    %s::bigint[], %s::integer[], %s::bytea[], %s, %s)"""
"""What a busy node sends after each batch of ends: one statement, one round
trip, one transaction (`postgres_schema` says what it does)."""


def _int_array(values: Iterable[int | None]) -> str:
    """An array literal for a `%s::integer[]` (or `bigint[]`) parameter: a
    node sends several with each batch, and psycopg's list dumpers cost it
    more CPU than this join (docs/performance.md)."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def _text_array(values: Iterable[str | None]) -> str:
    """An array literal for a `%s::text[]` parameter, any text quoted."""
    return "{" + ",".join(
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values) + "}"


class PostgresTasks(SqlStore):
    """Tasks on PostgreSQL; `postgres.PostgresStore` is the rest."""

    _cursor: Callable[[], Any]
    """A cursor for statements that stand alone (autocommit)."""
    _ends_channel: str
    """Where the exchange announces ends, for waiters (`postgres_listen.TASK_ENDS`)."""

    def add_tasks(self, specs: Iterable[TaskSpec], change: Change | None = None) -> list[Task]:
        specs = list(specs)
        if not specs:
            return []
        with self._write() as cur:
            now = self._now_arg()  # one queued_at for the batch, as in one transaction
            cur.executemany(
                f"""INSERT INTO tasks (name, command, state, queued_at, timeout,
                    queue_timeout, retries, attempt)
                    VALUES (%s, %s, 'Queued', {self.NOW}, %s, %s, %s, 0)
                    RETURNING {TASK_COLUMNS}""",
                [(spec.name or common.default_task_name(spec.command), list(spec.command),
                  now, spec.timeout, spec.queue_timeout, spec.retries) for spec in specs],
                returning=True)
            added = []
            while True:  # one result per row, in order
                added.append(self._task(cur.fetchone()))
                if not cur.nextset():
                    break
            self._event(cur, change or audit.change(None), **common.added_event(added))
            return added

    def claim(self, name: str, instance_id: str, limit: int) -> list[Task]:
        if limit <= 0:
            return []
        with self._cursor() as cur:
            # A cheap look first: an idle node must not lock its row every
            # time someone commits.
            cur.execute("SELECT 1 FROM tasks WHERE state = 'Queued' ORDER BY id LIMIT 1")
            if cur.fetchone() is None:
                return []
        return self._exchange(name, instance_id, [], {}, limit)[1]

    def append_logs(self, instance_id: str, chunks: Iterable[LogChunk]) -> None:
        self.finish_tasks(instance_id, [], chunks)

    @staticmethod
    def _log_rows(chunks: Iterable[LogChunk]) -> list[LogChunk]:
        """The chunks that hold output; the server numbers each task's in
        the order they come."""
        return [chunk for chunk in chunks if chunk.data]

    def finish_task(self, task_id: int, instance_id: str, attempt: int, state: TaskState,
                    *, exit_code: int | None = None, error: str | None = None) -> bool:
        return self.finish_tasks(instance_id, [Finish(task_id, attempt, state, exit_code, error)])[0]

    def finish_tasks(self, instance_id: str, finishes: list[Finish],
                     chunks: Iterable[LogChunk] = ()) -> list[bool]:
        rows = self._log_rows(chunks)
        if not rows and not finishes:
            return []
        return self._exchange(None, instance_id, finishes, rows, 0)[0]

    def exchange(self, name: str, instance_id: str, finishes: list[Finish],
                 chunks: Iterable[LogChunk], claim_limit: int) -> tuple[list[bool], list[Task]]:
        return self._exchange(name, instance_id, finishes, self._log_rows(chunks), claim_limit)

    def _exchange(self, name: str | None, instance_id: str, finishes: list[Finish],
                  chunks: list[LogChunk], claim_limit: int) -> tuple[list[bool], list[Task]]:
        """Output, then ends, then (with a `claim_limit`) a claim: one
        statement, so one transaction. A lost answer did all of it or none,
        so a retry never duplicates output."""
        with self._cursor() as cur:
            cur.execute(EXCHANGE_SQL, (
                name, instance_id, self._now_arg(),
                _int_array(f.task_id for f in finishes), _int_array(f.attempt for f in finishes),
                _text_array(TaskState(f.state).value for f in finishes),
                _int_array(f.exit_code for f in finishes), _text_array(f.error for f in finishes),
                _int_array(c.task_id for c in chunks), _int_array(c.attempt for c in chunks),
                [bytes(c.data) for c in chunks] if chunks else "{}",
                claim_limit, self._ends_channel))
            rows = cur.fetchall()
        owned = {row["id"] for row in rows if row["ended"]}
        tasks = sorted((self._task(row) for row in rows if not row["ended"]), key=lambda t: t.id)
        return [f.task_id in owned for f in finishes], tasks

    def reap(self, actor: str | None = None) -> Reaped:
        lost_where = f"""AND (n.name IS NULL OR n.instance_id IS DISTINCT FROM t.instance_id
            OR {OFFLINE_SQL})"""
        queue_where = """state = 'Queued'
            AND queued_at < %s - coalesce(queue_timeout, %s) * interval '1 second'"""
        with self._cursor() as cur:
            settings, now = self._settings_and_now(cur)
            lost_args = (now, settings.offline_after)
            queue_args = (now, settings.queue_timeout)
            prune_before = now - timedelta(seconds=settings.task_retention)
            aged_before = now - timedelta(seconds=settings.event_retention)
            # Read-only looks first, so a quiet cluster locks nothing.
            cur.execute(
                f"""SELECT
                    EXISTS (SELECT 1 FROM tasks t LEFT JOIN nodes n ON n.name = t.node
                            WHERE t.state IN {ACTIVE_SQL} {lost_where}) AS lost,
                    EXISTS (SELECT 1 FROM tasks WHERE {queue_where}) AS late,
                    EXISTS (SELECT 1 FROM tasks WHERE finished_at < %s) AS old,
                    EXISTS (SELECT 1 FROM nodes n WHERE {NEWLY_LOST_SQL}) AS gone,
                    EXISTS (SELECT 1 FROM events WHERE at < %s) AS aged""",
                lost_args + queue_args + (prune_before,) + lost_args + (aged_before,))
            looks = cur.fetchone()
        if not any(looks.values()):
            return Reaped()
        with self._write() as cur:
            # A node offline without a clean stop is recorded lost once per instance.
            cur.execute(
                f"""UPDATE nodes SET lost_instance = instance_id WHERE name IN (
                        SELECT n.name FROM nodes n WHERE {NEWLY_LOST_SQL}
                        FOR UPDATE SKIP LOCKED)
                    RETURNING name, last_seen, instance_id""", lost_args)
            for row in cur.fetchall():
                self._event(cur, Change(actor or audit.default_actor()), Action.NODE_LOST,
                            row["name"], node=row["name"],
                            details={"instance": row["instance_id"],
                                     "last_seen": common.when(self._time(row["last_seen"]))})
            cur.execute("DELETE FROM events WHERE at < %s", (aged_before,))
            lost, requeued = self._end_lost(cur, now, lost_where, lost_args, skip_locked=True)
            cur.execute(f"SELECT id, queue_timeout FROM tasks WHERE {queue_where} "
                        "ORDER BY id FOR UPDATE SKIP LOCKED", queue_args)
            late = cur.fetchall()
            if late:
                cur.executemany(
                    """UPDATE tasks SET state = 'TimedOut', finished_at = %s, error = %s
                       WHERE id = %s""",
                    [(now, common.queue_timeout_error(r["queue_timeout"] or settings.queue_timeout),
                      r["id"]) for r in late])
            timed_out = [r["id"] for r in late]
            cur.execute(
                """DELETE FROM tasks WHERE id IN (
                       SELECT id FROM tasks WHERE finished_at < %s ORDER BY id
                       FOR UPDATE SKIP LOCKED)
                   RETURNING id""", (prune_before,))
            pruned_ids = [r["id"] for r in cur.fetchall()]
            if pruned_ids:
                cur.execute("DELETE FROM task_logs WHERE task_id = ANY(%s)", (pruned_ids,))
            if lost or requeued or timed_out:
                self._notify(cur, "reap")
        return Reaped(lost=lost, requeued=requeued, queue_timed_out=timed_out,
                      pruned=len(pruned_ids))


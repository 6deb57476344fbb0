"""The audit trail's SQL, shared by both backends (they differ only in
placeholders and in how times and JSON are stored).

An event row: id, at, actor, action, target, node (the node it concerns),
task_first and task_last (the task, or the ids of a batch: a batch whose ids
are not one run, which PostgreSQL may hand out when batches interleave,
also lists its runs in `details["task_ranges"]`), details (JSON), reason.
Events are only ever inserted here, and deleted only when they age out.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Iterable

from ..audit import Action, Change, Event, EventFilter

COLUMNS = "id, at, actor, action, target, node, task_first, task_last, details, reason"


def runs(ids: Iterable[int]) -> list[list[int]]:
    """[[first, last], ...]: the runs of consecutive ids, in order."""
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def insert(ph: str, at: Any, change: Change, action: Action, target: str, *,
           node: str | None = None, task_ids: Iterable[int] = (),
           details: dict | None = None, at_sql: str | None = None) -> tuple[str, tuple]:
    """The statement and its arguments that record one event; `at_sql`, an
    expression of one placeholder, computes the time from `at`."""
    doc = dict(details or {})
    spans = runs(task_ids)
    first = spans[0][0] if spans else None
    last = spans[-1][1] if spans else None
    if len(spans) > 1:
        doc["task_ranges"] = spans
    sql = (f"INSERT INTO events (at, actor, action, target, node, task_first, task_last, "
           f"details, reason) VALUES ({at_sql or ph}, {', '.join([ph] * 8)})")
    return sql, (at, change.actor, str(action), target, node, first, last,
                 json.dumps(doc, default=str), change.reason)


def _where(ph: str, where: EventFilter, at: Callable[[datetime], Any],
           contains: str) -> tuple[str, list]:
    clauses, args = [], []
    if where.node is not None:
        clauses.append(f"node = {ph}")
        args.append(where.node)
    if where.task is not None:
        clauses.append(f"task_first <= {ph} AND task_last >= {ph}")
        args += [where.task, where.task]
    if where.actions:
        clauses.append(f"action IN ({', '.join([ph] * len(where.actions))})")
        args += [str(a) for a in where.actions]
    if where.actor:
        clauses.append(contains)
        args += [where.actor]
    for clause, value in ((f"at >= {ph}", where.since), (f"at <= {ph}", where.until)):
        if value is not None:
            clauses.append(clause)
            args.append(at(value))
    for clause, value in ((f"id > {ph}", where.after_id), (f"id < {ph}", where.before_id)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def select(ph: str, where: EventFilter, at: Callable[[datetime], Any],
           contains: str) -> tuple[str, tuple]:
    """The query for `where`, newest first. `contains` is the backend's
    case-insensitive substring test, with two placeholders."""
    clauses, args = _where(ph, where, at, contains)
    sql = f"SELECT {COLUMNS} FROM events{clauses} ORDER BY id DESC"
    # A task's batch may be a range with holes: those are sorted out after
    # the query, so the limit too.
    if where.limit is not None and where.task is None:
        sql += f" LIMIT {ph} OFFSET {ph}"
        args += [where.limit, where.offset]
    return sql, tuple(args)


def count(ph: str, where: EventFilter, at: Callable[[datetime], Any],
          contains: str) -> tuple[str, tuple]:
    """The query that counts what `select` selects (without its limit; for a
    task, batches with holes included: `keep` sorts those out)."""
    clauses, args = _where(ph, where, at, contains)
    return f"SELECT count(*) AS n FROM events{clauses}", tuple(args)


def event(row: dict, at: datetime) -> Event:
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    first, last = row["task_first"], row["task_last"]
    return Event(id=row["id"], at=at, actor=row["actor"], action=Action(row["action"]),
                 target=row["target"], node=row["node"], task_first=first, task_last=last,
                 details=details, reason=row["reason"])


def keep(events: list[Event], where: EventFilter) -> list[Event]:
    """What the query could not decide: a batch with holes, and its limit."""
    if where.task is None:
        return events
    kept = [e for e in events if e.concerns_task(where.task)][where.offset:]
    return kept[:where.limit] if where.limit is not None else kept

"""The embedded default: one SQLite file shared by every process on one host.

WAL mode and a busy timeout are set where the connection opens; every write
transaction starts with `BEGIN IMMEDIATE`, so it waits (up to the busy
timeout) for the write lock at its start instead of failing half-way.
Readers open the file without creating it. Not safe on a network file
system: use PostgreSQL for nodes on several hosts.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import quote

from .. import audit
from ..audit import Action, Change, node_actor
from ..errors import DatabaseBusy, DatabaseError, DatabaseMissing, DatabaseReplaced
from ..models import Task, TaskState, is_offline, make_node
from ..settings import DEFAULT_TASK_CAP, ClusterSettings
from . import audit_sql, common
from .base import (CheckIn, Clock, Finish, LogChunk, Reaped, Registered, Registration,
                   TaskSpec)
from .sql import ACTIVE_SQL, RUNNING_COUNT_SQL, SqlStore
from .sqlite_schema import SCHEMA_VERSION, migrate

DEFAULT_BUSY_TIMEOUT = 10.0


def _offline_sql(n: str = "n") -> str:
    """The offline rule for row `n` (arguments: now, offline_after)."""
    return common.offline_sql("?", "?", greatest="max", seconds="", n=n)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _make_folders(folder: Path) -> None:
    """`folder` and every missing folder above it, owner-only (`mkdir`'s
    `parents` would give those above the umask's mode)."""
    if folder.is_dir():
        return
    _make_folders(folder.parent)
    folder.mkdir(mode=0o700, exist_ok=True)


class SQLiteStore(SqlStore):
    kind = "sqlite"
    P = "?"
    NOW = "?"
    SECONDS = ""
    FOR_UPDATE = ""  # a write transaction holds the whole database
    NAME_LIKE = "name LIKE ? ESCAPE '\\'"
    CONTAINS = "instr(lower({}), lower(?)) > 0"

    def __init__(self, path: str, *, create: bool = False, clock: Clock | None = None,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path).expanduser()
        self.display = str(self.path.absolute())
        self._clock = clock or _utc_now
        exists = self.path.exists()
        if not exists and not create:
            raise DatabaseMissing(
                f"no database at {self.display}; create one with `octonodes init` "
                "(or point --db / OCTONODES_DB at an existing one)"
            )
        if not exists:
            self._create_file()
        elif create and self._empty():
            self._own_empty_file()
        self.created = not exists  # a new file (else an existing one, empty or not)
        if self.path.is_file() and not os.access(self.path, os.R_OK | os.W_OK):
            # In WAL mode even a reader writes the -shm index: a file we may
            # not write would only leave stray side files behind.
            raise DatabaseError(
                f"cannot use the database {self.display}: it must be readable and writable "
                "by this user (check its owner and mode)")
        self.conn = self._connect(busy_timeout)
        self._identity = self._file_identity()
        self._data_version: int | None = None
        self._watch = None
        try:
            if not create:
                # Read-only first: a file that is not ours (or out of date) is
                # left exactly as it was, not switched to WAL.
                self.check_schema()
            elif exists:
                self._read_meta()  # DatabaseError for a file that is not ours
            self._use_wal()
        except BaseException:
            self.conn.close()
            raise

    # -- opening ------------------------------------------------------------

    def _create_file(self) -> None:
        try:
            _make_folders(self.path.parent)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseError(f"cannot create a database at {self.display}: {exc.strerror}") from None

    def _empty(self) -> bool:
        try:
            return self.path.is_file() and self.path.stat().st_size == 0
        except OSError:
            return False

    def _own_empty_file(self) -> None:
        """An empty file (made by `touch`, or by a tool that reserves the
        name) becomes the database: owner-only, as a new one would be."""
        try:
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot use the empty file {self.display} as a database: "
                                f"{exc.strerror}") from None

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path))}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = %d" % int(busy_timeout * 1000))
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        return conn

    def _use_wal(self) -> None:
        with self._errors():
            if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.conn.execute("PRAGMA journal_mode = WAL")

    def _read_meta(self) -> dict[str, str] | None:
        with self._errors():
            tables = {r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                if tables:
                    raise DatabaseError(f"{self.display} is not an octonodes database")
                return None
            return dict(self.conn.execute("SELECT key, value FROM meta"))

    def schema_version(self) -> int | None:
        meta = self._read_meta()
        return int(meta.get("schema_version", 0)) if meta is not None else None

    def check_schema(self) -> None:
        common.check_schema_version(
            self._read_meta(), SCHEMA_VERSION,
            f"{self.display} has no octonodes schema yet; run `octonodes init`")

    # -- plumbing -----------------------------------------------------------

    def _translate(self, exc: sqlite3.Error) -> DatabaseError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return DatabaseBusy(f"the database {self.display} stayed locked; try again ({text})")
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return DatabaseError(f"{self.display} is not an octonodes database ({text})")
        if "readonly" in text or "read-only" in text:
            return DatabaseError(f"cannot write the database {self.display}: {text}")
        if "unable to open" in text:
            return DatabaseError(f"cannot open the database {self.display}: {text} "
                                 "(check the path and its permissions)")
        return DatabaseError(f"database {self.display}: {text}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at its start."""
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several statements see one snapshot."""
        with self._errors():
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                self.conn.execute("COMMIT")

    def _event(self, conn: sqlite3.Connection, change: Change, action: Action, target: str,
               **fields) -> None:
        """Record a change in the caller's transaction: both or neither."""
        conn.execute(*audit_sql.insert("?", _ts(self.now()), change, action, target, **fields))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            yield self.conn

    def _rows(self, cx: sqlite3.Connection, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        cursor = cx.execute(sql, args)
        cursor.row_factory = sqlite3.Row
        return cursor.fetchall()

    def _now_arg(self) -> float:
        return _ts(self.now())

    _stored_time = staticmethod(_ts)
    _time = staticmethod(_dt)
    _command = staticmethod(json.loads)

    def now(self) -> datetime:
        return self._clock()

    def close(self) -> None:
        if self._watch:
            self._watch.close()
        self.conn.close()

    def reopen(self) -> "SQLiteStore":
        return SQLiteStore(str(self.path), clock=self._clock)

    def set_lock_wait(self, seconds: float) -> None:
        with self._errors():
            self.conn.execute("PRAGMA busy_timeout = %d" % int(seconds * 1000))

    def change_fd(self) -> int | None:
        """inotify on the database's folder: every commit writes the WAL file."""
        if self._watch is None:
            from .sqlite_watch import WalWatch

            self._watch = WalWatch.create(self.path)
        return self._watch.fileno() if self._watch else None

    def changed(self) -> bool:
        if self._watch:
            self._watch.clear()
        with self._errors():
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    def initialize(self) -> tuple[int | None, int]:
        with self._write() as conn:
            meta = self._read_meta()
            before = int(meta["schema_version"]) if meta else None
            if before is not None and before >= SCHEMA_VERSION:
                self.check_schema()
                return before, before
            after = migrate(conn, before)
        return before, after

    # -- nodes --------------------------------------------------------------

    def register(self, reg: Registration) -> Registered:
        with self._write() as conn:
            settings = self._settings_in(conn)
            now = self.now()
            existing = self._select_nodes(conn, "WHERE n.name = ?", (reg.name,))
            took_over = None
            ended: list[int] = []
            if existing:
                row, running = existing[0]
                node = make_node(row, now=now, running=running, offline_after=settings.offline_after)
                took_over = common.take_over(node, reg.instance_id, reg.host, reg.holder_gone)
                failed, requeued = self._end_lost(
                    conn, now, "AND t.node = ? AND t.instance_id IS NOT ?",
                    (reg.name, reg.instance_id))
                ended = failed + requeued
                cap = reg.task_cap if reg.task_cap is not None else row["task_cap"]
                conn.execute(
                    """UPDATE nodes SET task_cap = ?, shutting_down = 0, last_seen = ?,
                       started_at = ?, stopped_at = NULL, version = ?, host = ?, pid = ?,
                       http_address = ?, heartbeat_interval = ?, instance_id = ?
                       WHERE name = ?""",
                    (cap, _ts(now), _ts(now), reg.version, reg.host, reg.pid, reg.http_address,
                     reg.heartbeat_interval, reg.instance_id, reg.name),
                )
            else:
                cap = reg.task_cap if reg.task_cap is not None else DEFAULT_TASK_CAP
                conn.execute(
                    """INSERT INTO nodes (name, task_cap, drain, shutting_down, last_seen,
                       started_at, stopped_at, version, host, pid, http_address,
                       heartbeat_interval, instance_id)
                       VALUES (?, ?, 0, 0, ?, ?, NULL, ?, ?, ?, ?, ?, ?)""",
                    (reg.name, cap, _ts(now), _ts(now), reg.version, reg.host, reg.pid,
                     reg.http_address, reg.heartbeat_interval, reg.instance_id),
                )
            node = self._one_node(conn, reg.name, settings)
            self._event(conn, Change(node_actor(reg.name)),
                        **common.registered_event(node, reg, took_over, ended))
        return Registered(node=node, settings=settings, took_over=took_over, ended_tasks=ended)

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def check_in(self, name: str, instance_id: str, *, shutting_down: bool,
                 heartbeat_interval: float) -> CheckIn | None:
        # The open file must still be the one at the path: a node that kept
        # checking in to a deleted (or replaced) file would look alive to
        # itself and be lost, or absent, to everyone else.
        if self._file_identity() != self._identity:
            raise DatabaseReplaced(
                f"the database file {self.display} was deleted or replaced while this process "
                "had it open; restart the node to use the file now at that path")
        return super().check_in(name, instance_id, shutting_down=shutting_down,
                                heartbeat_interval=heartbeat_interval)

    # -- tasks --------------------------------------------------------------

    def add_tasks(self, specs: Iterable[TaskSpec], change: Change | None = None) -> list[Task]:
        specs = list(specs)
        if not specs:
            return []
        with self._write() as conn:
            now = _ts(self.now())
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
        with self._errors():
            return self.conn.execute(
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
                now=now, last_seen=_dt(last_seen), stopped=stopped_at is not None,
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
            (name, instance_id, _ts(now), room))
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
        args += [_ts(self.now()), instance_id]
        ended = {row[0] for row in conn.execute(
            f"""WITH f(id, attempt, state, exit_code, error) AS (VALUES {values})
                UPDATE tasks SET state = f.state, exit_code = f.exit_code, error = f.error,
                    finished_at = ?
                FROM f WHERE tasks.id = f.id AND tasks.attempt = f.attempt
                AND tasks.instance_id = ? AND tasks.state IN {ACTIVE_SQL}
                RETURNING tasks.id""", args)}
        return [f.task_id in ended for f in finishes]

    def reap(self, actor: str | None = None) -> Reaped:
        with self._errors():
            settings = self._settings_in(self.conn)
        now = self.now()
        ts = _ts(now)
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
        with self._errors():
            any_lost = self.conn.execute(
                f"""SELECT 1 FROM tasks t LEFT JOIN nodes n ON n.name = t.node
                    WHERE t.state IN {ACTIVE_SQL} {lost_where} LIMIT 1""", lost_args).fetchone()
            any_late = self.conn.execute(
                f"SELECT 1 FROM tasks WHERE {queue_where} LIMIT 1", queue_args).fetchone()
            any_old = self.conn.execute(
                "SELECT 1 FROM tasks WHERE finished_at < ? LIMIT 1", prune_args).fetchone()
            any_gone = self.conn.execute(
                f"SELECT 1 FROM nodes WHERE {newly_lost} LIMIT 1", lost_args).fetchone()
            any_aged = self.conn.execute(
                "SELECT 1 FROM events WHERE at < ? LIMIT 1", aged).fetchone()
        if not (any_lost or any_late or any_old or any_gone or any_aged):
            return Reaped()
        with self._write() as conn:
            for name, last_seen, instance in conn.execute(
                    f"""UPDATE nodes SET lost_instance = instance_id WHERE {newly_lost}
                        RETURNING name, last_seen, instance_id""", lost_args).fetchall():
                self._event(conn, Change(actor or audit.default_actor()), Action.NODE_LOST, name,
                            node=name, details={"instance": instance,
                                                "last_seen": common.when(_dt(last_seen))})
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


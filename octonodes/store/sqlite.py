"""The embedded default: one SQLite file shared by every process on one host.

WAL mode and a busy timeout are set where the connection opens; every write
transaction starts with `BEGIN IMMEDIATE`, so it waits (up to the busy
timeout) for the write lock at its start instead of failing half-way.
Readers open the file without creating it. Not safe on a network file
system: use PostgreSQL for nodes on several hosts.

`sqlite_connect` opens the file and translates errors; `sqlite_tasks` holds
the task statements (the claim, the exchange, reap); this module the rest:
the schema, plumbing, change detection and registration.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

from ..audit import Action, Change, node_actor
from ..errors import DatabaseError, DatabaseReplaced
from ..models import make_node
from ..settings import DEFAULT_TASK_CAP
from . import audit_sql, common
from .base import Clock
from .records import CheckIn, Registered, Registration
from .sqlite_connect import DEFAULT_BUSY_TIMEOUT, Connection, prepare_file
from .sqlite_schema import SCHEMA_VERSION, migrate
from .sqlite_tasks import SQLiteTasks


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SQLiteStore(SQLiteTasks):
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
        # A new file (else an existing one, empty or not).
        self.created = prepare_file(self.path, self.display, create=create)
        self._db = Connection(self.path, self.display, busy_timeout)
        self._data_version: int | None = None
        self._watch = None
        try:
            if not create:
                # Read-only first: a file that is not ours (or out of date) is
                # left exactly as it was, not switched to WAL.
                self.check_schema()
            elif not self.created:
                self._read_meta()  # DatabaseError for a file that is not ours
            self._db.use_wal()
        except BaseException:
            self._db.close()
            raise

    # -- the schema -----------------------------------------------------------

    def _read_meta(self) -> dict[str, str] | None:
        with self._db.errors():
            tables = {r[0] for r in self._db.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                if tables:
                    raise DatabaseError(f"{self.display} is not an octonodes database")
                return None
            return dict(self._db.conn.execute("SELECT key, value FROM meta"))

    def schema_version(self) -> int | None:
        meta = self._read_meta()
        return int(meta.get("schema_version", 0)) if meta is not None else None

    def check_schema(self) -> None:
        common.check_schema_version(
            self._read_meta(), SCHEMA_VERSION,
            f"{self.display} has no octonodes schema yet; run `octonodes init`")

    # -- plumbing -----------------------------------------------------------

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction that takes the write lock at its start."""
        return self._db.transaction("BEGIN IMMEDIATE")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction: several statements see one snapshot."""
        return self._db.transaction("BEGIN")

    def _event(self, conn: sqlite3.Connection, change: Change, action: Action, target: str,
               **fields) -> None:
        """Record a change in the caller's transaction: both or neither."""
        conn.execute(*audit_sql.insert("?", _ts(self.now()), change, action, target, **fields))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._db.errors():
            yield self._db.conn

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
        self._db.close()

    def reopen(self) -> "SQLiteStore":
        return SQLiteStore(str(self.path), clock=self._clock)

    def set_lock_wait(self, seconds: float) -> None:
        self._db.set_busy_timeout(seconds)

    def change_fd(self) -> int | None:
        """inotify on the database's folder: every commit writes the WAL file."""
        if self._watch is None:
            from .sqlite_watch import WalWatch

            self._watch = WalWatch.create(self.path)
        return self._watch.fileno() if self._watch else None

    def changed(self) -> bool:
        if self._watch:
            self._watch.clear()
        with self._db.errors():
            version = self._db.conn.execute("PRAGMA data_version").fetchone()[0]
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
            settings, now = self._settings_and_now(conn)
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
            node = self._one_node(conn, reg.name, settings, now)
            self._event(conn, Change(node_actor(reg.name)),
                        **common.registered_event(node, reg, took_over, ended))
        return Registered(node=node, settings=settings, took_over=took_over, ended_tasks=ended)

    def check_in(self, name: str, instance_id: str, *, shutting_down: bool,
                 heartbeat_interval: float) -> CheckIn | None:
        # The open file must still be the one at the path: a node that kept
        # checking in to a deleted (or replaced) file would look alive to
        # itself and be lost, or absent, to everyone else.
        if self._db.replaced():
            raise DatabaseReplaced(
                f"the database file {self.display} was deleted or replaced while this process "
                "had it open; restart the node to use the file now at that path")
        return super().check_in(name, instance_id, shutting_down=shutting_down,
                                heartbeat_interval=heartbeat_interval)

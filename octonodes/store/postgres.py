"""PostgreSQL, for nodes on several hosts sharing one server (SPEC 8).

Same behaviour as the SQLite store, with the server doing what SQLite's
single write lock did there:

- Claims take queued tasks with `FOR UPDATE SKIP LOCKED`, oldest first, after
  locking the claiming node's row, so drain, cap and liveness are read inside
  the claim and two claims by one node cannot together pass its cap.
- Times are `timestamptz` from the server's clock (`now()`), so hosts with
  skewed clocks agree; a clock injected by a test replaces it everywhere.
- Writes that a node or a waiting command must react to send `pg_notify` on a
  channel named after the schema. A thread LISTENs on a second connection
  (opened on first use) and wakes a pipe: `change_fd()` is its read end, the
  same for the store's life, `changed()` consumes it.
- A lost connection fails the call with DatabaseError; the next call
  reconnects, and `changed()` then says True once for what may have been
  missed (and True on every call while the listener is cut off).

Everything lives in `current_schema()`: a URL such as
`postgresql://u@host/db?options=-csearch_path%3Dcluster_a` keeps a cluster (or
a test) in its own schema, which `initialize()` creates when it is missing.
"""

from __future__ import annotations

import hashlib
import os
import select
import threading
import weakref
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..errors import DatabaseBusy, DatabaseError, NotFound, Refused, SchemaMismatch, UsageError
from ..models import Node, Task, TaskState, make_node, offline_threshold
from ..settings import DEFAULT_TASK_CAP, ClusterSettings, validate_setting
from . import common
from .base import (SCHEMA_VERSION, ApiKey, CheckIn, Clock, LogChunk, QueueSummary, Reaped,
                   Registered, Registration, Store, TaskSpec)
from .postgres_schema import TABLES

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - the `postgres` extra is not installed
    psycopg = None

ACTIVE_SQL = "('Executing', 'Cancelling')"
NODE_COLUMNS = """n.name, n.task_cap, n.drain, n.shutting_down, n.last_seen, n.started_at,
    n.stopped_at, n.version, n.host, n.pid, n.http_address, n.heartbeat_interval, n.instance_id"""
_TASK_FIELDS = ("id", "name", "command", "state", "node", "instance_id", "queued_at",
                "started_at", "finished_at", "exit_code", "error", "timeout", "queue_timeout",
                "retries", "attempt")
TASK_COLUMNS = ", ".join(_TASK_FIELDS)
CLAIMED_COLUMNS = ", ".join(f"tasks.{f}" for f in _TASK_FIELDS)
RUNNING_COUNT_SQL = (
    f"(SELECT count(*) FROM tasks t WHERE t.node = n.name AND t.state IN {ACTIVE_SQL})::int"
)
SETTINGS_SQL = "coalesce((SELECT json_object_agg(key, value) FROM settings), '{}'::json)"
NOW_SQL = "coalesce(%s::timestamptz, now())"
"""The injected clock's time when a test gave one (a parameter), else the server's."""

CONNECT_DEFAULTS = {
    # A node must notice a dead server or a cut network well within
    # offline_after, not after the kernel's two-hour keepalive default.
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "octonodes",
}
MAX_IDENTIFIER = 63
DEFAULT_LOCK_WAIT = 10.0
"""How long a statement waits for another's row lock before DatabaseBusy,
like SQLite's busy timeout; a node sets a shorter one (`set_lock_wait`)."""
LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.5, 5.0
"""Back-off of the LISTEN thread while the server cannot be reached."""


def redact(url: str) -> str:
    """The URL without its password, for messages and `display`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        netloc = userinfo.split(":", 1)[0] + "@" + hosts
    query = "&".join(p for p in parts.query.split("&")
                     if p and not p.lower().startswith("password="))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _first_schema(search_path: str) -> str | None:
    """The first schema a `search_path` setting names, read as the server
    reads it (quoted names as they are, others lower-cased), skipping `$user`
    and the system schemas."""
    for entry in search_path.split(","):
        entry = entry.strip()
        if len(entry) > 1 and entry[0] == entry[-1] == '"':
            entry = entry[1:-1].replace('""', '"')
        else:
            entry = entry.lower()
        if entry and entry != "$user" and entry != "pg_catalog" and not entry.startswith("pg_temp"):
            return entry
    return None


def _channel_for(schema: str) -> str:
    """A LISTEN channel per schema; identifiers stop at 63 bytes, so a long
    schema name is replaced by its hash."""
    channel = f"octonodes_{schema}"
    if len(channel.encode()) > MAX_IDENTIFIER:
        channel = "octonodes_" + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return channel


def _one_line(exc: BaseException) -> str:
    """libpq's message on one line: no hint lines, no `connection failed:` prefix."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.startswith(("\t", " "))]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if len(lines) > 1 and lines[0].endswith("All failures were:") else lines[0]
    line = line.lstrip("- ")
    for prefix in ("connection failed: ", "connection is bad: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    return " ".join(line.split())


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except OSError:
        pass  # full: already awake


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


class _Listener:
    """LISTENs on its own connection in a daemon thread and wakes a pipe.

    It holds no reference to the store, so a store dropped without `close()`
    is still collected, and its finalizer stops this thread and its connection.
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo, self.channel = conninfo, channel
        self.own_pid: int | None = None  # the store's statement backend: its own writes
        self._lock = threading.Lock()
        self._pending = True  # the first changed() says True, as SQLite's does
        self._listening = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None
        self._stop: tuple[int, int] | None = None

    def fileno(self) -> int | None:
        """The pipe's read end, the same for the listener's life; starts the thread."""
        with self._lock:
            if self._closed:
                return None
            if self._thread is None:
                self._wake, self._stop = _pipe(), _pipe()
                self._thread = threading.Thread(target=self._run, name="octonodes-listen",
                                                daemon=True)
                self._thread.start()
            return self._wake[0]

    def signal(self) -> None:
        """Someone may have committed: remember it and wake whoever waits."""
        with self._lock:
            self._pending = True
            if self._wake is not None:
                _poke(self._wake[1])

    def changed(self) -> bool:
        """True once per batch of signals, and on every call while cut off."""
        fd = self.fileno()
        with self._lock:
            if fd is not None and self._wake is not None:
                _drain(fd)
            changed = self._pending or not self._listening
            self._pending = False
        return changed

    def wait(self, timeout: float) -> bool:
        fd = self.fileno()
        if fd is not None and not self._pending and timeout > 0:
            try:
                select.select([fd], [], [], timeout)
            except (OSError, ValueError):
                pass  # closed meanwhile
        return self.changed()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if self._stop is not None:
                _poke(self._stop[1])
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)  # it closes its pipes and connection as it ends

    def _run(self) -> None:
        try:
            self._listen_until_closed()
        finally:
            with self._lock:
                for fd in (self._wake or ()) + (self._stop or ()):
                    os.close(fd)
                self._wake = self._stop = None

    def _listen_until_closed(self) -> None:
        stop = self._stop[0]
        retry = LISTEN_RETRY_MIN
        while not self._closed:
            conn = None
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self._listening = True
                self.signal()  # whatever was sent before the LISTEN was missed
                retry = LISTEN_RETRY_MIN
                while not self._closed:
                    ready, _, _ = select.select([conn.fileno(), stop], [], [])
                    if stop in ready:
                        return
                    notes = list(conn.notifies(timeout=0))
                    if conn.closed:
                        break
                    if any(note.pid != self.own_pid for note in notes):
                        self.signal()
            except (psycopg.Error, OSError, ValueError):
                pass
            finally:
                self._listening = False
                _close_quietly(conn)
            if self._closed:
                return
            self.signal()  # cut off: look now, and poll until we are back
            if stop in select.select([stop], [], [], retry)[0]:
                return
            retry = min(2 * retry, LISTEN_RETRY_MAX)


class PostgresStore(Store):
    kind = "postgresql"

    def __init__(self, url: str, *, create: bool = False, clock: Clock | None = None) -> None:
        self.display = redact(url)
        self._url = url
        if psycopg is None:
            raise DatabaseError(
                "PostgreSQL support needs psycopg: pip install 'octonodes[postgres]'")
        self._clock = clock
        self._lock = threading.RLock()  # one statement at a time on self._conn
        self._conn: Any = None
        self._backend_pid: int | None = None
        self._lock_wait = DEFAULT_LOCK_WAIT
        self._password = ""
        self._conninfo = self._make_conninfo(url)
        self._listener: _Listener | None = None
        self._connection()
        try:
            self.schema = self._find_schema()
            self._channel = _channel_for(self.schema)
            self._listener = _Listener(self._conninfo, self._channel)
            self._listener.own_pid = self._backend_pid
            weakref.finalize(self, self._listener.close)
            if not create:
                self.check_schema()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------

    def _make_conninfo(self, url: str) -> str:
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise UsageError(f"invalid PostgreSQL URL {self.display}: {_one_line(exc)}") from None
        self._password = str(given.get("password") or "")
        defaults = dict(CONNECT_DEFAULTS)
        if psycopg.pq.version() >= 120000:  # libpq 12 knows tcp_user_timeout
            defaults["tcp_user_timeout"] = "30000"
        return make_conninfo(url, **{k: v for k, v in defaults.items() if k not in given})

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot connect to the database {self.display}: {self._scrub(_one_line(exc))}"
            ) from None

    def _find_schema(self) -> str:
        """The schema to work in: the current one, else the first named on
        search_path (which `initialize()` creates)."""
        with self._cursor() as cur:
            row = cur.execute("SELECT current_schema() AS current, "
                              "current_setting('search_path') AS path").fetchone()
        named = row["current"] or _first_schema(row["path"])
        if named is None:
            raise DatabaseError(
                f"{self.display}: search_path ({row['path']}) names no schema to keep the "
                "cluster in; add ?options=-csearch_path%3DNAME to the URL")
        return named

    def _where(self) -> str:
        return f"{self.display} (schema {self.schema})"

    def _read_meta(self, cur: Any) -> dict[str, str] | None:
        cur.execute(
            """SELECT c.relname AS name FROM pg_class c
               JOIN pg_namespace s ON s.oid = c.relnamespace
               WHERE s.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)""",
            (self.schema, list(TABLES)))
        tables = {r["name"] for r in cur.fetchall()}
        if "meta" not in tables:
            if tables:
                raise DatabaseError(
                    f"{self._where()} has tables named like octonodes' "
                    f"({', '.join(sorted(tables))}) but is not an octonodes database")
            return None
        cur.execute("SELECT key, value FROM meta")
        return {r["key"]: r["value"] for r in cur.fetchall()}

    def _meta(self) -> dict[str, str] | None:
        with self._cursor() as cur:
            return self._read_meta(cur)

    def schema_version(self) -> int | None:
        meta = self._meta()
        return int(meta.get("schema_version", 0)) if meta is not None else None

    def check_schema(self) -> None:
        self._verify(self._meta())

    def _verify(self, meta: dict[str, str] | None) -> None:
        if meta is None:
            raise SchemaMismatch(
                f"{self.display} has no octonodes schema yet (schema {self.schema}); "
                "run `octonodes init`")
        version = int(meta.get("schema_version", 0))
        if version < SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the database schema is out of date (version {version}, this octonodes "
                f"needs {SCHEMA_VERSION}); run `octonodes init` to upgrade it"
            )
        if version > SCHEMA_VERSION and int(meta.get("min_compatible", version)) > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the database schema (version {version}) is newer than this octonodes "
                f"understands ({SCHEMA_VERSION}); upgrade octonodes"
            )

    # -- plumbing -----------------------------------------------------------

    def _connection(self) -> Any:
        """The statement connection; a new one when the last was lost."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        first = self._conn is None and self._backend_pid is None
        _close_quietly(self._conn)
        self._conn = None
        conn = self._connect()
        try:
            conn.execute("SELECT set_config('lock_timeout', %s, false)",
                         (f"{int(self._lock_wait * 1000)}ms",))
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise DatabaseError(
                f"cannot connect to the database {self.display}: {self._scrub(_one_line(exc))}"
            ) from None
        self._conn, self._backend_pid = conn, conn.info.backend_pid
        if self._listener is not None:
            self._listener.own_pid = self._backend_pid
            if not first:
                self._listener.signal()  # notifications may have gone by while we were cut off
        return conn

    def _translate(self, exc: Exception) -> DatabaseError:
        text = self._scrub(_one_line(exc))
        if self._conn is None or self._conn.closed:
            return DatabaseError(f"lost the connection to the database {self.display}: {text}")
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return DatabaseBusy(f"the database {self.display} stayed locked; try again ({text})")
        if isinstance(exc, psycopg.errors.TransactionRollback):
            return DatabaseBusy(f"the database {self.display} was busy; try again ({text})")
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return SchemaMismatch(f"{self._where()}: {text}; run `octonodes init`")
        return DatabaseError(f"database {self.display}: {text}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's errors as ours. A connection found dead is dropped here,
        so the next call connects again."""
        try:
            yield
        except psycopg.Error as exc:
            error = self._translate(exc)
            if self._conn is not None and self._conn.closed:
                _close_quietly(self._conn)
                self._conn = None
            raise error from None

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor for statements that stand alone (autocommit)."""
        with self._lock, self._errors():
            yield self._connection().cursor(row_factory=dict_row)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Any]:
        with self._lock, self._errors():
            conn = self._connection()
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(begin)
            try:
                yield cur
            except BaseException:
                if not conn.closed:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        pass
                raise
            cur.execute("COMMIT")

    def _write(self) -> Any:
        return self._transaction("BEGIN")

    def _read(self) -> Any:
        """Several statements that see one snapshot."""
        return self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _injected(self) -> datetime | None:
        """The test's clock for NOW_SQL, or None for the server's."""
        return self._clock() if self._clock else None

    def _settings_and_now(self, cur: Any) -> tuple[ClusterSettings, datetime]:
        cur.execute(f"SELECT {SETTINGS_SQL} AS settings, now() AS now")
        row = cur.fetchone()
        now = self._clock() if self._clock else _utc(row["now"])
        return ClusterSettings.from_stored(row["settings"]), now

    def _notify(self, cur: Any, what: str) -> None:
        """Delivered at commit to every store listening on this schema."""
        cur.execute("SELECT pg_notify(%s, %s)", (self._channel, what))

    def now(self) -> datetime:
        if self._clock:
            return self._clock()
        with self._cursor() as cur:
            return _utc(cur.execute("SELECT now() AS now").fetchone()["now"])

    def reopen(self) -> "PostgresStore":
        return PostgresStore(self._url, clock=self._clock)

    def set_lock_wait(self, seconds: float) -> None:
        self._lock_wait = seconds
        with self._cursor() as cur:
            cur.execute("SELECT set_config('lock_timeout', %s, false)",
                        (f"{int(seconds * 1000)}ms",))

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            _close_quietly(self._conn)
            self._conn = None

    # -- wake-ups -------------------------------------------------------------

    def change_fd(self) -> int | None:
        return self._listener.fileno()

    def changed(self) -> bool:
        return self._listener.changed()

    def wait_for_change(self, timeout: float) -> bool:
        return self._listener.wait(timeout)

    # -- schema -------------------------------------------------------------

    def initialize(self) -> tuple[int | None, int]:
        from .postgres_schema import migrate

        with self._write() as cur:
            # One process at a time per schema, for as long as an upgrade takes.
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"octonodes init {self.schema}",))
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            meta = self._read_meta(cur)
            before = int(meta["schema_version"]) if meta else None
            if before is not None and before >= SCHEMA_VERSION:
                self._verify(meta)
                return before, before
            if cur.execute("SELECT current_schema() AS s").fetchone()["s"] != self.schema:
                raise DatabaseError(f"{self._where()}: the schema is not first on search_path")
            after = migrate(cur.execute, before)
        return before, after

    # -- settings -----------------------------------------------------------

    def stored_settings(self) -> dict[str, str]:
        with self._cursor() as cur:
            return {r["key"]: r["value"] for r in cur.execute("SELECT key, value FROM settings")}

    def settings(self) -> ClusterSettings:
        return ClusterSettings.from_stored(self.stored_settings())

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as cur:
            # Writers one at a time, so two changes cannot each pass validation
            # against the other's old value (offline_after vs heartbeat_interval).
            cur.execute("LOCK TABLE settings IN EXCLUSIVE MODE")
            current, _ = self._settings_and_now(cur)
            canonical = validate_setting(key, value, current)
            cur.execute(
                """INSERT INTO settings (key, value) VALUES (%s, %s)
                   ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""", (key, canonical))
            self._notify(cur, f"setting {key}")

    # -- nodes --------------------------------------------------------------

    @staticmethod
    def _node_row(row: dict) -> dict:
        data = dict(row)
        for key in ("last_seen", "started_at", "stopped_at"):
            data[key] = _utc(data[key])
        return data

    def _select_nodes(self, cur: Any, where: str = "", args: tuple = ()) -> list[tuple[dict, int]]:
        cur.execute(
            f"SELECT {NODE_COLUMNS}, {RUNNING_COUNT_SQL} AS running FROM nodes n {where} "
            "ORDER BY n.name", args)
        result = []
        for row in cur.fetchall():
            data = self._node_row(row)
            result.append((data, data.pop("running")))
        return result

    def _one_node(self, cur: Any, name: str, settings: ClusterSettings, now: datetime) -> Node:
        rows = self._select_nodes(cur, "WHERE n.name = %s", (name,))
        if not rows:
            raise NotFound(f"no node named {name!r}")
        row, running = rows[0]
        return make_node(row, now=now, running=running, offline_after=settings.offline_after)

    @staticmethod
    def _lock_node(cur: Any, name: str) -> bool:
        """Lock a node's row for this transaction (False if there is none).
        Statements after it see every commit of those who held it before."""
        cur.execute("SELECT 1 FROM nodes WHERE name = %s FOR UPDATE", (name,))
        return cur.fetchone() is not None

    def nodes(self) -> list[Node]:
        with self._read() as cur:
            settings, now = self._settings_and_now(cur)
            return [make_node(row, now=now, running=running, offline_after=settings.offline_after)
                    for row, running in self._select_nodes(cur)]

    def node(self, name: str, *, with_tasks: bool = False) -> Node:
        with self._read() as cur:
            settings, now = self._settings_and_now(cur)
            node = self._one_node(cur, name, settings, now)
            if with_tasks:
                node.active_tasks = self._select_tasks(
                    cur, f"WHERE node = %s AND state IN {ACTIVE_SQL} ORDER BY id", (name,))
            return node

    def register(self, reg: Registration) -> Registered:
        with self._write() as cur:
            settings, now = self._settings_and_now(cur)
            exists = self._lock_node(cur, reg.name)
            if not exists:
                cap = reg.task_cap if reg.task_cap is not None else DEFAULT_TASK_CAP
                cur.execute(
                    """INSERT INTO nodes (name, task_cap, drain, shutting_down, last_seen,
                       started_at, stopped_at, version, host, pid, http_address,
                       heartbeat_interval, instance_id)
                       VALUES (%s, %s, false, false, %s, %s, NULL, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (name) DO NOTHING RETURNING name""",
                    (reg.name, cap, now, now, reg.version, reg.host, reg.pid,
                     reg.http_address, reg.heartbeat_interval, reg.instance_id))
                if cur.fetchone() is None:
                    # Another process registered the name since we looked:
                    # treat it as held, like any existing row.
                    exists = self._lock_node(cur, reg.name)
            took_over = None
            ended: list[int] = []
            if exists:
                row, running = self._select_nodes(cur, "WHERE n.name = %s", (reg.name,))[0]
                node = make_node(row, now=now, running=running, offline_after=settings.offline_after)
                if node.instance_id and node.instance_id != reg.instance_id and node.online:
                    same_host_dead = reg.holder_gone and node.host == reg.host
                    if not same_host_dead:
                        raise Refused(
                            f"node {reg.name} is held by a live process: pid {node.pid} on "
                            f"{node.host}, last seen {common.when(node.last_seen)}"
                        )
                if node.instance_id and node.instance_id != reg.instance_id and not node.stopped_at:
                    took_over = node.instance_id
                failed, requeued = self._end_lost(
                    cur, now, "AND t.node = %s AND t.instance_id IS DISTINCT FROM %s",
                    (reg.name, reg.instance_id), skip_locked=False)
                ended = failed + requeued
                cap = reg.task_cap if reg.task_cap is not None else row["task_cap"]
                cur.execute(
                    """UPDATE nodes SET task_cap = %s, shutting_down = false, last_seen = %s,
                       started_at = %s, stopped_at = NULL, version = %s, host = %s, pid = %s,
                       http_address = %s, heartbeat_interval = %s, instance_id = %s
                       WHERE name = %s""",
                    (cap, now, now, reg.version, reg.host, reg.pid, reg.http_address,
                     reg.heartbeat_interval, reg.instance_id, reg.name))
            node = self._one_node(cur, reg.name, settings, now)
            self._notify(cur, f"register {reg.name}")
        return Registered(node=node, settings=settings, took_over=took_over, ended_tasks=ended)

    def check_in(self, name: str, instance_id: str, *, shutting_down: bool,
                 heartbeat_interval: float) -> CheckIn | None:
        with self._write() as cur:
            cur.execute(
                f"""UPDATE nodes SET last_seen = {NOW_SQL}, shutting_down = %s,
                    heartbeat_interval = %s
                    WHERE name = %s AND instance_id = %s AND stopped_at IS NULL""",
                (self._injected(), shutting_down, heartbeat_interval, name, instance_id))
            if cur.rowcount == 0:
                return None
            settings, now = self._settings_and_now(cur)
            return CheckIn(node=self._one_node(cur, name, settings, now), settings=settings)

    def mark_stopped(self, name: str, instance_id: str) -> None:
        with self._write() as cur:
            cur.execute(
                f"""UPDATE nodes SET stopped_at = {NOW_SQL}, shutting_down = false
                    WHERE name = %s AND instance_id = %s""",
                (self._injected(), name, instance_id))
            if cur.rowcount:
                self._notify(cur, f"stopped {name}")

    def set_drain(self, name: str, on: bool) -> bool:
        with self._write() as cur:
            row = cur.execute("SELECT drain FROM nodes WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no node named {name!r}")
            if row["drain"] != on:
                cur.execute("UPDATE nodes SET drain = %s WHERE name = %s", (on, name))
                self._notify(cur, f"drain {name}")
            return bool(row["drain"])

    def set_cap(self, name: str, cap: int) -> int:
        with self._write() as cur:
            row = cur.execute("SELECT task_cap FROM nodes WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no node named {name!r}")
            if row["task_cap"] != cap:
                cur.execute("UPDATE nodes SET task_cap = %s WHERE name = %s", (cap, name))
                self._notify(cur, f"cap {name}")
            return row["task_cap"]

    def delete_node(self, name: str, *, force: bool) -> list[int]:
        with self._write() as cur:
            settings, now = self._settings_and_now(cur)
            self._lock_node(cur, name)
            node = self._one_node(cur, name, settings, now)
            if not force:
                if node.online:
                    raise Refused(
                        f"node {name} is online ({node.status}); stop it first, or use --force")
                if node.tasks:
                    raise Refused(
                        f"node {name} has {node.tasks} active task(s); wait for them, or use --force")
            error = common.ERROR_NODE_DELETED.format(node=name)
            cur.execute(f"SELECT id FROM tasks WHERE node = %s AND state IN {ACTIVE_SQL} "
                        "ORDER BY id FOR UPDATE", (name,))
            ids = [r["id"] for r in cur.fetchall()]
            if ids:
                cur.execute(
                    """UPDATE tasks SET state = 'Failed', finished_at = %s, error = %s
                       WHERE id = ANY(%s)""", (now, error, ids))
            cur.execute("DELETE FROM nodes WHERE name = %s", (name,))
            self._notify(cur, f"delete {name}")
            return ids

    # -- tasks --------------------------------------------------------------

    def _select_tasks(self, cur: Any, tail: str, args: tuple = ()) -> list[Task]:
        cur.execute(f"SELECT {TASK_COLUMNS} FROM tasks {tail}", args)
        return [self._task(row) for row in cur.fetchall()]

    @staticmethod
    def _task(row: dict) -> Task:
        return Task(
            id=row["id"], name=row["name"], command=list(row["command"]),
            state=TaskState(row["state"]), node=row["node"],
            queued_at=_utc(row["queued_at"]), started_at=_utc(row["started_at"]),
            finished_at=_utc(row["finished_at"]), exit_code=row["exit_code"],
            error=row["error"], timeout=row["timeout"], queue_timeout=row["queue_timeout"],
            retries=row["retries"], attempt=row["attempt"], instance=row["instance_id"],
        )

    def add_tasks(self, specs: Iterable[TaskSpec]) -> list[Task]:
        specs = list(specs)
        if not specs:
            return []
        with self._write() as cur:
            now = self._injected()  # one queued_at for the batch, as in one transaction
            cur.executemany(
                f"""INSERT INTO tasks (name, command, state, queued_at, timeout,
                    queue_timeout, retries, attempt)
                    VALUES (%s, %s, 'Queued', {NOW_SQL}, %s, %s, %s, 0)
                    RETURNING {TASK_COLUMNS}""",
                [(spec.name or common.default_task_name(spec.command), list(spec.command),
                  now, spec.timeout, spec.queue_timeout, spec.retries) for spec in specs],
                returning=True)
            added = []
            while True:  # one result per row, in order
                added.append(self._task(cur.fetchone()))
                if not cur.nextset():
                    break
            self._notify(cur, "tasks")
            return added

    def task(self, task_id: int) -> Task:
        with self._cursor() as cur:
            found = self._select_tasks(cur, "WHERE id = %s", (task_id,))
        if not found:
            raise NotFound(f"no task with id {task_id}")
        return found[0]

    def tasks(self, *, node: str | None = None, states: Iterable[TaskState] = (),
              limit: int | None = 50) -> list[Task]:
        clauses, args = [], []
        if node is not None:
            clauses.append("node = %s")
            args.append(node)
        states = [TaskState(s).value for s in states]
        if states:
            clauses.append("state = ANY(%s)")
            args.append(states)
        tail = ("WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id DESC"
        if limit is not None:
            tail += " LIMIT %s"
            args.append(limit)
        with self._cursor() as cur:
            return self._select_tasks(cur, tail, tuple(args))

    def cancel(self, task_id: int) -> tuple[Task, bool]:
        with self._write() as cur:
            found = self._select_tasks(cur, "WHERE id = %s FOR UPDATE", (task_id,))
            if not found:
                raise NotFound(f"no task with id {task_id}")
            task = found[0]
            if task.state is TaskState.QUEUED:
                cur.execute(
                    f"""UPDATE tasks SET state = 'Canceled', finished_at = {NOW_SQL}, error = %s
                        WHERE id = %s""",
                    (self._injected(), common.ERROR_CANCELED_QUEUED, task_id))
            elif task.state is TaskState.EXECUTING:
                cur.execute("UPDATE tasks SET state = 'Cancelling' WHERE id = %s", (task_id,))
            else:
                return task, False
            self._notify(cur, f"cancel {task_id}")
            return self._select_tasks(cur, "WHERE id = %s", (task_id,))[0], True

    def claim(self, name: str, instance_id: str, limit: int) -> list[Task]:
        if limit <= 0:
            return []
        with self._cursor() as cur:
            # A cheap look first: an idle node must not lock its row every
            # time someone commits.
            cur.execute("SELECT 1 FROM tasks WHERE state = 'Queued' ORDER BY id LIMIT 1")
            if cur.fetchone() is None:
                return []
        with self._write() as cur:
            # The node's row lock orders this claim after any drain, cap
            # change or other claim for the node committed before it.
            cur.execute(
                f"""SELECT n.task_cap, n.drain, n.shutting_down, n.stopped_at, n.last_seen,
                    n.heartbeat_interval, now() AS now, {SETTINGS_SQL} AS settings
                    FROM nodes n WHERE n.name = %s AND n.instance_id = %s FOR UPDATE""",
                (name, instance_id))
            row = cur.fetchone()
            if row is None:
                return []
            settings = ClusterSettings.from_stored(row["settings"])
            now = self._clock() if self._clock else _utc(row["now"])
            threshold = offline_threshold(settings.offline_after, row["heartbeat_interval"])
            if row["drain"] or row["shutting_down"] or row["stopped_at"] is not None \
                    or row["last_seen"] is None \
                    or now - row["last_seen"] > timedelta(seconds=threshold):
                return []
            # Counted after the lock, in a fresh snapshot: sees earlier claims.
            running = cur.execute(
                f"SELECT count(*)::int AS n FROM tasks WHERE node = %s AND state IN {ACTIVE_SQL}",
                (name,)).fetchone()["n"]
            room = min(limit, row["task_cap"] - running)
            if room <= 0:
                return []
            cur.execute(
                f"""WITH picked AS MATERIALIZED (
                        SELECT id FROM tasks WHERE state = 'Queued' ORDER BY id LIMIT %s
                        FOR UPDATE SKIP LOCKED)
                    UPDATE tasks SET state = 'Executing', node = %s, instance_id = %s,
                        started_at = %s, attempt = attempt + 1, exit_code = NULL
                    FROM picked WHERE tasks.id = picked.id AND tasks.state = 'Queued'
                    RETURNING {CLAIMED_COLUMNS}""",
                (room, name, instance_id, now))
            claimed = [self._task(r) for r in cur.fetchall()]
            return sorted(claimed, key=lambda t: t.id)

    def cancel_requests(self, name: str, instance_id: str) -> list[tuple[int, int]]:
        with self._cursor() as cur:
            cur.execute(
                """SELECT id, attempt FROM tasks WHERE node = %s AND state = 'Cancelling'
                   AND instance_id = %s""", (name, instance_id))
            return [(r["id"], r["attempt"]) for r in cur.fetchall()]

    def append_logs(self, instance_id: str, chunks: Iterable[LogChunk]) -> None:
        groups: dict[tuple[int, int], list[bytes]] = {}
        for chunk in chunks:
            if chunk.data:
                groups.setdefault((chunk.task_id, chunk.attempt), []).append(bytes(chunk.data))
        if not groups:
            return
        with self._write() as cur:
            # Task rows locked in id order; the owner's lock makes the
            # sequence numbers safe even if it appends from two connections.
            for (task_id, attempt), datas in sorted(groups.items()):
                cur.execute(
                    f"""SELECT id FROM tasks WHERE id = %s AND instance_id = %s AND attempt = %s
                        AND state IN {ACTIVE_SQL} FOR NO KEY UPDATE""",
                    (task_id, instance_id, attempt))
                if cur.fetchone() is None:
                    continue  # no longer ours: dropped
                last = cur.execute(
                    "SELECT coalesce(max(seq), 0) AS seq FROM task_logs WHERE task_id = %s",
                    (task_id,)).fetchone()["seq"]
                cur.executemany(
                    "INSERT INTO task_logs (task_id, seq, data) VALUES (%s, %s, %s)",
                    [(task_id, last + i, data) for i, data in enumerate(datas, 1)])

    def finish_task(self, task_id: int, instance_id: str, attempt: int, state: TaskState,
                    *, exit_code: int | None = None, error: str | None = None) -> bool:
        with self._cursor() as cur:
            # One statement: the notify is sent only when the row was ours.
            cur.execute(
                f"""UPDATE tasks SET state = %s, exit_code = %s, error = %s,
                    finished_at = {NOW_SQL}
                    WHERE id = %s AND instance_id = %s AND attempt = %s AND state IN {ACTIVE_SQL}
                    RETURNING pg_notify(%s, %s)""",
                (TaskState(state).value, exit_code, error, self._injected(), task_id,
                 instance_id, attempt, self._channel, f"end {task_id}"))
            return cur.rowcount == 1

    def own_active_tasks(self, name: str, instance_id: str) -> list[Task]:
        with self._cursor() as cur:
            return self._select_tasks(
                cur, f"WHERE node = %s AND instance_id = %s AND state IN {ACTIVE_SQL} ORDER BY id",
                (name, instance_id))

    def read_log(self, task_id: int, after: int = 0) -> list[tuple[int, bytes]]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT seq, data FROM task_logs WHERE task_id = %s AND seq > %s ORDER BY seq",
                (task_id, after))
            return [(r["seq"], bytes(r["data"])) for r in cur.fetchall()]

    def _end_lost(self, cur: Any, now: datetime, where: str, args: tuple,
                  *, skip_locked: bool) -> tuple[list[int], list[int]]:
        """Fail (or requeue, while retries remain) the active tasks picked by
        `where`; returns (failed ids, requeued ids). With `skip_locked`, a task
        someone is writing right now waits for the next pass."""
        cur.execute(
            f"""SELECT t.id, t.state, t.attempt, t.retries, t.node, n.last_seen
                FROM tasks t LEFT JOIN nodes n ON n.name = t.node
                WHERE t.state IN {ACTIVE_SQL} {where}
                ORDER BY t.id FOR UPDATE OF t{' SKIP LOCKED' if skip_locked else ''}""", args)
        failed, requeued = [], []
        requeue_rows, fail_rows = [], []
        for row in cur.fetchall():
            seen = _utc(row["last_seen"])
            if row["state"] == TaskState.EXECUTING and row["attempt"] <= row["retries"]:
                requeue_rows.append((common.requeued_note(row["node"], row["attempt"], seen), row["id"]))
                requeued.append(row["id"])
            else:
                fail_rows.append((now, common.lost_error(row["node"], seen), row["id"]))
                failed.append(row["id"])
        if requeue_rows:
            cur.executemany(
                """UPDATE tasks SET state = 'Queued', node = NULL, instance_id = NULL,
                   started_at = NULL, error = %s WHERE id = %s""", requeue_rows)
        if fail_rows:
            cur.executemany(
                "UPDATE tasks SET state = 'Failed', finished_at = %s, error = %s WHERE id = %s",
                fail_rows)
        return failed, requeued

    def reap(self) -> Reaped:
        lost_where = """AND (n.name IS NULL OR n.instance_id IS DISTINCT FROM t.instance_id
            OR n.stopped_at IS NOT NULL
            OR n.last_seen < %s - greatest(%s, 2 * coalesce(n.heartbeat_interval, 0))
                               * interval '1 second')"""
        queue_where = """state = 'Queued'
            AND queued_at < %s - coalesce(queue_timeout, %s) * interval '1 second'"""
        with self._cursor() as cur:
            settings, now = self._settings_and_now(cur)
            lost_args = (now, settings.offline_after)
            queue_args = (now, settings.queue_timeout)
            prune_before = now - timedelta(seconds=settings.task_retention)
            # Read-only looks first, so a quiet cluster locks nothing.
            cur.execute(
                f"""SELECT
                    EXISTS (SELECT 1 FROM tasks t LEFT JOIN nodes n ON n.name = t.node
                            WHERE t.state IN {ACTIVE_SQL} {lost_where}) AS lost,
                    EXISTS (SELECT 1 FROM tasks WHERE {queue_where}) AS late,
                    EXISTS (SELECT 1 FROM tasks WHERE finished_at < %s) AS old""",
                lost_args + queue_args + (prune_before,))
            looks = cur.fetchone()
        if not (looks["lost"] or looks["late"] or looks["old"]):
            return Reaped()
        with self._write() as cur:
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

    def queue_summary(self) -> QueueSummary:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT count(*)::int AS n, min(queued_at) AS oldest FROM tasks "
                "WHERE state = 'Queued'").fetchone()
        return QueueSummary(queued=row["n"], oldest_queued_at=_utc(row["oldest"]))

    # -- API keys -------------------------------------------------------------

    @staticmethod
    def _api_key(row: dict) -> ApiKey:
        return ApiKey(name=row["name"], created_at=_utc(row["created_at"]),
                      revoked_at=_utc(row["revoked_at"]))

    def add_api_key(self, name: str, key_hash: str) -> ApiKey:
        with self._write() as cur:
            row = cur.execute(
                f"""INSERT INTO api_keys (name, key_hash, created_at) VALUES (%s, %s, {NOW_SQL})
                    ON CONFLICT (name) DO NOTHING RETURNING name, created_at, revoked_at""",
                (name, key_hash, self._injected())).fetchone()
            if row is None:
                raise Refused(f"an API key named {name!r} already exists; choose another name")
            return self._api_key(row)

    def api_keys(self) -> list[ApiKey]:
        with self._cursor() as cur:
            cur.execute("SELECT name, created_at, revoked_at FROM api_keys ORDER BY name")
            return [self._api_key(r) for r in cur.fetchall()]

    def revoke_api_key(self, name: str) -> bool:
        with self._write() as cur:
            row = cur.execute("SELECT revoked_at FROM api_keys WHERE name = %s FOR UPDATE",
                              (name,)).fetchone()
            if row is None:
                raise NotFound(f"no API key named {name!r}")
            if row["revoked_at"] is not None:
                return False
            cur.execute(f"UPDATE api_keys SET revoked_at = {NOW_SQL} WHERE name = %s",
                        (self._injected(), name))
            return True

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT name, created_at, revoked_at FROM api_keys WHERE key_hash = %s",
                (key_hash,)).fetchone()
        return None if row is None else self._api_key(row)

"""PostgreSQL, for nodes on several hosts sharing one server.

Same behaviour as the SQLite store, with the server doing what SQLite's
single write lock did there:

- Claims take queued tasks with `FOR UPDATE SKIP LOCKED`, oldest first, after
  locking the claiming node's row, so drain, cap and liveness are read inside
  the claim and two claims by one node cannot together pass its cap. A busy
  node's output, ends and claim are one call of `octonodes_exchange`, a
  PL/pgSQL function the schema holds (`postgres_schema`).
- Times are `timestamptz` from the server's clock (`now()`), so hosts with
  skewed clocks agree; a clock injected by a test replaces it everywhere.
- Writes that a node or a waiting command must react to send `pg_notify`;
  `postgres_listen` turns them into a pipe to wait on (`change_fd()`).
- A lost connection fails the call with DatabaseError; the next call
  reconnects (`postgres_connect`), and `changed()` then says True once for
  what may have been missed (and True on every call while the listener is
  cut off).

`postgres_tasks` holds the task statements (the claim, the exchange,
reap); this module the rest: opening, the schema, plumbing, wake-ups and
registration.

Everything lives in `current_schema()`: a URL such as
`postgresql://u@host/db?options=-csearch_path%3Dcluster_a` keeps a cluster (or
a test) in its own schema, which `initialize()` creates when it is missing.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..audit import Action, Change, node_actor
from ..errors import DatabaseError
from ..models import make_node
from ..settings import DEFAULT_TASK_CAP, ClusterSettings
from . import audit_sql, common
from .base import Clock
from .postgres_connect import APPLICATION_NAME, Connection, first_schema, with_application_name
from .postgres_listen import TASK_ENDS, Listener, channel_for
from .postgres_schema import SCHEMA_VERSION, SECONDS, TABLES
from .postgres_tasks import PostgresTasks
from .records import Registered, Registration

SETTINGS_SQL = "coalesce((SELECT json_object_agg(key, value) FROM settings), '{}'::json)"
NOW_SQL = "coalesce(%s::timestamptz, now())"
"""The injected clock's time when a test gave one (a parameter), else the server's."""


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _connected(listener: Listener, backend_pid: int, reconnected: bool) -> None:
    """A new statement connection: its notifications are the store's own,
    and others' may have gone by while it was cut off."""
    listener.own_pid = backend_pid
    if reconnected:
        listener.signal()


class PostgresStore(PostgresTasks):
    kind = "postgresql"
    P = "%s"
    NOW = NOW_SQL
    SECONDS = SECONDS
    FOR_UPDATE = " FOR UPDATE"
    NAME_LIKE = "name ILIKE %s"
    CONTAINS = "strpos(lower({}), lower(%s)) > 0"

    def __init__(self, url: str, *, create: bool = False, clock: Clock | None = None,
                 application_name: str | None = None) -> None:
        """`application_name` is what `pg_stat_activity` shows for this store's
        connections (its listener's with ` listen` added), e.g. `octonodes node
        node-1`, unless the URL or PGAPPNAME names them."""
        self._url = url
        self._clock = clock
        self._application_name = application_name or APPLICATION_NAME
        self._db = Connection(url, application_name=self._application_name)
        self.display = self._db.display
        self._listener: Listener | None = None
        self._db.connection()
        try:
            self.schema = self._find_schema()
            self._db.where = self._where()
            self._channel = channel_for(self.schema)
            self._ends_channel = channel_for(self.schema, TASK_ENDS)
            self._listener = Listener(
                with_application_name(self._db.conninfo, f"{self._application_name} listen"),
                (self._channel, self._ends_channel), announced_to_waiters=self._ends_channel)
            self._listener.own_pid = self._db.backend_pid
            # Bound to the listener, not the store: no cycle keeps a store
            # dropped without close() alive, so its finalizer runs at once.
            self._db.on_connect = partial(_connected, self._listener)
            weakref.finalize(self, self._listener.close)
            if not create:
                self.check_schema()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------

    def _find_schema(self) -> str:
        """The schema to work in: the current one, else the first named on
        search_path (which `initialize()` creates)."""
        with self._cursor() as cur:
            row = cur.execute("SELECT current_schema() AS current, "
                              "current_setting('search_path') AS path").fetchone()
        named = row["current"] or first_schema(row["path"])
        if named is None:
            raise DatabaseError(
                f"{self.display}: search_path ({row['path']}) names no schema to keep the "
                "cluster in; add ?options=-csearch_path%3DNAME to the URL")
        return named

    def _where(self) -> str:
        return f"{self.display} (schema {self.schema})"

    def _read_meta(self, cur: Any) -> dict[str, str] | None:
        cur.execute(
            """SELECT c.relname AS name, has_schema_privilege(s.oid, 'USAGE') AS usable
               FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
               WHERE s.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)""",
            (self.schema, list(TABLES)))
        rows = cur.fetchall()
        tables = {r["name"] for r in rows}
        if "meta" not in tables:
            if tables:
                raise DatabaseError(
                    f"{self._where()} has tables named like octonodes' "
                    f"({', '.join(sorted(tables))}) but is not an octonodes database")
            return None
        if not rows[0]["usable"]:
            # Without USAGE the server skips the schema on search_path and
            # says the tables do not exist; say what is wrong instead.
            raise DatabaseError(
                f"{self._where()}: permission denied for schema {self.schema}; "
                "the database owner must grant USAGE on it (see docs/postgresql.md)")
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
        common.check_schema_version(
            meta, SCHEMA_VERSION,
            f"{self.display} has no octonodes schema yet (schema {self.schema}); "
            "run `octonodes init`")

    # -- plumbing -----------------------------------------------------------

    def _cursor(self) -> Any:
        """A cursor for statements that stand alone (autocommit)."""
        return self._db.cursor()

    def _write(self) -> Any:
        return self._db.transaction("BEGIN")

    def _read(self) -> Any:
        """Several statements that see one snapshot."""
        return self._db.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _reading(self) -> Any:
        return self._cursor()

    def _rows(self, cx: Any, sql: str, args: tuple | list = ()) -> list[dict]:
        return cx.execute(sql, args).fetchall()

    def _now_arg(self) -> datetime | None:
        return self._injected()

    @staticmethod
    def _stored_time(value: datetime) -> datetime:
        return value

    _time = staticmethod(_utc)
    _command = staticmethod(list)

    def _lock_settings(self, cur: Any) -> None:
        cur.execute("LOCK TABLE settings IN EXCLUSIVE MODE")

    def _lost_lock(self, skip_locked: bool) -> str:
        return " FOR UPDATE OF t" + (" SKIP LOCKED" if skip_locked else "")

    def _injected(self) -> datetime | None:
        """The test's clock for NOW_SQL, or None for the server's."""
        return self._clock() if self._clock else None

    def _settings_and_now(self, cur: Any) -> tuple[ClusterSettings, datetime]:
        """The settings in force and the cluster's time, in one statement."""
        cur.execute(f"SELECT {SETTINGS_SQL} AS settings, now() AS now")
        row = cur.fetchone()
        now = self._clock() if self._clock else _utc(row["now"])
        return ClusterSettings.from_stored(row["settings"]), now

    def _event(self, cur: Any, change: Change, action: Action, target: str, **fields) -> None:
        """Record a change in the caller's transaction, and tell waiting stores."""
        cur.execute(*audit_sql.insert("%s", self._injected(), change, action, target,
                                      at_sql=NOW_SQL, **fields))
        self._notify(cur, "event")

    def _notify(self, cur: Any, what: str) -> None:
        """Delivered at commit to every store listening on this schema."""
        cur.execute("SELECT pg_notify(%s, %s)", (self._channel, what))

    def now(self) -> datetime:
        if self._clock:
            return self._clock()
        with self._cursor() as cur:
            return _utc(cur.execute("SELECT now() AS now").fetchone()["now"])

    def reopen(self) -> "PostgresStore":
        return PostgresStore(self._url, clock=self._clock,
                             application_name=self._application_name)

    def set_lock_wait(self, seconds: float) -> None:
        self._db.set_lock_wait(seconds)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._db.close()

    # -- wake-ups -------------------------------------------------------------

    def ignore_task_ends(self) -> None:
        self._listener.drop_channel(self._ends_channel)

    def change_fd(self) -> int | None:
        return self._listener.fileno()

    def changed(self) -> bool:
        return self._listener.changed()

    def wait_for_change(self, timeout: float) -> bool:
        return self._listener.wait(timeout)

    # -- schema -------------------------------------------------------------

    def initialize(self) -> tuple[int | None, int]:
        from psycopg import sql

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
            row = cur.execute(
                """SELECT current_schema() AS s, has_schema_privilege(%s, 'USAGE')
                   AND has_schema_privilege(%s, 'CREATE') AS may""",
                (self.schema, self.schema)).fetchone()
            if not row["may"]:
                raise DatabaseError(
                    f"{self._where()}: permission denied for schema {self.schema}; "
                    "`octonodes init` needs CREATE and USAGE on it (or run it as its owner)")
            if row["s"] != self.schema:
                raise DatabaseError(f"{self._where()}: the schema is not first on search_path")
            after = migrate(cur.execute, before)
        return before, after

    # -- nodes --------------------------------------------------------------

    def _lock_node(self, cur: Any, name: str) -> bool:
        """Lock a node's row for this transaction (False if there is none).
        Statements after it see every commit of those who held it before."""
        cur.execute("SELECT 1 FROM nodes WHERE name = %s FOR UPDATE", (name,))
        return cur.fetchone() is not None

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
                took_over = common.take_over(node, reg.instance_id, reg.host, reg.holder_gone)
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
            self._event(cur, Change(node_actor(reg.name)),
                        **common.registered_event(node, reg, took_over, ended))
        return Registered(node=node, settings=settings, took_over=took_over, ended_tasks=ended)

"""Connecting to PostgreSQL: the URL, what is shown of it, libpq's options,
the store's statement connection, and psycopg's errors as ours.

The password never leaves this module: `display` is the URL without it, and
every message from the server or libpq is scrubbed of it before it becomes a
`DatabaseError`. Only the `postgres*` modules import psycopg, so the SQLite
path never pays for it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..errors import DatabaseBusy, DatabaseError, SchemaMismatch, UsageError

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - the `postgres` extra is not installed
    psycopg = None

INSTALL_HINT = "PostgreSQL support needs psycopg: pip install 'octonodes[postgres]'"

CONNECT_DEFAULTS = {
    # A node must notice a dead server or a cut network well within
    # offline_after, not after the kernel's two-hour keepalive default.
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
"""libpq options used unless the URL gives its own."""
APPLICATION_NAME = "octonodes"
"""What `pg_stat_activity` shows for a connection, unless the URL or PGAPPNAME
names it (it is libpq's `fallback_application_name`)."""
DEFAULT_LOCK_WAIT = 10.0
"""How long a statement waits for another's row lock before DatabaseBusy,
like SQLite's busy timeout; a node sets a shorter one (`set_lock_wait`)."""


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


def first_schema(search_path: str) -> str | None:
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


def one_line(exc: BaseException) -> str:
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


def close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def with_application_name(conninfo: str, name: str) -> str:
    """The same connection string, shown in `pg_stat_activity` as `name`
    (unless the URL or PGAPPNAME says otherwise)."""
    return make_conninfo(conninfo, fallback_application_name=name[:63])


class Connection:
    """The store's statement connection: one statement at a time (a lock),
    autocommit with explicit transactions, and a new connection on the next
    call after one was lost.

    `on_connect(backend_pid, reconnected)` is told about every new
    connection, so the store can tell its own notifications from others'
    and look for what it missed while it was cut off.
    """

    def __init__(self, url: str, *, application_name: str | None = None) -> None:
        self.display = redact(url)
        if psycopg is None:
            raise DatabaseError(INSTALL_HINT)
        self.where = self.display
        """Where statements run, for messages; the store adds its schema."""
        self.lock = threading.RLock()
        self.lock_wait = DEFAULT_LOCK_WAIT
        self.backend_pid: int | None = None
        self.on_connect: Callable[[int, bool], None] | None = None
        self._conn: Any = None
        self._password = ""
        self.conninfo = self._make_conninfo(url, application_name or APPLICATION_NAME)

    def _make_conninfo(self, url: str, application_name: str) -> str:
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise UsageError(f"invalid PostgreSQL URL {self.display}: {one_line(exc)}") from None
        self._password = str(given.get("password") or "")
        defaults = dict(CONNECT_DEFAULTS, fallback_application_name=application_name[:63])
        if psycopg.pq.version() >= 120000:  # libpq 12 knows tcp_user_timeout
            defaults["tcp_user_timeout"] = "30000"
        return make_conninfo(url, **{k: v for k, v in defaults.items() if k not in given})

    def scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _cannot_connect(self, exc: BaseException) -> DatabaseError:
        return DatabaseError(
            f"cannot connect to the database {self.display}: {self.scrub(one_line(exc))}")

    def connection(self) -> Any:
        """The open connection; a new one when there is none or it was lost."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        reconnected = self.backend_pid is not None
        close_quietly(self._conn)
        self._conn = None
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._cannot_connect(exc) from None
        try:
            conn.execute("SELECT set_config('lock_timeout', %s, false)",
                         (f"{int(self.lock_wait * 1000)}ms",))
        except psycopg.Error as exc:
            close_quietly(conn)
            raise self._cannot_connect(exc) from None
        self._conn, self.backend_pid = conn, conn.info.backend_pid
        if self.on_connect is not None:
            self.on_connect(self.backend_pid, reconnected)
        return conn

    def set_lock_wait(self, seconds: float) -> None:
        self.lock_wait = seconds
        with self.cursor() as cur:
            cur.execute("SELECT set_config('lock_timeout', %s, false)",
                        (f"{int(seconds * 1000)}ms",))

    def close(self) -> None:
        with self.lock:
            close_quietly(self._conn)
            self._conn = None

    def translate(self, exc: Exception) -> DatabaseError:
        text = self.scrub(one_line(exc))
        if self._conn is None or self._conn.closed:
            return DatabaseError(f"lost the connection to the database {self.display}: {text}")
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return DatabaseBusy(f"the database {self.display} stayed locked; try again ({text})")
        if isinstance(exc, psycopg.errors.TransactionRollback):
            return DatabaseBusy(f"the database {self.display} was busy; try again ({text})")
        if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction)):
            return SchemaMismatch(f"{self.where}: {text}; run `octonodes init`")
        return DatabaseError(f"database {self.display}: {text}")

    @contextmanager
    def errors(self) -> Iterator[None]:
        """psycopg's errors as ours. A connection found dead is dropped here,
        so the next call connects again."""
        try:
            yield
        except psycopg.Error as exc:
            error = self.translate(exc)
            if self._conn is not None and self._conn.closed:
                close_quietly(self._conn)
                self._conn = None
            raise error from None

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor for statements that stand alone (autocommit)."""
        with self.lock, self.errors():
            yield self.connection().cursor(row_factory=dict_row)

    @contextmanager
    def transaction(self, begin: str) -> Iterator[Any]:
        """A cursor inside `begin` … COMMIT; ROLLBACK when the block raises."""
        with self.lock, self.errors():
            conn = self.connection()
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

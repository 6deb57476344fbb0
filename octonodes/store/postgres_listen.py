"""Wake-ups for a PostgreSQL store: LISTEN in a thread, a pipe to wait on.

Writes that a node or a waiting command must react to send `pg_notify` on a
channel named after the schema (`channel_for`); task ends, which a busy
cluster commits hundreds of times a second, go on a channel of their own
(`TASK_ENDS`) that only waiting commands need. A `Listener` LISTENs on a
connection of its own, opened on first use in a daemon thread, and wakes a
pipe: its read end is the store's `change_fd()`, the same for the store's
life, and `changed()` consumes it. Notifications sent by the store's own
statement connection (`own_pid`) do not count.

Task ends are announced only while someone waits for them: a listener
that LISTENs for them also holds an advisory lock shared, and a node's batch
that can take that lock itself sends no notification (`postgres_schema`,
REGISTERING_LOCK). The lock is taken after the LISTEN, once the batches in
flight are done, and before the listener counts as listening, so nothing a
waiter reads afterwards can have ended unannounced.

While the listener is cut off from the server it says "changed" on every
call, so a waiter polls; once it is back it LISTENs again and says
"changed" once for whatever went by meanwhile.
"""

from __future__ import annotations

import hashlib
import select
import threading

from ..waker import Waker
from .postgres_connect import close_quietly
from .postgres_schema import REGISTERING_LOCK, WAITING_LOCK

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - the `postgres` extra is not installed
    psycopg = None

MAX_IDENTIFIER = 63
LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.5, 5.0
"""Back-off of the LISTEN thread while the server cannot be reached."""
WAITERS_LOCK_WAIT = "10s"
"""How long the LISTEN thread waits for the batches in flight (each holds a
lock it needs until it commits) before it tries again."""


TASK_ENDS = "ends"
"""The topic of the channel that hears tasks end (`channel_for`)."""


def channel_for(schema: str, topic: str = "") -> str:
    """A LISTEN channel per schema (and topic); identifiers stop at 63 bytes,
    so a long schema name is replaced by its hash."""
    prefix = f"octonodes_{topic}_" if topic else "octonodes_"
    channel = prefix + schema
    if len(channel.encode()) > MAX_IDENTIFIER:
        channel = prefix + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return channel


class Listener:
    """LISTENs on its own connection in a daemon thread and wakes a pipe.

    It holds no reference to the store, so a store dropped without `close()`
    is still collected, and its finalizer stops this thread and its connection.
    """

    def __init__(self, conninfo: str, channels: tuple[str, ...], *,
                 announced_to_waiters: str | None = None) -> None:
        """`announced_to_waiters`: the channel on which notifications are sent
        only while a listener holds the waiters' lock for it (task ends)."""
        self.conninfo, self.channels = conninfo, channels
        self.announced_to_waiters = announced_to_waiters
        self.own_pid: int | None = None  # the store's statement backend: its own writes
        self._lock = threading.Lock()
        self._pending = True  # the first changed() says True, as SQLite's does
        self._listening = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake: Waker | None = None  # what a waiter waits on
        self._stop: Waker | None = None  # what the thread waits on, besides the server

    def fileno(self) -> int | None:
        """The pipe's read end, the same for the listener's life; starts the thread."""
        with self._lock:
            if self._closed:
                return None
            if self._thread is None:
                self._wake, self._stop = Waker(), Waker()
                thread = threading.Thread(target=self._run, name="octonodes-listen", daemon=True)
                thread.start()
                # Only a started thread is kept: close() joins it, and a
                # Ctrl-C inside start() would leave one it cannot join (the
                # thread still ends at close(), on `_stop`).
                self._thread = thread
            return self._wake.fileno()

    def drop_channel(self, channel: str) -> None:
        """Not LISTEN on `channel`: decided before the thread starts (the
        first `fileno()`), so that nothing sent on it ever reaches us."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("drop_channel() after the listener started")
            self.channels = tuple(c for c in self.channels if c != channel)

    def signal(self) -> None:
        """Someone may have committed: remember it and wake whoever waits."""
        with self._lock:
            self._pending = True
            if self._wake is not None:
                self._wake.set()

    def changed(self) -> bool:
        """True once per batch of signals, and on every call while cut off."""
        fd = self.fileno()
        with self._lock:
            if fd is not None and self._wake is not None:
                self._wake.clear()
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
                self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)  # it closes its pipes and connection as it ends

    def _run(self) -> None:
        try:
            self._listen_until_closed()
        finally:
            with self._lock:
                for waker in (self._wake, self._stop):
                    if waker is not None:
                        waker.close()
                self._wake = self._stop = None

    def _register_as_waiter(self, conn) -> None:
        """Hold the lock that makes batches announce task ends, for as long
        as this connection lives (`postgres_schema`, REGISTERING_LOCK)."""
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (WAITERS_LOCK_WAIT,))
        keys = {"registering": REGISTERING_LOCK, "waiting": WAITING_LOCK,
                "channel": self.announced_to_waiters}
        conn.execute("SELECT pg_advisory_lock(%(registering)s, hashtext(%(channel)s))", keys)
        conn.execute("SELECT pg_advisory_lock_shared(%(waiting)s, hashtext(%(channel)s))", keys)
        conn.execute("SELECT pg_advisory_unlock(%(registering)s, hashtext(%(channel)s))", keys)

    def _listen_until_closed(self) -> None:
        stop = self._stop.fileno()
        retry = LISTEN_RETRY_MIN
        while not self._closed:
            conn = None
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True)
                for channel in self.channels:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if self.announced_to_waiters in self.channels:
                    self._register_as_waiter(conn)
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
                close_quietly(conn)
            if self._closed:
                return
            self.signal()  # cut off: look now, and poll until we are back
            if stop in select.select([stop], [], [], retry)[0]:
                return
            retry = min(2 * retry, LISTEN_RETRY_MAX)

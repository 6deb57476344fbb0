"""Opening a SQLite file: making it owner-only, the connection and its
pragmas, transactions, and sqlite3's errors as ours.

A file is created only when asked (`init`, `node run`); every connection
opens it read-write without creating it, so a mistyped path fails instead of
leaving an empty database behind.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from ..errors import DatabaseBusy, DatabaseError, DatabaseMissing

DEFAULT_BUSY_TIMEOUT = 10.0


def make_folders(folder: Path) -> None:
    """`folder` and every missing folder above it, owner-only (`mkdir`'s
    `parents` would give those above the umask's mode)."""
    if folder.is_dir():
        return
    make_folders(folder.parent)
    folder.mkdir(mode=0o700, exist_ok=True)


def prepare_file(path: Path, display: str, *, create: bool) -> bool:
    """See that there is a file to open at `path`, making it (owner-only)
    when `create` allows; True when it is new. An existing empty file
    (made by `touch`, or by a tool that reserves the name) becomes the
    database with `create`, owner-only as a new one would be."""
    exists = path.exists()
    if not exists and not create:
        raise DatabaseMissing(
            f"no database at {display}; create one with `octonodes init` "
            "(or point --db / OCTONODES_DB at an existing one)"
        )
    if not exists:
        _create_file(path, display)
    elif create and _empty(path):
        try:
            os.chmod(path, 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot use the empty file {display} as a database: "
                                f"{exc.strerror}") from None
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        # In WAL mode even a reader writes the -shm index: a file we may
        # not write would only leave stray side files behind.
        raise DatabaseError(
            f"cannot use the database {display}: it must be readable and writable "
            "by this user (check its owner and mode)")
    return not exists


def _create_file(path: Path, display: str) -> None:
    try:
        make_folders(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseError(f"cannot create a database at {display}: {exc.strerror}") from None


def _empty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def file_identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (device, inode); None when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class Connection:
    """The store's connection to one file, in autocommit mode with explicit
    transactions, and the identity of the file it opened."""

    def __init__(self, path: Path, display: str, busy_timeout: float) -> None:
        self.path = path
        self.display = display
        uri = f"file:{quote(str(path))}?mode=rw"
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                                        isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = %d" % int(busy_timeout * 1000))
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise self.translate(exc) from None
        self.identity = file_identity(path)

    def replaced(self) -> bool:
        """Was the file deleted, or another put at its path, since it was opened?"""
        return file_identity(self.path) != self.identity

    def use_wal(self) -> None:
        with self.errors():
            if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.conn.execute("PRAGMA journal_mode = WAL")

    def set_busy_timeout(self, seconds: float) -> None:
        with self.errors():
            self.conn.execute("PRAGMA busy_timeout = %d" % int(seconds * 1000))

    def close(self) -> None:
        self.conn.close()

    def translate(self, exc: sqlite3.Error) -> DatabaseError:
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
    def errors(self) -> Iterator[None]:
        """sqlite3's errors as ours."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.translate(exc) from None

    @contextmanager
    def transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """The connection inside `begin` … COMMIT; ROLLBACK when the block raises."""
        with self.errors():
            self.conn.execute(begin)
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

"""What each SQL backend provides to the statements the two share.

A shared statement differs between SQLite and PostgreSQL only in what each
backend's class names here: its placeholder (`P`), the cluster's time (`NOW`,
a parameter or the server's clock), how a number becomes seconds
(`SECONDS`), row locks (`FOR_UPDATE`), and how a stored time or command
reads back. `sql.SqlStore` and its parts (`sql_access`, `sql_sessions`)
write their statements with these; each backend's own module fills them in.
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Mapping

from ..audit import Action, Change
from .base import Store


class SqlBackend(Store):
    """The dialect and plumbing of one SQL backend."""

    P: str
    """The placeholder: `?` or `%s`."""
    NOW: str
    """SQL for the cluster's time; takes one argument, `_now_arg()`."""
    SECONDS: str
    """What follows a number to make it a duration to add to a stored time."""
    FOR_UPDATE: str
    """Locks the rows a SELECT reads until the transaction ends ("" where the
    write transaction holds the whole database)."""
    CONTAINS: str
    """`column contains argument`, case-blind, as a format with `{}` for the column."""
    NAME_LIKE: str
    """`name` matches a `common.like_pattern`, case-blind."""

    # -- what each backend provides ------------------------------------------

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """A write transaction; yields what `execute(sql, args)` is called on."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A read transaction: several statements see one snapshot."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """Statements that stand alone."""

    @abstractmethod
    def _rows(self, cx: Any, sql: str, args: tuple | list = ()) -> list[Mapping]:
        """Run a statement and return its rows, read by column name."""

    @abstractmethod
    def _now_arg(self) -> Any:
        """The argument for `NOW`."""

    @abstractmethod
    def _stored_time(self, value: datetime) -> Any:
        """A time as the database stores it."""

    @abstractmethod
    def _time(self, value: Any) -> datetime | None:
        """A stored time as an aware datetime."""

    @abstractmethod
    def _command(self, value: Any) -> list[str]:
        """A stored command as a list."""

    @abstractmethod
    def _event(self, cx: Any, change: Change, action: Action, target: str, **fields) -> None:
        """Record a change in the caller's transaction: both or neither. It
        tells waiting stores too (`_notify`), so a change that records an
        event needs no notification of its own."""

    def _notify(self, cx: Any, what: str) -> None:
        """Tell waiting stores of a change, at commit (where the backend can):
        every event does; a change that records none calls this."""

    def _lock_node(self, cx: Any, name: str) -> None:
        """Lock a node's row for this transaction, where rows can be locked."""

    def _lock_settings(self, cx: Any) -> None:
        """Make setting writers take turns, where the transaction does not already."""

    def _lost_lock(self, skip_locked: bool) -> str:
        """What locks the tasks `_end_lost` ends, where rows can be locked."""
        return ""

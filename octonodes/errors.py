"""One exception hierarchy; each error carries the exit code the CLI uses."""

from __future__ import annotations


class OctonodesError(Exception):
    """Base of every error octonodes reports to a user."""

    exit_code = 1


class UsageError(OctonodesError):
    """A bad option or value (a malformed name, duration, cap, setting)."""

    exit_code = 2


class NotFound(OctonodesError):
    """No such node or task."""

    exit_code = 3


class Refused(OctonodesError):
    """A guard said no: a name held by a live node, deleting an online node."""

    exit_code = 4


class TimedOut(OctonodesError):
    """A wait ran past its deadline."""

    exit_code = 5


class DatabaseError(OctonodesError):
    """The database is missing, unavailable, corrupt, out of date or too new."""

    exit_code = 6


class DatabaseMissing(DatabaseError):
    """No database where one was expected; only `init` and `node run` create one."""


class DatabaseBusy(DatabaseError):
    """The database stayed locked past the busy timeout."""


class DatabaseReplaced(DatabaseError):
    """The SQLite file a process has open was deleted or replaced at its path."""


class SchemaMismatch(DatabaseError):
    """The schema is older than this version, or newer and not compatible."""


class CannotListen(UsageError):
    """`--listen` names an address this node cannot serve (taken, not ours, privileged)."""

"""The only place with SQL. `open_store` picks the backend from the `--db` rules.

A plain path or `sqlite:///relative` / `sqlite:////absolute` is SQLite;
`postgresql://…` or `postgres://…` is PostgreSQL. With neither `--db` nor
`OCTONODES_DB`, the default SQLite file in the user's data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from .base import Clock, Store

__all__ = ["Store", "open_store", "resolve_db", "default_db_path"]

ENV_DB = "OCTONODES_DB"


def default_db_path() -> Path:
    """`$XDG_DATA_HOME/octonodes/octonodes.db`, by default under `~/.local/share`."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "octonodes" / "octonodes.db"


def resolve_db(db: str | None) -> tuple[str, str]:
    """(`sqlite` or `postgresql`, file path or URL) from `--db`, the environment
    or the default."""
    target = db or os.environ.get(ENV_DB) or ""
    if not target:
        return "sqlite", str(default_db_path())
    if target.startswith(("postgresql://", "postgres://")):
        return "postgresql", target
    if target.startswith("sqlite:"):
        rest = target[len("sqlite:"):]
        if not rest.startswith("///") or len(rest) == 3:
            raise UsageError(
                f"invalid database URL {target!r}: write sqlite:///relative/path "
                "or sqlite:////absolute/path"
            )
        return "sqlite", rest[3:]
    if "://" in target:
        raise UsageError(
            f"unsupported database {target!r}: use a file path, sqlite:///path or postgresql://…"
        )
    return "sqlite", target


def open_store(db: str | None = None, *, create: bool = False, clock: Clock | None = None,
               busy_timeout: float | None = None, application_name: str | None = None) -> Store:
    """Open the cluster's database. Only `create=True` (used by `init` and
    `node run`) makes a new one, and then leaves the schema to the caller
    (`initialize()` or `prepare_for_node()`); otherwise a missing database
    raises DatabaseMissing, nothing is left behind, and the schema is checked.
    `application_name` labels PostgreSQL connections for the server's
    `pg_stat_activity` (default `octonodes`)."""
    kind, target = resolve_db(db)
    if kind == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(target, create=create, clock=clock,
                             application_name=application_name)
    from .sqlite import SQLiteStore

    kwargs = {} if busy_timeout is None else {"busy_timeout": busy_timeout}
    return SQLiteStore(target, create=create, clock=clock, **kwargs)

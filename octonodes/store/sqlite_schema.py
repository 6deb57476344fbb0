"""The SQLite schema, made with sqlite-utils, one migration per version.

Times are REAL seconds since the epoch (UTC), so comparisons are plain
arithmetic and keep sub-second precision.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlite-utils is imported by `migrate`, not by every command
    import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["nodes"].create(
        {
            "name": str, "task_cap": int, "drain": int, "shutting_down": int,
            "last_seen": float, "started_at": float, "stopped_at": float,
            "version": str, "host": str, "pid": int, "http_address": str,
            "heartbeat_interval": float, "instance_id": str,
        },
        pk="name",
        not_null={"task_cap", "drain", "shutting_down"},
        defaults={"drain": 0, "shutting_down": 0},
    )
    # AUTOINCREMENT: ids keep increasing even after old tasks are pruned.
    db.execute(
        """CREATE TABLE tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            command TEXT NOT NULL,
            state TEXT NOT NULL,
            node TEXT,
            instance_id TEXT,
            queued_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            exit_code INTEGER,
            error TEXT,
            timeout REAL,
            queue_timeout REAL,
            retries INTEGER NOT NULL DEFAULT 0,
            attempt INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db["tasks"].create_index(["state", "id"], index_name="tasks_state_id")
    db["tasks"].create_index(["node", "state"], index_name="tasks_node_state")
    db["tasks"].create_index(["finished_at"], index_name="tasks_finished_at")
    db["task_logs"].create(
        {"task_id": int, "seq": int, "data": bytes}, pk=("task_id", "seq")
    )


def _v2(db: sqlite_utils.Database) -> None:
    # API keys for the nodes' HTTP API: only a hash of each key is kept.
    # Additive, so code at schema version 1 can keep using the database.
    db.execute(
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            revoked_at REAL
        )"""
    )


def _v3(db: sqlite_utils.Database) -> None:
    # Roles on API keys, drain reasons, and the audit trail. Additive, so
    # code at schema version 1 or 2 can keep using the database during a
    # rolling upgrade (docs/access.md says what it then does not do).
    # Keys made before roles existed could do everything: they become admin.
    db.execute("ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'")
    db.execute("ALTER TABLE api_keys ADD COLUMN last_used_at REAL")
    for column in ("drain_reason TEXT", "drained_by TEXT", "drained_at REAL",
                   "lost_instance TEXT"):
        db.execute(f"ALTER TABLE nodes ADD COLUMN {column}")
    # AUTOINCREMENT: event ids keep increasing after old events age out.
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            node TEXT,
            task_first INTEGER,
            task_last INTEGER,
            details TEXT NOT NULL DEFAULT '{}',
            reason TEXT
        )"""
    )
    db.execute("CREATE INDEX events_at ON events (at)")
    db.execute("CREATE INDEX events_node ON events (node, id)")
    db.execute("CREATE INDEX events_task ON events (task_first, task_last)")


def _v4(db: sqlite_utils.Database) -> None:
    # Sessions of the web page, by the hash of their token (the cookie's).
    # Additive, so code at schema version 1 to 3 can keep using the database.
    db.execute(
        """CREATE TABLE web_sessions (
            token_hash TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL NOT NULL,
            ended_at REAL
        )"""
    )


MIGRATIONS = {1: _v1, 2: _v2, 3: _v3, 4: _v4}
SCHEMA_VERSION = max(MIGRATIONS)
"""The version this code writes and needs."""
MIN_COMPATIBLE = {1: 1, 2: 1, 3: 1, 4: 1}
"""For each schema version, the oldest code schema version that can use it."""


def migrate(conn: sqlite3.Connection, current: int | None) -> int:
    """Apply the migrations after `current` inside the caller's transaction."""
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for version in range(1 + (current or 0), SCHEMA_VERSION + 1):
        MIGRATIONS[version](db)
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [("schema_version", str(SCHEMA_VERSION)),
         ("min_compatible", str(MIN_COMPATIBLE[SCHEMA_VERSION]))],
    )
    return SCHEMA_VERSION

"""The PostgreSQL schema, one migration per version.

Everything lives in the connection's `current_schema()`, so one database can
hold several clusters (or one fresh schema per test). Times are `timestamptz`
with microsecond precision; durations are seconds (`double precision`), as in
the SQLite schema. Columns are always named in queries, never `SELECT *`, so
an additive migration does not break the prepared statements of older nodes
still running during a rolling upgrade.

Plain SQL only: `postgres.py` runs it, so this file needs no driver.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import SCHEMA_VERSION

TABLES = ("meta", "settings", "nodes", "tasks", "task_logs", "api_keys")
"""The tables octonodes owns in its schema."""

_V1 = [
    """CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE settings (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE nodes (
        name text PRIMARY KEY,
        task_cap integer NOT NULL,
        drain boolean NOT NULL DEFAULT false,
        shutting_down boolean NOT NULL DEFAULT false,
        last_seen timestamptz,
        started_at timestamptz,
        stopped_at timestamptz,
        version text,
        host text,
        pid integer,
        http_address text,
        heartbeat_interval double precision,
        instance_id text
    )""",
    # An identity never hands out an id twice, even after old tasks are pruned.
    """CREATE TABLE tasks (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        command text[] NOT NULL,
        state text NOT NULL,
        node text,
        instance_id text,
        queued_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        exit_code integer,
        error text,
        timeout double precision,
        queue_timeout double precision,
        retries integer NOT NULL DEFAULT 0,
        attempt integer NOT NULL DEFAULT 0
    )""",
    # A claim takes the oldest queued tasks from an index, never scanning the
    # queue or the history. The partial index holds only queued tasks, so the
    # planner prefers it whatever the statistics say about the table.
    "CREATE INDEX tasks_state_id ON tasks (state, id)",
    "CREATE INDEX tasks_queued ON tasks (id) WHERE state = 'Queued'",
    "CREATE INDEX tasks_node_state ON tasks (node, state)",
    "CREATE INDEX tasks_finished_at ON tasks (finished_at)",
    """CREATE TABLE task_logs (
        task_id bigint NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (task_id, seq)
    )""",
]

# API keys for the nodes' HTTP API: only a hash of each key is kept.
# Additive, so code at schema version 1 can keep using the database.
_V2 = [
    """CREATE TABLE api_keys (
        name text PRIMARY KEY,
        key_hash text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz
    )""",
]

MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2}
MIN_COMPATIBLE = {1: 1, 2: 1}
"""For each schema version, the oldest code schema version that can use it."""


def migrate(execute: Callable[..., Any], current: int | None) -> int:
    """Apply the migrations after `current` through `execute(sql, params)`,
    inside the caller's transaction (PostgreSQL DDL is transactional, so an
    upgrade applies whole or not at all)."""
    for version in range(1 + (current or 0), SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            execute(statement)
    for key, value in (("schema_version", SCHEMA_VERSION),
                       ("min_compatible", MIN_COMPATIBLE[SCHEMA_VERSION])):
        execute(
            """INSERT INTO meta (key, value) VALUES (%s, %s)
               ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
            (key, str(value)),
        )
    return SCHEMA_VERSION

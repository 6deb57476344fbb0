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

from ..settings import SETTINGS, parse_duration
from .common import offline_sql

TABLES = ("meta", "settings", "nodes", "tasks", "task_logs", "api_keys", "events",
          "web_sessions")
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

REGISTERING_LOCK, WAITING_LOCK = 0x6F63746F, 0x6F637470
"""First keys of the two advisory locks (two-key form; the second key is
`hashtext` of the schema's task-ends channel) by which a batch knows whether
a command waits for task ends:

- waiting: held shared, for its session, by the listener of every command
  that waits for task ends (`postgres_listen`);
- registering: held exclusively by such a listener while it takes
  `waiting`, which it gets once every batch in flight (holding it shared
  until it commits) is done.

A batch announces its ends unless it holds `registering` shared and can
take `waiting` itself, for a moment: then nobody waits, and whoever comes
next reads what it committed."""

SECONDS = " * interval '1 second'"
"""What turns a number of seconds into an interval in PostgreSQL's SQL."""


def _parse_seconds(text: str, seconds: str, key: str) -> str:
    """PL/pgSQL that sets the variable `seconds` to the duration setting
    `key` whose stored spelling (`90`, `90s`, `5m`, `2h`, `1d`; NULL when
    unset) is in the variable `text`. As in Python
    (`settings.ClusterSettings.from_stored`), a value that is unset, does not
    parse or lies outside the setting's range counts as its default, so no
    hand-written value can make the statement fail. Assignments of plain
    expressions, each evaluated once."""
    setting = SETTINGS[key]
    units = " ".join(f"WHEN '{unit}' THEN {parse_duration('1' + unit):g}" for unit in "smhd")
    return f"""{text} := regexp_replace({text}, '\\s', '', 'g');
            {seconds} := CASE WHEN {text} ~ '^[0-9]{{1,15}}(\\.[0-9]{{1,9}})?[smhd]?$'
                THEN rtrim({text}, 'smhd')::float8 * CASE right({text}, 1) {units} ELSE 1 END
                END;
            IF {seconds} IS NULL OR NOT {seconds} BETWEEN {setting.low:g} AND {setting.high:g} THEN
                {seconds} := {parse_duration(setting.default):g};
            END IF;"""


def _read_offline_after() -> str:
    """PL/pgSQL that sets `offline_after_` to the offline_after setting as the
    nodes read it: the two settings the rule needs in one query, then it and
    heartbeat_interval each as `_parse_seconds` reads them, and offline_after
    as its default unless it exceeds twice heartbeat_interval."""
    default = parse_duration(SETTINGS["offline_after"].default)
    return f"""SELECT max(s.value) FILTER (WHERE s.key = 'offline_after'),
                   max(s.value) FILTER (WHERE s.key = 'heartbeat_interval')
                INTO offline_text, heartbeat_text
                FROM settings s WHERE s.key IN ('offline_after', 'heartbeat_interval');
            {_parse_seconds("offline_text", "offline_after_", "offline_after")}
            {_parse_seconds("heartbeat_text", "heartbeat_", "heartbeat_interval")}
            IF NOT offline_after_ > 2 * heartbeat_ THEN
                offline_after_ := {default:g};
            END IF;"""


_OFFLINE_AT_CLAIM = offline_sql("now_", "offline_after_", greatest="greatest", seconds=SECONDS)


# What a busy node does after each batch of task ends, as one statement (one
# message to the server, answered in one, with plans the server keeps per
# connection): lock its row, append output, record ends, claim, and announce
# the ends if someone waits for them. Each step sees what the ones before it
# wrote. Every schema version that changes the function re-creates it whole
# (CREATE OR REPLACE, same arguments: a change of arguments needs a new name),
# so a database upgraded from any older version ends with this text.
_EXCHANGE = f"""CREATE OR REPLACE FUNCTION octonodes_exchange(
        node_name text, instance text, at timestamptz,
        end_ids bigint[], end_attempts integer[], end_states text[], end_codes integer[],
        end_errors text[],
        log_ids bigint[], log_attempts integer[], log_data bytea[],
        claim_limit integer, ends_channel text)
    RETURNS TABLE (ended boolean, id bigint, name text, command text[], state text, node text,
        instance_id text, queued_at timestamptz, started_at timestamptz,
        finished_at timestamptz, exit_code integer, error text, timeout double precision,
        queue_timeout double precision, retries integer, attempt integer)
    LANGUAGE plpgsql
    -- Each statement below is planned once a connection, not at every call
    -- (planning them each time was a quarter of the call), and goes by an
    -- index whatever the table's size when it was planned: a plan made
    -- while `tasks` was young would otherwise scan the whole table for the
    -- rest of the connection's life.
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    AS $fn$
    #variable_conflict use_column
    DECLARE
        now_ timestamptz := coalesce(at, now());
        ended_some boolean := false;
        waiters_key integer;
        nobody_waits boolean;
        offline_text text;
        heartbeat_text text;
        offline_after_ double precision;
        heartbeat_ double precision;
    BEGIN
        -- A claim locks the node's row first, as a drain or a delete does:
        -- locks always taken in the same order cannot deadlock.
        IF claim_limit > 0 THEN
            PERFORM 1 FROM nodes WHERE nodes.name = node_name AND nodes.instance_id = instance
                FOR UPDATE;
        END IF;
        -- Output goes after what each task has, while the task is still
        -- ours; the task's row lock keeps the numbering safe.
        IF cardinality(log_ids) > 0 THEN
            INSERT INTO task_logs (task_id, seq, data)
            SELECT t.id, coalesce((SELECT max(l.seq) FROM task_logs l WHERE l.task_id = t.id), 0)
                    + c.n, c.data
            FROM (SELECT u.task_id, u.attempt, u.data,
                         row_number() OVER (PARTITION BY u.task_id ORDER BY u.ord) AS n
                  FROM unnest(log_ids, log_attempts, log_data)
                      WITH ORDINALITY AS u(task_id, attempt, data, ord)) AS c
            JOIN (SELECT tasks.id, tasks.attempt FROM tasks
                  WHERE tasks.id = ANY(log_ids) AND tasks.instance_id = instance
                  AND tasks.state IN ('Executing', 'Cancelling')
                  FOR NO KEY UPDATE) AS t ON t.id = c.task_id AND t.attempt = c.attempt;
        END IF;
        -- Ends, by the primary key whatever the planner's statistics say: on
        -- a young table, before autovacuum has analysed it, the planner would
        -- take a state index and read every dead entry of a thousand tasks
        -- ended seconds ago. Hence `id = ANY`, and the state test written so
        -- that no index serves it (`IS TRUE`).
        IF cardinality(end_ids) > 0 THEN
            RETURN QUERY
            UPDATE tasks SET state = f.state, exit_code = f.exit_code, error = f.error,
                finished_at = now_
            FROM unnest(end_ids, end_attempts, end_states, end_codes, end_errors)
                AS f(id, attempt, state, exit_code, error)
            WHERE tasks.id = ANY(end_ids) AND tasks.id = f.id AND tasks.instance_id = instance
            AND tasks.attempt = f.attempt AND (tasks.state IN ('Executing', 'Cancelling')) IS TRUE
            RETURNING true, tasks.id, NULL::text, NULL::text[], NULL::text, NULL::text, NULL::text,
                NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::integer,
                NULL::text, NULL::double precision, NULL::double precision, NULL::integer,
                NULL::integer;
            ended_some := FOUND;
        END IF;
        -- The claim reads the node's room from its row (locked above, so any
        -- drain, cap change or other claim committed before is seen): none
        -- when it is drained, stopping or offline (`offline_sql`, with
        -- offline_after read from the settings once, as the nodes read it);
        -- else its cap less what runs on it, and at most what the node asked
        -- for. What runs is counted one state at a time, so both columns of
        -- (node, state) bound the index scan. The rows `picked` locked are
        -- queued and stay so until this commits: the update finds them by id
        -- alone.
        IF claim_limit > 0 THEN
            {_read_offline_after()}
            RETURN QUERY
            WITH room AS (
                SELECT CASE WHEN n.drain OR n.shutting_down
                            OR {_OFFLINE_AT_CLAIM}
                       THEN 0
                       ELSE least(claim_limit, n.task_cap
                            - (SELECT count(*) FROM tasks r
                               WHERE r.node = n.name AND r.state = 'Executing')
                            - (SELECT count(*) FROM tasks r
                               WHERE r.node = n.name AND r.state = 'Cancelling'))
                       END AS free
                FROM nodes n WHERE n.name = node_name AND n.instance_id = instance),
            picked AS MATERIALIZED (
                SELECT q.id FROM tasks q WHERE q.state = 'Queued' ORDER BY q.id
                LIMIT (SELECT greatest(0, coalesce(max(room.free), 0)) FROM room)
                FOR UPDATE SKIP LOCKED)
            UPDATE tasks SET state = 'Executing', node = node_name, instance_id = instance,
                started_at = now_, attempt = tasks.attempt + 1, exit_code = NULL
            WHERE tasks.id = ANY(ARRAY(SELECT picked.id FROM picked))
            RETURNING false, tasks.id, tasks.name, tasks.command, tasks.state, tasks.node,
                tasks.instance_id, tasks.queued_at, tasks.started_at, tasks.finished_at,
                tasks.exit_code, tasks.error, tasks.timeout, tasks.queue_timeout, tasks.retries,
                tasks.attempt;
        END IF;
        -- Ends are announced only while a command waits for them
        -- (REGISTERING_LOCK above), and last: a NOTIFY holds a lock that
        -- serialises every notifying commit on the server, fsync included,
        -- and wakes every listening session. One step at a time, as SQL
        -- promises no order for the operands of AND: `waiting` is a
        -- session's lock, which a rollback would not release.
        IF ended_some THEN
            waiters_key := hashtext(ends_channel);
            nobody_waits := pg_try_advisory_xact_lock_shared({REGISTERING_LOCK}, waiters_key);
            IF nobody_waits THEN
                nobody_waits := pg_try_advisory_lock({WAITING_LOCK}, waiters_key);
                IF nobody_waits THEN
                    PERFORM pg_advisory_unlock({WAITING_LOCK}, waiters_key);
                END IF;
            END IF;
            IF NOT nobody_waits THEN
                PERFORM pg_notify(ends_channel, 'end');
            END IF;
        END IF;
    END
    $fn$"""

_V3 = [_EXCHANGE]
_V4 = [_EXCHANGE]  # ends announced only while someone waits for them

# Roles on API keys, drain reasons, and the audit trail. Additive, so code
# at schema version 1 to 4 can keep using the database during a rolling
# upgrade (docs/access.md says what it then does not do). Keys made before
# roles existed could do everything: they become admin.
_V5 = [
    "ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'admin'",
    "ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz",
    """ALTER TABLE nodes ADD COLUMN drain_reason text, ADD COLUMN drained_by text,
        ADD COLUMN drained_at timestamptz, ADD COLUMN lost_instance text""",
    # An identity never hands out an id twice, even after old events age out.
    """CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        target text NOT NULL,
        node text,
        task_first bigint,
        task_last bigint,
        details jsonb NOT NULL DEFAULT '{}',
        reason text
    )""",
    "CREATE INDEX events_at ON events (at)",
    "CREATE INDEX events_node ON events (node, id)",
    "CREATE INDEX events_task ON events (task_first, task_last)",
]

# Sessions of the web page, by the hash of their token (the cookie's).
# Additive, so code at schema version 1 to 5 can keep using the database.
_V6 = [
    """CREATE TABLE web_sessions (
        token_hash text PRIMARY KEY,
        key_name text NOT NULL,
        created_at timestamptz NOT NULL,
        last_used_at timestamptz NOT NULL,
        ended_at timestamptz
    )""",
]

# The exchange reads a stored offline_after that does not parse or is out of
# range as its default, as the nodes do.
_V7 = [_EXCHANGE]

# ... and an offline_after that does not exceed twice heartbeat_interval as
# its default, as the nodes do; it reads the settings once a claim (the
# expression before read the row nine times, once for each place the
# planner copied it to).
_V8 = [_EXCHANGE]

MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6, 7: _V7,
                                    8: _V8}
SCHEMA_VERSION = max(MIGRATIONS)
"""The version this code writes and needs."""
MIN_COMPATIBLE = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}
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

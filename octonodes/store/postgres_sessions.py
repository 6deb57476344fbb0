"""The web page's sessions in PostgreSQL (see `octonodes.sessions`)."""

from __future__ import annotations

import secrets

from .base import ApiKey

SECRET_KEY = "web_secret"
"""The `meta` row holding the key that signs session cookies."""
NOW_SQL = "coalesce(%s::timestamptz, now())"


class PostgresSessions:
    """Mixed into `PostgresStore`: uses its `_write`, `_cursor`, `_injected` and `_api_key`."""

    def _key_columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{c.strip()}" for c in self._KEY_COLUMNS.split(","))

    def web_secret(self) -> str:
        with self._write() as cur:
            cur.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                        (SECRET_KEY, secrets.token_hex(32)))
            return cur.execute("SELECT value FROM meta WHERE key = %s",
                               (SECRET_KEY,)).fetchone()["value"]

    def add_web_session(self, token_hash: str, key_name: str, idle_limit: float) -> None:
        now = self._injected()
        with self._write() as cur:
            cur.execute(f"""DELETE FROM web_sessions WHERE ended_at IS NOT NULL
                            OR last_used_at < {NOW_SQL} - make_interval(secs => %s)""",
                        (now, idle_limit))
            cur.execute(f"""INSERT INTO web_sessions (token_hash, key_name, created_at, last_used_at)
                            VALUES (%s, %s, {NOW_SQL}, {NOW_SQL})""",
                        (token_hash, key_name, now, now))

    def web_session(self, token_hash: str, idle_limit: float,
                    touch_after: float | None) -> ApiKey | None:
        now = self._injected()
        with self._cursor() as cur:
            row = cur.execute(
                f"""SELECT {NOW_SQL} - s.last_used_at > make_interval(secs => %s) AS stale,
                       {self._key_columns('k')}
                   FROM web_sessions s JOIN api_keys k ON k.name = s.key_name
                   WHERE s.token_hash = %s AND s.ended_at IS NULL AND k.revoked_at IS NULL
                   AND s.last_used_at >= {NOW_SQL} - make_interval(secs => %s)""",
                (now, touch_after or 0, token_hash, now, idle_limit)).fetchone()
            if row is None:
                return None
            if touch_after is not None and row["stale"]:
                cur.execute(f"UPDATE web_sessions SET last_used_at = {NOW_SQL} WHERE token_hash = %s",
                            (now, token_hash))
        return self._api_key(row)

    def end_web_session(self, token_hash: str) -> bool:
        with self._write() as cur:
            return cur.execute(
                f"""UPDATE web_sessions SET ended_at = {NOW_SQL}
                    WHERE token_hash = %s AND ended_at IS NULL""",
                (self._injected(), token_hash)).rowcount > 0

"""The web page's sessions (see `octonodes.sessions`), in the statements
both SQL backends share (`sql_backend.SqlBackend` says what each backend
provides)."""

from __future__ import annotations

import secrets
from typing import Callable, Mapping

from .records import ApiKey
from .sql_access import KEY_COLUMNS
from .sql_backend import SqlBackend

SECRET_KEY = "web_secret"
"""The `meta` row holding the key that signs session cookies."""
SESSION_KEY_COLUMNS = ", ".join(f"k.{c.strip()}" for c in KEY_COLUMNS.split(","))


class SqlSessions(SqlBackend):
    """Sessions by the hash of their token, each tied to an API key."""

    _api_key: Callable[[Mapping], ApiKey]
    """`SqlAccess` reads a key's row."""

    def web_secret(self) -> str:
        P = self.P
        with self._write() as cx:
            cx.execute(f"""INSERT INTO meta (key, value) VALUES ({P}, {P})
                           ON CONFLICT (key) DO NOTHING""", (SECRET_KEY, secrets.token_hex(32)))
            rows = self._rows(cx, f"SELECT value FROM meta WHERE key = {P}", (SECRET_KEY,))
            return rows[0]["value"]

    def add_web_session(self, token_hash: str, key_name: str, idle_limit: float) -> None:
        P, NOW = self.P, self.NOW
        with self._write() as cx:
            cx.execute(f"""DELETE FROM web_sessions WHERE ended_at IS NOT NULL
                           OR last_used_at < {NOW} - {P}{self.SECONDS}""",
                       (self._now_arg(), idle_limit))
            cx.execute(f"""INSERT INTO web_sessions
                           (token_hash, key_name, created_at, last_used_at)
                           VALUES ({P}, {P}, {NOW}, {NOW})""",
                       (token_hash, key_name, self._now_arg(), self._now_arg()))

    def web_session(self, token_hash: str, idle_limit: float,
                    touch_after: float | None) -> ApiKey | None:
        P, NOW, SECONDS = self.P, self.NOW, self.SECONDS
        with self._reading() as cx:
            rows = self._rows(
                cx, f"""SELECT s.last_used_at < {NOW} - {P}{SECONDS} AS stale,
                            {SESSION_KEY_COLUMNS}
                        FROM web_sessions s JOIN api_keys k ON k.name = s.key_name
                        WHERE s.token_hash = {P} AND s.ended_at IS NULL AND k.revoked_at IS NULL
                        AND s.last_used_at >= {NOW} - {P}{SECONDS}""",
                (self._now_arg(), touch_after or 0, token_hash, self._now_arg(), idle_limit))
        if not rows:
            return None
        if touch_after is not None and rows[0]["stale"]:
            with self._write() as cx:
                cx.execute(f"UPDATE web_sessions SET last_used_at = {NOW} WHERE token_hash = {P}",
                           (self._now_arg(), token_hash))
        return self._api_key(rows[0])

    def end_web_session(self, token_hash: str) -> bool:
        P = self.P
        with self._write() as cx:
            return cx.execute(
                f"""UPDATE web_sessions SET ended_at = {self.NOW}
                    WHERE token_hash = {P} AND ended_at IS NULL""",
                (self._now_arg(), token_hash)).rowcount > 0

"""The web page's sessions in SQLite (see `octonodes.sessions`)."""

from __future__ import annotations

import secrets

from .base import ApiKey

SECRET_KEY = "web_secret"
"""The `meta` row holding the key that signs session cookies."""


class SQLiteSessions:
    """Mixed into `SQLiteStore`: uses its `_write`, `_read`, `now` and `_api_key`."""

    def _key_columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{c.strip()}" for c in self._KEY_COLUMNS.split(","))

    def web_secret(self) -> str:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                         (SECRET_KEY, secrets.token_hex(32)))
            return conn.execute("SELECT value FROM meta WHERE key = ?", (SECRET_KEY,)).fetchone()[0]

    def add_web_session(self, token_hash: str, key_name: str, idle_limit: float) -> None:
        now = self.now().timestamp()
        with self._write() as conn:
            conn.execute("DELETE FROM web_sessions WHERE ended_at IS NOT NULL OR last_used_at < ?",
                         (now - idle_limit,))
            conn.execute("""INSERT INTO web_sessions (token_hash, key_name, created_at, last_used_at)
                            VALUES (?, ?, ?, ?)""", (token_hash, key_name, now, now))

    def web_session(self, token_hash: str, idle_limit: float,
                    touch_after: float | None) -> ApiKey | None:
        now = self.now().timestamp()
        with self._read() as conn:
            row = conn.execute(
                f"""SELECT s.last_used_at, {self._key_columns('k')}
                   FROM web_sessions s JOIN api_keys k ON k.name = s.key_name
                   WHERE s.token_hash = ? AND s.ended_at IS NULL AND k.revoked_at IS NULL
                   AND s.last_used_at >= ?""", (token_hash, now - idle_limit)).fetchone()
        if row is None:
            return None
        if touch_after is not None and now - row[0] > touch_after:
            with self._write() as conn:
                conn.execute("UPDATE web_sessions SET last_used_at = ? WHERE token_hash = ?",
                             (now, token_hash))
        return self._api_key(row[1:])

    def end_web_session(self, token_hash: str) -> bool:
        with self._write() as conn:
            return conn.execute(
                "UPDATE web_sessions SET ended_at = ? WHERE token_hash = ? AND ended_at IS NULL",
                (self.now().timestamp(), token_hash)).rowcount > 0

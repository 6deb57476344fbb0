"""API keys and the audit trail, in the statements both SQL backends share
(`sql_backend.SqlBackend` says what each backend provides)."""

from __future__ import annotations

from typing import Callable, Mapping

from .. import audit
from ..audit import Action, Change, Event, EventFilter
from ..errors import NotFound, Refused
from ..roles import Role
from . import audit_sql
from .records import ApiKey
from .sql_backend import SqlBackend

KEY_COLUMNS = "name, created_at, revoked_at, role, last_used_at"


class SqlAccess(SqlBackend):
    """Who may use the cluster over HTTP, and what was done to it."""

    # -- API keys -------------------------------------------------------------

    def _api_key(self, row: Mapping) -> ApiKey:
        return ApiKey(name=row["name"], created_at=self._time(row["created_at"]),
                      revoked_at=self._time(row["revoked_at"]), role=Role(row["role"]),
                      last_used_at=self._time(row["last_used_at"]))

    def add_api_key(self, name: str, key_hash: str, role: Role = Role.VIEWER,
                    change: Change | None = None) -> ApiKey:
        P = self.P
        with self._write() as cx:
            row = self._rows(
                cx, f"""INSERT INTO api_keys (name, key_hash, created_at, role)
                        VALUES ({P}, {P}, {self.NOW}, {P})
                        ON CONFLICT (name) DO NOTHING RETURNING {KEY_COLUMNS}""",
                (name, key_hash, self._now_arg(), str(role)))
            if not row:
                raise Refused(f"an API key named {name!r} already exists; choose another name")
            self._event(cx, change or audit.change(None), Action.APIKEY_ADD, name,
                        details={"role": str(role)})
            return self._api_key(row[0])

    def api_keys(self) -> list[ApiKey]:
        with self._reading() as cx:
            return [self._api_key(r) for r in self._rows(
                cx, f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name")]

    def revoke_api_key(self, name: str, change: Change | None = None) -> bool:
        P = self.P
        with self._write() as cx:
            row = self._rows(cx, f"SELECT revoked_at, role FROM api_keys WHERE name = {P}"
                                 f"{self.FOR_UPDATE}", (name,))
            if not row:
                raise NotFound(f"no API key named {name!r}")
            if row[0]["revoked_at"] is not None:
                return False
            cx.execute(f"UPDATE api_keys SET revoked_at = {self.NOW} WHERE name = {P}",
                       (self._now_arg(), name))
            self._event(cx, change or audit.change(None), Action.APIKEY_REVOKE, name,
                        details={"role": row[0]["role"]})
            return True

    def api_key_by_hash(self, *key_hashes: str) -> ApiKey | None:
        with self._reading() as cx:
            row = self._rows(cx, f"""SELECT {KEY_COLUMNS} FROM api_keys
                                     WHERE key_hash IN ({', '.join([self.P] * len(key_hashes))})""",
                             key_hashes)
        return self._api_key(row[0]) if row else None

    def note_api_key_use(self, name: str, precision: float) -> None:
        P, NOW = self.P, self.NOW
        with self._write() as cx:
            cx.execute(
                f"""UPDATE api_keys SET last_used_at = {NOW} WHERE name = {P}
                    AND (last_used_at IS NULL OR last_used_at < {NOW} - {P}{self.SECONDS})""",
                (self._now_arg(), name, self._now_arg(), precision))

    # -- the audit trail ------------------------------------------------------

    def events(self, where: EventFilter) -> list[Event]:
        sql, args = audit_sql.select(self.P, where, self._stored_time,
                                     self.CONTAINS.format("actor"))
        with self._reading() as cx:
            rows = self._rows(cx, sql, args)
        return audit_sql.keep([audit_sql.event(r, self._time(r["at"])) for r in rows], where)

    def count_events(self, where: EventFilter) -> int:
        sql, args = audit_sql.count(self.P, where, self._stored_time,
                                    self.CONTAINS.format("actor"))
        with self._reading() as cx:
            return self._rows(cx, sql, args)[0]["n"]

    def record(self, change: Change, action: Action, target: str, *,
               during: Callable[[], None] | None = None, **fields) -> None:
        with self._write() as cx:
            self._event(cx, change, action, target, **fields)
            if during is not None:
                during()

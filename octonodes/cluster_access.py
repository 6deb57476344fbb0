"""`Cluster`'s API keys, web sessions and audit trail (see cluster.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from . import audit
from .audit import Action, Event, EventFilter
from .errors import DatabaseError, NotFound, UsageError
from .models import validate_name, validate_seconds, validate_text
from .roles import Role, parse_role
from .settings import MAX_TASK_ID
from .store import Store
from .store.base import LAST_USE_PRECISION, ApiKey

if TYPE_CHECKING:
    from .sessions import Sessions

FOLLOW_LOOK_BACK = 1000
"""Event ids `follow_events` reads again (see there)."""


class ClusterAccess:
    """Who may use the nodes' HTTP API and web page, and what everyone did:
    part of `Cluster`, which gives it `store` and `_pause`."""

    store: Store
    _pause: Callable[[float | None, float], None]
    _sessions: "Sessions | None" = None

    # -- API keys -----------------------------------------------------------

    def add_api_key(self, name: str, role: Role | str = Role.VIEWER, *,
                    actor: str | None = None) -> tuple[ApiKey, str]:
        """Make a new API key with `role`; returns its record and the key
        itself, which is never stored (only its hash) and cannot be shown again."""
        from .apikeys import generate_key, hash_key, validate_key_name

        name, role = validate_key_name(name), parse_role(role)
        change = audit.change(actor)
        key = generate_key()
        return self.store.add_api_key(name, hash_key(key), role, change), key

    def api_keys(self) -> list[ApiKey]:
        """Every key's record (name, role, created, last used, revoked), revoked ones too."""
        return self.store.api_keys()

    def revoke_api_key(self, name: str, *, actor: str | None = None) -> bool:
        """Revoke a key at once; True if it was active. NotFound for an unknown name."""
        from .apikeys import validate_key_name

        return self.store.revoke_api_key(validate_key_name(name), audit.change(actor))

    def verify_api_key(self, key: str) -> ApiKey | None:
        """The record (name, role) of an active key; None for a malformed,
        unknown or revoked one. Looked up at every call, so a revocation
        holds from its commit. Notes the key's last use (once a minute)."""
        from .apikeys import hash_key, legacy_hash, well_formed

        if not well_formed(key):
            return None
        found = self.store.api_key_by_hash(hash_key(key), legacy_hash(key))
        if found is None or found.revoked:
            return None
        now = self.store.now()
        if found.last_used_at is None or \
                (now - found.last_used_at).total_seconds() >= LAST_USE_PRECISION:
            try:
                self.store.note_api_key_use(found.name, LAST_USE_PRECISION)
            except DatabaseError:
                pass  # a busy database must not refuse the request: the note is a courtesy
        return found

    def sessions(self) -> "Sessions":
        """The web page's sessions (sign-in, checks, sign-out)."""
        from .sessions import Sessions

        if self._sessions is None:
            self._sessions = Sessions(self.store)
        return self._sessions

    # -- the audit trail ----------------------------------------------------

    def events(self, *, node: str | None = None, task: int | None = None,
               actions: Iterable[Action | str] = (), actor: str | None = None,
               since: datetime | float | None = None, after_id: int | None = None,
               limit: int | None = 50) -> list[Event]:
        """Audit events, newest first. `since` is a time, or seconds before now;
        `actor` matches any part of the actor, ignoring case."""
        if limit is not None and limit < 1:
            raise UsageError(f"invalid limit {limit!r}: it must be 1 or more")
        if isinstance(since, (int, float)):
            since = self.store.now() - timedelta(seconds=validate_seconds("since", since))
        validate_text("actor", actor)
        where = EventFilter(
            node=validate_name(node) if node is not None else None, task=task,
            actions=tuple(audit.parse_action(a) for a in actions), actor=actor or None,
            since=since, after_id=after_id, limit=limit)
        return self.store.events(where)

    def event_page(self, *, node: str | None = None, task: int | None = None,
                   actor: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, skip: int = 0,
                   take: int = 30) -> tuple[int, list[Event]]:
        """How many events match, and `take` of them after the first `skip`,
        newest first (the REST API's paged listing)."""
        if skip < 0 or take < 0:
            raise UsageError(f"invalid skip {skip!r} or take {take!r}: they must be 0 or more")
        validate_text("actor", actor)
        where = EventFilter(node=validate_name(node) if node is not None else None, task=task,
                            actor=actor or None, since=since, until=until, limit=take,
                            offset=skip)
        if task is not None:  # a batch's ids may skip the task: only reading them tells
            every = self.store.events(replace(where, limit=None, offset=0))
            return len(every), every[skip:skip + take]
        return self.store.count_events(where), self.store.events(where) if take else []

    def event(self, event_id: int) -> Event:
        """One event; NotFound if there is none with that id (or it aged out)."""
        # Ids are 64-bit integers, from 1; the read names event_id + 1, which must be one too.
        if not 0 < event_id < MAX_TASK_ID:
            raise NotFound(f"no event with id {event_id}")
        found = self.store.events(EventFilter(after_id=event_id - 1, before_id=event_id + 1,
                                              limit=1))
        if not found:
            raise NotFound(f"no event with id {event_id}")
        return found[0]

    def newest_event_id(self) -> int:
        """The id of the newest event (0 when none): where following starts."""
        newest = self.store.events(EventFilter(limit=1))
        return newest[0].id if newest else 0

    def follow_events(self, after_id: int, *, poll: float = 1.0, **filters) -> Iterator[Event]:
        """The events after `after_id` that match, oldest first, as they are
        recorded, forever: woken by each commit, as `log(follow=True)` is.
        Looks back FOLLOW_LOOK_BACK ids each time, because on PostgreSQL a
        transaction may commit after another that took a later id."""
        seen: set[int] = set()
        last = after_id
        while True:
            fresh = self.events(**filters, after_id=max(after_id, last - FOLLOW_LOOK_BACK),
                                limit=None)
            for event in reversed(fresh):
                if event.id not in seen:
                    seen.add(event.id)
                    last = max(last, event.id)
                    yield event
            seen = {i for i in seen if i > last - FOLLOW_LOOK_BACK}
            self._pause(None, poll)

"""Change notifications for a SQLite file: inotify on its folder, filtered to
the database and its WAL. A commit by any process appends to the WAL, so a
node can sleep until one happens instead of polling. Linux only; elsewhere
`WalWatch.create` returns None and the node polls."""

from __future__ import annotations

from pathlib import Path


class WalWatch:
    def __init__(self, inotify, names: set[str]) -> None:
        self._inotify = inotify
        self._names = names

    @classmethod
    def create(cls, db_path: Path) -> "WalWatch | None":
        try:
            from inotify_simple import INotify, flags
        except ImportError:
            return None
        try:
            inotify = INotify(nonblocking=True)
            inotify.add_watch(str(db_path.absolute().parent),
                              flags.MODIFY | flags.CREATE | flags.MOVED_TO)
        except OSError:
            return None
        return cls(inotify, {db_path.name, db_path.name + "-wal"})

    def fileno(self) -> int:
        return self._inotify.fileno()

    def drain(self) -> bool:
        """Consume pending events; True if one concerned the database."""
        try:
            events = self._inotify.read(timeout=0)
        except (BlockingIOError, OSError):
            return False
        return any(event.name in self._names for event in events)

    def close(self) -> None:
        self._inotify.close()

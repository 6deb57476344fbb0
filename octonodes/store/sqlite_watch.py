"""Change notifications for a SQLite file: inotify on its folder. A commit
by any process appends to the WAL, so a node can sleep until one happens
instead of polling. Linux only; elsewhere
`WalWatch.create` returns None and the node polls."""

from __future__ import annotations

import os
from pathlib import Path


class WalWatch:
    def __init__(self, inotify) -> None:
        self._inotify = inotify

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
        return cls(inotify)

    def fileno(self) -> int:
        return self._inotify.fileno()

    def clear(self) -> None:
        """Consume pending events. Whether the database changed is the
        store's question (`PRAGMA data_version`): the events need no parsing."""
        fd = self._inotify.fileno()
        try:
            while os.read(fd, 65536):
                pass
        except OSError:  # BlockingIOError: nothing more
            pass

    def close(self) -> None:
        self._inotify.close()

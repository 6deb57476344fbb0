"""One upload on its way into the package store: a hidden temporary file,
written and hashed as the bytes arrive, put in place only once complete.

The bytes are copied into page-aligned blocks of WRITE_BLOCK bytes; each full
block is hashed by one thread and written by another, at the same time
(hashlib and os.write let go of the interpreter), while the next blocks
fill. WRITE_BLOCKS of them go round, so memory stays constant and `write`
waits when the disk or the hash falls behind. The file is opened with
O_DIRECT where the file system takes it: blocks go straight to the disk,
with no copy into the page cache (on a small virtual machine that copy, into
pages the host must first fault in, cost more than the rest of an upload)
and next to nothing left for the final fsync. Elsewhere the same blocks go
through the page cache.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

from .folder import (TEMP_PREFIX, Package, PackageExists, PackageFolder, PackageStoreUnavailable,
                     fsync_dir, storage_error)
from .names import OverwriteMode, PackageName

WRITE_BLOCK = 4 * 1024 * 1024
"""Bytes: an upload is hashed and written a block this size at a time."""
WRITE_BLOCKS = 3
"""Blocks per upload: one filling, the others being written and hashed."""
DIRECT_ALIGNMENT = 4096
"""O_DIRECT writes start and end on this boundary (and come from page-aligned memory)."""
O_DIRECT = getattr(os, "O_DIRECT", 0)


Journal = Callable[[bool, int, Callable[[], None]], None]
"""How a push is recorded: (replaces an existing package, size, publish)."""


class _BlockWorker:
    """A thread that does one thing to each block handed to it (hash it,
    write it), in order, and hands it back (`done`) for the writer to fill
    again. Its first error is kept (`error`); blocks after it are handed
    back untouched, so the writer never waits for ever."""

    def __init__(self, name: str, work) -> None:
        self._work = work
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            block, length = item
            if self.error is None:
                try:
                    with memoryview(block) as view:
                        self._work(view[:length])
                except BaseException as exc:  # raised again in the writer
                    self.error = exc.with_traceback(None)  # its frames hold views of the block
            self.done.put(block)

    def put(self, block: mmap.mmap, length: int) -> None:
        self._todo.put((block, length))

    def finish(self) -> None:
        """Wait until every block handed so far is done; the thread ends."""
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()


class Incoming:
    """One upload on its way in: a hidden temporary file in the store folder
    and a running SHA-256. `write` as data arrives, then `commit` (or
    `discard`, which is safe to call at any time, and again)."""

    def __init__(self, folder: PackageFolder, name: PackageName) -> None:
        self.folder = folder
        self.name = name
        self.size = 0
        self.temp = folder.path / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name.file_name}"
        try:
            folder.path.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.fd = _create(self.temp)
        except OSError as exc:
            raise storage_error(exc, folder.path, "creating a temporary file") from None
        self.digest = hashlib.sha256()
        self._hasher = _BlockWorker("sha256", self.digest.update)
        self._writer = _BlockWorker("package-writer", self._write_block)
        self._blocks = 0  # allocated so far, at most WRITE_BLOCKS
        self._block: mmap.mmap | None = None
        self._filled = 0

    def _next_block(self) -> mmap.mmap:
        if self._blocks < WRITE_BLOCKS:
            self._blocks += 1
            return mmap.mmap(-1, WRITE_BLOCK)  # page-aligned, as O_DIRECT needs
        # Both threads take blocks in the order given: the oldest comes back
        # from each, once hashed and written.
        block = self._writer.done.get()
        self._hasher.done.get()
        self._check()
        return block

    def write(self, data: bytes) -> None:
        length, done = len(data), 0
        while done < length:
            if self._block is None:
                self._block = self._next_block()
            take = min(length - done, WRITE_BLOCK - self._filled)
            if take == length:
                self._block[self._filled:self._filled + take] = data
            else:
                with memoryview(data) as view:
                    self._block[self._filled:self._filled + take] = view[done:done + take]
            self._filled += take
            done += take
            if self._filled == WRITE_BLOCK:
                self._hand_on()
        self.size += length

    def _hand_on(self) -> None:
        """The current block (full, or the last one) to both threads."""
        if not self._filled:
            return
        block, filled = self._block, self._filled
        self._block, self._filled = None, 0
        self._hasher.put(block, filled)
        self._writer.put(block, filled)

    def _write_block(self, view: memoryview) -> None:
        if len(view) % DIRECT_ALIGNMENT:
            _stop_direct(self.fd)  # the unaligned tail: through the page cache
        _write_all(self.fd, view)

    def _free_blocks(self) -> None:
        """Unmap the blocks now (once both threads are done with them),
        rather than when the garbage collector gets to this upload."""
        blocks = [self._block] if self._block is not None else []
        self._block = None
        for done in (self._writer.done, self._hasher.done):
            while not done.empty():
                blocks.append(done.get())
        for block in blocks:
            try:
                block.close()
            except BufferError:  # a view of it is still about: the collector will unmap it
                pass

    def _check(self) -> None:
        error = self._writer.error
        if isinstance(error, OSError):
            raise storage_error(error, self.folder.path, f"writing {self.name.file_name}") from None
        if error is not None:
            raise error

    def commit(self, mode: OverwriteMode, journal: Journal | None = None) -> tuple[Package, bool]:
        """Make the package visible under its name; returns it and whether
        this upload is what the store now holds (False: IgnoreIfExists kept
        the existing one). PackageExists under FailIfExists. `journal(replaces,
        size, publish)` records the push (an overwrite when `replaces`) and
        calls `publish()`, the rename that makes it visible, in the same
        transaction: if either fails, neither happens."""
        folder, name = self.folder, self.name
        final = folder.path / name.file_name
        journal = journal or (lambda replaces, size, publish: publish())
        try:
            self._hand_on()
            self._writer.finish()
            self._check()
            os.fsync(self.fd)
            st = os.fstat(self.fd)
            self._close()
            if mode is OverwriteMode.OVERWRITE_EXISTING:
                journal(os.path.lexists(final), st.st_size,
                        lambda: os.replace(self.temp, final))
            else:
                try:
                    journal(False, st.st_size, lambda: os.link(self.temp, final))
                except FileExistsError:
                    if mode is OverwriteMode.FAIL_IF_EXISTS:
                        raise PackageExists(
                            f"package {name.file_name} already exists (overwriteMode=FailIfExists)"
                        ) from None
                    existing = folder.find(name)
                    if existing is not None:
                        return existing, False
                    raise PackageStoreUnavailable(
                        f"package {name.file_name} was removed while it was being stored; try again"
                    ) from None
                os.unlink(self.temp)
            fsync_dir(folder.path)
        except OSError as exc:
            raise storage_error(exc, folder.path, f"storing {name.file_name}") from None
        finally:
            self.discard()
        sha256 = self.digest.hexdigest()  # the hashing thread is done (discard)
        try:
            folder.write_sidecar(name.file_name, sha256, st)
        except OSError:
            pass  # only a cache: `find` computes the hash again when it is missing
        return Package(name.package_id, name.version, name.extension, name.file_name, st.st_size,
                       sha256, datetime.fromtimestamp(st.st_mtime, UTC)), True

    def _close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the temporary file, whatever state it is in."""
        self._writer.finish()
        self._hasher.finish()
        self._free_blocks()
        try:
            self._close()
        except OSError:
            pass
        finally:
            self.temp.unlink(missing_ok=True)


def _create(path: Path) -> int:
    """Open a new file for writing, with O_DIRECT where the file system takes it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    if O_DIRECT:
        try:
            return os.open(path, flags | O_DIRECT, 0o640)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(path, flags, 0o640)


def _stop_direct(fd: int) -> None:
    """From here on, write `fd` through the page cache."""
    if O_DIRECT:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)


def _is_direct(fd: int) -> bool:
    return bool(O_DIRECT and fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT)


def _write_all(fd: int, view: memoryview) -> None:
    written = 0
    while written < len(view):
        try:
            written += os.write(fd, view[written:])
        except OSError as exc:
            # A short direct write leaves the rest unaligned, and a file
            # system may refuse direct writes only once it sees one: the
            # rest goes through the page cache.
            if exc.errno != errno.EINVAL or not _is_direct(fd):
                raise
            _stop_direct(fd)

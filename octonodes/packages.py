"""The package store: one folder of uploaded packages that every node shares.

A package is stored under its uploaded file name, `<PackageId>.<Version>.<ext>`
(so Acme.Web 1.2.3 as a zip and as a tar.gz are two files). An upload
arrives as a stream (`Incoming`): it is written once, to a hidden temporary
file in the store folder, while its SHA-256 is computed; then fsynced and
linked into place, so a package is visible only once complete. `os.link`
fails if the name exists, which makes FailIfExists hold even when two nodes
race; `os.replace` overwrites atomically. The folder is fsynced after.

Each package's SHA-256 is kept in a small hidden sidecar file beside it
(`.<file name>.json`), written atomically after the package is in place,
rather than in the database: the folder alone is then the truth about what
exists (a database row could disagree with it after a crash between the two
writes, or after an operator copies files in or out), and the store needs
nothing from either database backend. The sidecar records the package's
inode, size and modification time; when they no longer match (a crash
before the sidecar was written, two overwrites racing, a file copied in by
hand) the hash is computed again from the file.

Where the folder is: the `package_store` setting (an absolute path), or by
default, with SQLite, `<database file>-packages/` beside the database file
(next to the `<database file>-locks/` folder the nodes use). With PostgreSQL
there is no default: the nodes may run on several hosts, so the setting must
name a file system they all share.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import queue
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from .errors import OctonodesError, Refused, UsageError

EXTENSIONS = ("tar.bz2", "tar.gz", "nupkg", "zip", "tgz", "tar", "jar")
"""The package formats the store accepts, longest first for matching."""
MAX_FILE_NAME = 200
"""Bytes; leaves room under the usual 255 for the hidden temporary and sidecar names."""
HASH_BLOCK = 1024 * 1024
WRITE_BLOCK = 4 * 1024 * 1024
"""Bytes: an upload is hashed and written a block this size at a time."""
WRITE_BLOCKS = 3
"""Blocks per upload: one filling, the others being written and hashed."""
DIRECT_ALIGNMENT = 4096
"""O_DIRECT writes start and end on this boundary (and come from page-aligned memory)."""
O_DIRECT = getattr(os, "O_DIRECT", 0)

# Semantic Versioning 2.0.0, the regular expression semver.org gives.
_NUM = r"(?:0|[1-9]\d*)"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER = re.compile(
    rf"^{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
PACKAGE_ID = re.compile(r"^[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*$")
TEMP_PREFIX = ".incoming-"
SIDECAR_SUFFIX = ".json"


class OverwriteMode(StrEnum):
    """What an upload does when the package is already in the store."""

    FAIL_IF_EXISTS = "FailIfExists"
    OVERWRITE_EXISTING = "OverwriteExisting"
    IGNORE_IF_EXISTS = "IgnoreIfExists"


class InvalidPackageName(UsageError):
    """A file name that is not `<PackageId>.<Version>.<ext>`, or tries to leave the store."""


class PackageExists(Refused):
    """FailIfExists, and the package is already there."""


class StorageFull(OctonodesError):
    """No space left (or quota exceeded) in the package store; nothing was kept."""


class PackageStoreUnavailable(OctonodesError):
    """No package store is configured, or its folder cannot be used."""


@dataclass(frozen=True)
class PackageName:
    package_id: str
    version: str
    extension: str
    file_name: str


@dataclass(frozen=True)
class Package:
    """One package in the store."""

    package_id: str
    version: str
    extension: str
    file_name: str
    size: int
    sha256: str
    uploaded_at: datetime

    def to_json(self) -> dict:
        return {
            "package_id": self.package_id, "version": self.version,
            "extension": self.extension, "file_name": self.file_name, "size": self.size,
            "sha256": self.sha256,
            "uploaded_at": self.uploaded_at.isoformat().replace("+00:00", "Z"),
        }


def parse_file_name(file_name: str | None) -> PackageName:
    """`Acme.Web.1.2.3.zip` -> Acme.Web 1.2.3 zip: the version is the first
    dot-separated run (to the extension) that is a semantic version.
    InvalidPackageName for anything else, and for any name that could
    leave the store folder."""
    if not file_name:
        raise InvalidPackageName("the file part has no file name; name it <PackageId>.<Version>.<ext>")
    shown = file_name if len(file_name) <= 80 else file_name[:77] + "..."
    if any(c in file_name for c in "/\\\0") or ".." in file_name or file_name.startswith("."):
        raise InvalidPackageName(f"invalid package file name {shown!r}: no paths, '..' or leading '.'")
    if len(file_name.encode("utf-8")) > MAX_FILE_NAME or not file_name.isprintable():
        raise InvalidPackageName(
            f"invalid package file name {shown!r}: at most {MAX_FILE_NAME} printable characters")
    lowered = file_name.lower()
    extension = next((e for e in EXTENSIONS if lowered.endswith("." + e)), None)
    if extension is None:
        raise InvalidPackageName(
            f"invalid package file name {shown!r}: the extension must be one of "
            + ", ".join(sorted(EXTENSIONS)))
    parts = file_name[: -len(extension) - 1].split(".")
    for i in range(1, len(parts)):
        package_id, version = ".".join(parts[:i]), ".".join(parts[i:])
        if SEMVER.match(version):
            if not PACKAGE_ID.match(package_id):
                break
            return PackageName(package_id, version, extension, file_name)
    raise InvalidPackageName(
        f"invalid package file name {shown!r}: expected <PackageId>.<Version>.<ext> "
        "with a semantic version, e.g. Acme.Web.1.2.3.zip")


def folder_for(kind: str, display: str, setting: str) -> Path:
    """Where the package store is (see the module docstring)."""
    if setting:
        path = Path(setting).expanduser()
        if not path.is_absolute():
            raise PackageStoreUnavailable(
                f"package_store {setting!r} is not an absolute path; set one every node can "
                "reach: octonodes config set package_store /srv/octonodes/packages")
        return path
    if kind == "sqlite":
        return Path(display + "-packages")
    raise PackageStoreUnavailable(
        "no package store: with PostgreSQL, set package_store to a folder on a file system "
        "every node shares: octonodes config set package_store /mnt/shared/octonodes-packages")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(exc: OSError, folder: Path, doing: str) -> OctonodesError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"the package store {folder} is full ({exc.strerror}) while {doing}; "
                           "nothing was kept")
    return PackageStoreUnavailable(f"cannot use the package store {folder} while {doing}: "
                                   f"{exc.strerror or exc}")


class PackageFolder:
    """The store folder: list what it holds, take new packages in."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def packages(self) -> list[Package]:
        """Every package in the folder, by file name; an absent folder is empty."""
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(exc, self.path, "listing it") from None
        found = []
        for file_name in names:
            if file_name.startswith("."):
                continue
            try:
                name = parse_file_name(file_name)
            except InvalidPackageName:
                continue
            package = self.find(name)
            if package is not None:
                found.append(package)
        return found

    def find(self, name: PackageName) -> Package | None:
        """The package stored under this name, or None."""
        path = self.path / name.file_name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(exc, self.path, f"reading {name.file_name}") from None
        sha256 = self._sidecar_hash(name.file_name, st) or self._hash_file(path)
        return Package(name.package_id, name.version, name.extension, name.file_name, st.st_size,
                       sha256, datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, name: PackageName) -> bool:
        return os.path.lexists(self.path / name.file_name)

    def receive(self, name: PackageName) -> "Incoming":
        """Start taking in a new package (a hidden temporary file until committed)."""
        return Incoming(self, name)

    # -- sidecars ---------------------------------------------------------

    def _sidecar(self, file_name: str) -> Path:
        return self.path / f".{file_name}{SIDECAR_SUFFIX}"

    def _sidecar_hash(self, file_name: str, st: os.stat_result) -> str | None:
        try:
            meta = json.loads(self._sidecar(file_name).read_text())
        except (OSError, ValueError):
            return None
        if (meta.get("inode"), meta.get("size"), meta.get("mtime_ns")) != \
                (st.st_ino, st.st_size, st.st_mtime_ns):
            return None
        return meta.get("sha256")

    @staticmethod
    def _hash_file(path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def write_sidecar(self, file_name: str, sha256: str, st: os.stat_result) -> None:
        """Record a package's hash, atomically (temporary file, fsync, rename)."""
        final = self._sidecar(file_name)
        temp = self.path / f"{TEMP_PREFIX}{uuid.uuid4().hex}{SIDECAR_SUFFIX}"
        doc = {"sha256": sha256, "size": st.st_size, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns}
        try:
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640),
                      "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)


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
    `discard`, which is safe to call at any time, and again).

    `write` only copies into page-aligned blocks of WRITE_BLOCK bytes; each
    full block is hashed by one thread and written by another, at the same
    time (hashlib and os.write let go of the interpreter), while the next
    blocks fill; WRITE_BLOCKS of them circulate, so memory stays constant
    and `write` waits when the disk or the hash falls behind. The file is
    opened with O_DIRECT where the file system takes it: blocks go straight
    to the disk, with no copy into the page cache (on a small virtual
    machine that copy, into pages the host must first fault in, cost more
    than the rest of an upload) and next to nothing left for the final
    fsync. Elsewhere the same blocks are written through the page cache."""

    def __init__(self, folder: PackageFolder, name: PackageName) -> None:
        self.folder = folder
        self.name = name
        self.size = 0
        self.temp = folder.path / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name.file_name}"
        try:
            folder.path.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.fd = _create(self.temp)
        except OSError as exc:
            raise _os_error(exc, folder.path, "creating a temporary file") from None
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
            raise _os_error(error, self.folder.path, f"writing {self.name.file_name}") from None
        if error is not None:
            raise error

    def commit(self, mode: OverwriteMode) -> tuple[Package, bool]:
        """Make the package visible under its name; returns it and whether
        this upload is what the store now holds (False: IgnoreIfExists kept
        the existing one). PackageExists under FailIfExists."""
        folder, name = self.folder, self.name
        final = folder.path / name.file_name
        try:
            self._hand_on()
            self._writer.finish()
            self._check()
            os.fsync(self.fd)
            st = os.fstat(self.fd)
            self._close()
            if mode is OverwriteMode.OVERWRITE_EXISTING:
                os.replace(self.temp, final)
            else:
                try:
                    os.link(self.temp, final)
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
            _fsync_dir(folder.path)
        except OSError as exc:
            raise _os_error(exc, folder.path, f"storing {name.file_name}") from None
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

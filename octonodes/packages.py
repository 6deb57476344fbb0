"""The package store: one folder of uploaded packages that every node shares.

A package is stored under its uploaded file name, `<PackageId>.<Version>.<ext>`
(so Acme.Web 1.2.3 as a zip and as a tar.gz are two files). An upload
arrives as a stream (`incoming.Incoming`): it is written once, to a hidden temporary
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
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import OctonodesError, Refused, UsageError
from .models import iso

if TYPE_CHECKING:
    from .incoming import Incoming

EXTENSIONS = ("tar.bz2", "tar.gz", "nupkg", "zip", "tgz", "tar", "jar")
"""The package formats the store accepts, longest first for matching."""
MAX_FILE_NAME = 200
"""Bytes; leaves room under the usual 255 for the hidden temporary and sidecar names."""
HASH_BLOCK = 1024 * 1024

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
            "uploaded_at": iso(self.uploaded_at),
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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(exc: OSError, folder: Path, doing: str) -> OctonodesError:
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
            raise storage_error(exc, self.path, "listing it") from None
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
            raise storage_error(exc, self.path, f"reading {name.file_name}") from None
        sha256 = self._sidecar_hash(name.file_name, st) or self._hash_file(path)
        return Package(name.package_id, name.version, name.extension, name.file_name, st.st_size,
                       sha256, datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, name: PackageName) -> bool:
        return os.path.lexists(self.path / name.file_name)

    def receive(self, name: PackageName) -> "Incoming":
        """Start taking in a new package (a hidden temporary file until committed)."""
        from .incoming import Incoming

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

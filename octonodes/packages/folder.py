"""The package store's folder: what it holds, each package's hash kept in a
sidecar file, and where the folder is (see the package's docstring)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound, OctonodesError, Refused
from ..models import iso
from .names import InvalidPackageName, PackageName, parse_file_name

HASH_BLOCK = 1024 * 1024
TEMP_PREFIX = ".incoming-"
SIDECAR_SUFFIX = ".json"


class PackageExists(Refused):
    """FailIfExists, and the package is already there."""


class StorageFull(OctonodesError):
    """No space left (or quota exceeded) in the package store; nothing was kept."""


class PackageStoreUnavailable(OctonodesError):
    """No package store is configured, or its folder cannot be used."""


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
        return [p for p in map(self.find, self.names()) if p is not None]

    def names(self, contains: str = "") -> list[PackageName]:
        """The names of the packages in the folder (complete ones only: an
        upload in progress is a hidden file), by file name; with `contains`,
        those whose package id holds it (case-insensitive). Nothing is read
        but the folder's listing."""
        try:
            listed = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error(exc, self.path, "listing it") from None
        names = []
        for file_name in listed:
            if file_name.startswith("."):
                continue
            try:
                name = parse_file_name(file_name)
            except InvalidPackageName:
                continue
            if contains.lower() in name.package_id.lower():
                names.append(name)
        return names

    def named(self, key: str) -> PackageName:
        """The stored package `<PackageId>.<Version>` (the first by file name,
        should it be stored in several formats); NotFound if there is none."""
        found = next((n for n in self.names() if f"{n.package_id}.{n.version}" == key), None)
        if found is None:
            raise NotFound(f"no package {key} in the package store")
        return found

    def open(self, name: PackageName) -> BinaryIO:
        """The package's file, open for reading; NotFound if it is gone."""
        try:
            return open(self.path / name.file_name, "rb")
        except FileNotFoundError:
            raise NotFound(f"package {name.file_name} is no longer in the package store") from None
        except OSError as exc:
            raise storage_error(exc, self.path, f"reading {name.file_name}") from None

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

    def delete(self, name: PackageName) -> None:
        """Remove a package and its hash cache; NotFound if it is not there."""
        try:
            os.unlink(self.path / name.file_name)
        except FileNotFoundError:
            raise NotFound(f"no package {name.file_name!r} in the store") from None
        except OSError as exc:
            raise storage_error(exc, self.path, f"deleting {name.file_name}") from None
        self._sidecar(name.file_name).unlink(missing_ok=True)
        fsync_dir(self.path)

    def exists(self, name: PackageName) -> bool:
        return os.path.lexists(self.path / name.file_name)

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

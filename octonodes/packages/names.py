"""Package file names: `<PackageId>.<Version>.<ext>`, with a semantic version."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from ..errors import UsageError

EXTENSIONS = ("tar.bz2", "tar.gz", "nupkg", "zip", "tgz", "tar", "jar")
"""The package formats the store accepts, longest first for matching."""
MAX_FILE_NAME = 200
"""Bytes; leaves room under the usual 255 for the hidden temporary and sidecar names."""

# A version as Octopus reads one: up to four numeric parts (1, 1.2, 1.2.3,
# 1.2.3.4), then Semantic Versioning 2.0.0's pre-release and build metadata.
_NUM = r"(?:0|[1-9]\d*)"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
VERSION = re.compile(
    rf"^{_NUM}(?:\.{_NUM}){{0,3}}(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
PACKAGE_ID = re.compile(r"^[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*$")


class OverwriteMode(StrEnum):
    """What an upload does when the package is already in the store."""

    FAIL_IF_EXISTS = "FailIfExists"
    OVERWRITE_EXISTING = "OverwriteExisting"
    IGNORE_IF_EXISTS = "IgnoreIfExists"


class InvalidPackageName(UsageError):
    """A file name that is not `<PackageId>.<Version>.<ext>`, or tries to leave the store."""


@dataclass(frozen=True)
class PackageName:
    package_id: str
    version: str
    extension: str
    file_name: str


def parse_file_name(file_name: str | None) -> PackageName:
    """`Acme.Web.1.2.3.4.zip` -> Acme.Web 1.2.3.4 zip: the version is the
    first dot-separated run (to the extension) that is a version (`VERSION`).
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
        if VERSION.match(version):
            if not PACKAGE_ID.match(package_id):
                break
            return PackageName(package_id, version, extension, file_name)
    raise InvalidPackageName(
        f"invalid package file name {shown!r}: expected <PackageId>.<Version>.<ext> "
        "with a version of up to four numbers, e.g. Acme.Web.1.2.3.zip")

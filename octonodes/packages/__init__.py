"""The package store: one folder of uploaded packages that every node shares.

A package is stored under its uploaded file name, `<PackageId>.<Version>.<ext>`
(so Acme.Web 1.2.3 as a zip and as a tar.gz are two files). An upload
arrives as a stream (`upload.Incoming`): it is written once, to a hidden temporary
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

from .folder import (Package, PackageExists, PackageFolder, PackageStoreUnavailable, StorageFull,
                     folder_for)
from .names import InvalidPackageName, OverwriteMode, PackageName, parse_file_name

__all__ = ["InvalidPackageName", "OverwriteMode", "Package", "PackageExists", "PackageFolder",
           "PackageName", "PackageStoreUnavailable", "StorageFull", "folder_for",
           "parse_file_name"]

"""`Cluster`'s package store: what it holds, reading and deleting a package,
and recording changes made there (see cluster.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Callable

from . import audit
from .audit import Action
from .errors import NotFound
from .store import Store

if TYPE_CHECKING:
    from .packages import Package, PackageFolder, PackageName


class ClusterPackages:
    """The shared package store the nodes' HTTP API serves: part of
    `Cluster`, which gives it `store`."""

    store: Store

    def package_folder(self) -> "PackageFolder":
        """The shared package store (the `package_store` setting, or beside
        the SQLite file); PackageStoreUnavailable when there is none."""
        from .packages import PackageFolder, folder_for

        return PackageFolder(folder_for(self.store.kind, self.store.display,
                                        self.store.settings().package_store))

    def packages(self) -> list["Package"]:
        """What the package store holds, by file name."""
        return self.package_folder().packages()

    def package_page(self, contains: str = "", *, skip: int = 0,
                     take: int = 30) -> tuple[int, list["Package"]]:
        """How many packages have `contains` in their id (case-insensitive),
        and `take` of them after the first `skip`, by file name; only the
        page's files are looked at beyond the folder's listing."""
        folder = self.package_folder()
        names = folder.names(contains)
        page = [folder.find(name) for name in names[skip:skip + take]]
        return len(names), [p for p in page if p is not None]

    def package(self, key: str) -> "Package":
        """One stored package, by `<PackageId>.<Version>` (`Acme.Web.1.2.3`);
        NotFound if the store has none."""
        folder = self.package_folder()
        found = folder.find(folder.named(key))
        if found is None:
            raise NotFound(f"no package {key} in the package store")
        return found

    def open_package(self, key: str) -> tuple["PackageName", BinaryIO]:
        """A stored package's name and its file, open for reading."""
        folder = self.package_folder()
        name = folder.named(key)
        return name, folder.open(name)

    def delete_package(self, file_name: str, *, actor: str | None = None,
                       reason: str | None = None) -> "Package":
        """Remove a package from the store (NotFound if absent), recorded in
        the audit trail in the transaction that removes it; returns it."""
        from .packages import parse_file_name

        folder = self.package_folder()
        name = parse_file_name(file_name)
        found = folder.find(name)
        if found is None:
            raise NotFound(f"no package {file_name!r} in the store")
        self.record(Action.PACKAGE_DELETE, name.file_name, actor=actor, reason=reason,
                    during=lambda: folder.delete(name),
                    details={"package_id": found.package_id, "version": found.version,
                             "size": found.size, "sha256": found.sha256})
        return found

    def record(self, action: Action | str, target: str, *, actor: str | None = None,
               reason: str | None = None, details: dict | None = None,
               during: Callable[[], None] | None = None) -> None:
        """Record a change made outside the database (the package store):
        `during()` makes it inside the event's transaction; if it raises,
        the event is not recorded."""
        self.store.record(audit.change(actor, reason), audit.parse_action(str(action)), target,
                          details=details, during=during)

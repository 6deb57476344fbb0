"""Shell completion (bash, zsh, fish): `octonodes --install-completion`.

Node names come from the database the command line names (`--db` or
`OCTONODES_DB`), read only when the shell asks; statuses, task states and
setting names are known without it. A database that cannot be read gives no
names, never an error in the middle of the shell's line.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable

import typer


def node_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The names of the nodes in the database that start with `incomplete`."""
    from ..cluster import open as open_cluster

    db = ctx.find_root().params.get("db")
    try:
        with open_cluster(db) as cluster:
            names = [node.name for node in cluster.nodes()]
    except Exception:  # completion must never break the shell's line
        return []
    return [name for name in names if name.startswith(incomplete)]


def enum_words(enum: type[Enum]) -> Callable[[str], list[str]]:
    """Complete one of `enum`'s values, also after a comma (`-s Running,Dr`)."""
    def complete(incomplete: str) -> list[str]:
        done, _, word = incomplete.rpartition(",")
        prefix = f"{done}," if done else ""
        return [prefix + m.value for m in enum if m.value.startswith(word)]

    return complete


def setting_keys(incomplete: str) -> list[str]:
    from ..settings import SETTINGS

    return [key for key in SETTINGS if key.startswith(incomplete)]

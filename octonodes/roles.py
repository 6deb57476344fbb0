"""Who may do what over HTTP: the role each API key holds.

- `viewer` reads everything: nodes, tasks, logs, events, packages, settings;
- `operator` is a viewer that may also drain, undrain, change caps, add and
  cancel tasks;
- `admin` is an operator that may also delete nodes, change settings, manage
  API keys, and push and delete packages;
- `packages` pushes packages and reads them, nothing else (build servers).

Every route of the HTTP app declares the role it needs (`http.access.route`);
`allows` decides. A route that needs `packages` is about the package store:
every role may read it, only `packages` and `admin` may write it.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import UsageError


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    PACKAGES = "packages"


DEFAULT_ROLE = Role.VIEWER
"""What `apikey add` gives a key when no role is named."""
LEGACY_ROLE = Role.ADMIN
"""What keys made before roles existed become on upgrade: they could do everything."""

_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
"""admin ⊃ operator ⊃ viewer; `packages` stands apart."""


def allows(held: Role, needed: Role, *, read: bool = False) -> bool:
    """Whether a key with role `held` may use a route that needs `needed`.
    `read` says the route only reads (GET, HEAD): reading the package store
    (a route needing `packages`) is open to every role."""
    held, needed = Role(held), Role(needed)
    if needed is Role.PACKAGES:
        return read or held in (Role.PACKAGES, Role.ADMIN)
    if held is Role.PACKAGES:
        return False
    return _RANK[held] >= _RANK[needed]


def parse_role(text: str) -> Role:
    """A role from its name; UsageError listing the roles otherwise."""
    try:
        return Role(str(text).strip().lower())
    except ValueError:
        raise UsageError(f"unknown role {text!r}; the roles are: "
                         f"{', '.join(r.value for r in Role)}") from None

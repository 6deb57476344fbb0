"""Cluster settings: their names, defaults and how their values are written.

Settings live in the database so every node sees the same values; running
nodes pick up a change at their next check-in. Durations are written `90`,
`90s`, `1.5s`, `5m`, `2h`, `1d`; sizes `65536`, `64K`, `1M`, `1G` (binary units).
Each setting has a range, checked when it is set; a value out of range found
in the database (written by hand, or by an older version) is logged as an
error and its default used instead, so no stored value can stop a node.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Callable

from .errors import UsageError

log = logging.getLogger("octonodes")

DEFAULT_TASK_CAP = 5
MAX_TASK_CAP = 1000
MAX_RETRIES = 1000
"""`task add --retries` at most: a task lost with its node this often is not
going to succeed."""
MAX_TASK_ID = 2**63 - 1
"""Task ids are 64-bit integers in the database: a larger one cannot exist."""
MAX_TASK_SECONDS = 10 * 365 * 86400
"""The longest timeout or queue timeout a task may have (ten years)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _shown(value: object) -> str:
    """A value as an error quotes it: cut short, as one written into the
    database by hand may be megabytes long."""
    if isinstance(value, str) and len(value) > 80:
        value = value[:77] + "..."
    return repr(value)


def parse_duration(text: str | float | int) -> float:
    """Seconds from `90`, `90s`, `1.5s`, `5m`, `2h` or `1d`; UsageError otherwise."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise UsageError(
                f"invalid duration {_shown(text)}: write it as 90, 90s, 5m, 2h or 1d"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise UsageError(f"invalid duration {_shown(text)}: it must be more than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 86400 -> `1d`, 90 -> `90s`, 1.5 -> `1.5s`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_size(text: str | int) -> int:
    """Bytes from `65536`, `64K`, `1M`, `1G` (binary units); UsageError otherwise."""
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise UsageError(f"invalid size {_shown(text)}: write it as 65536, 64K, 1M or 1G")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    if size <= 0:
        raise UsageError(f"invalid size {_shown(text)}: it must be more than zero")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _parse_path(text: str) -> str:
    text = text.strip()
    if not text:
        raise UsageError("invalid path: it must not be empty")
    if not PurePath(text).is_absolute():
        raise UsageError(f"invalid path {_shown(text)}: it must be absolute (every node reads it "
                         "from its own working directory)")
    return text


def parse_proxies(text: str) -> tuple:
    """Addresses and networks (`10.0.0.5, 10.1.0.0/16, ::1`), comma-separated;
    empty for none."""
    import ipaddress

    networks = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise UsageError(f"invalid trusted proxy {_shown(part)}: write an IP address or a "
                             "network (10.0.0.5, 10.1.0.0/16), comma-separated") from None
    return tuple(networks)


def format_proxies(networks: tuple) -> str:
    return ",".join(str(n) if n.num_addresses > 1 else str(n.network_address) for n in networks)


@dataclass(frozen=True)
class Setting:
    key: str
    default: str
    parse: Callable[[str], object]
    format: Callable[[object], str]
    help: str
    low: float | None = None
    high: float | None = None

    def check(self, value: str) -> object:
        """Parse `value` and check its range; UsageError otherwise."""
        try:
            parsed = self.parse(value)
        except UsageError as exc:
            raise UsageError(f"{self.key}: {exc}") from None
        if self.low is not None and not self.low <= parsed <= self.high:
            raise UsageError(f"invalid {self.key} {_shown(value)}: it must be between "
                             f"{self.format(self.low)} and {self.format(self.high)}")
        return parsed


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("heartbeat_interval", "10s", parse_duration, format_duration,
                "how often each node checks in (0.1s to 1h)", 0.1, 3600),
        Setting("offline_after", "60s", parse_duration, format_duration,
                "a node that has not checked in for longer is Offline (must exceed twice "
                "heartbeat_interval; up to 30d)", 0.2, 30 * 86400),
        Setting("queue_timeout", "1d", parse_duration, format_duration,
                "how long a task may wait in the queue before it ends TimedOut (1s to 365d)",
                1, 365 * 86400),
        Setting("task_log_limit", "1M", parse_size, format_size,
                "output kept per task attempt; the rest is dropped after a marker (1K to 1G)",
                1024, 1024**3),
        Setting("cancel_grace", "10s", parse_duration, format_duration,
                "time between SIGTERM and SIGKILL when a task is cancelled (0.1s to 1d)",
                0.1, 86400),
        Setting("task_retention", "30d", parse_duration, format_duration,
                "finished tasks and their logs are pruned after this long (1m to 3650d)",
                60, 3650 * 86400),
        Setting("package_store", "", _parse_path, str,
                "folder of uploaded packages, an absolute path (default: beside the SQLite "
                "file; required with PostgreSQL)"),
        Setting("event_retention", "365d", parse_duration, format_duration,
                "audit events are pruned after this long (1d to 3650d)", 86400, 3650 * 86400),
        Setting("trusted_proxies", "", parse_proxies, format_proxies,
                "addresses or networks of proxies whose X-Forwarded-For names the client (comma-separated)"),
    )
}


def _default(key: str, unset: object = "") -> Any:
    """A setting's default from the table above, parsed (`unset` for none)."""
    setting = SETTINGS[key]
    return setting.parse(setting.default) if setting.default else unset


@dataclass(frozen=True)
class ClusterSettings:
    """The settings in force, parsed: durations in seconds, sizes in bytes.
    The defaults are the table's (`SETTINGS`), parsed."""

    heartbeat_interval: float = _default("heartbeat_interval")
    offline_after: float = _default("offline_after")
    queue_timeout: float = _default("queue_timeout")
    task_log_limit: int = _default("task_log_limit")
    cancel_grace: float = _default("cancel_grace")
    task_retention: float = _default("task_retention")
    package_store: str = _default("package_store")
    event_retention: float = _default("event_retention")
    trusted_proxies: tuple = _default("trusted_proxies", ())

    @classmethod
    def from_stored(cls, stored: dict[str, str]) -> "ClusterSettings":
        """Parse the stored values, falling back to defaults for unset keys."""
        return _parse_stored(tuple(sorted(stored.items())))


@functools.lru_cache(maxsize=16)
def _parse_stored(stored: tuple[tuple[str, str], ...]) -> ClusterSettings:
    # A node reads the settings in every claim; they seldom change.
    # ClusterSettings() holds the defaults, parsed: what an unset, empty or
    # invalid value counts as.
    given = dict(stored)
    values = {}
    for key, setting in SETTINGS.items():
        raw = given.get(key, "")
        try:
            values[key] = setting.check(raw) if raw != "" else getattr(ClusterSettings, key)
        except UsageError as exc:
            log.error("the stored value of %s is not valid (%s); using the default, %s",
                      key, exc, setting.default or "none")
            values[key] = getattr(ClusterSettings, key)
    if not values["offline_after"] > 2 * values["heartbeat_interval"]:
        log.error("the stored offline_after (%s) does not exceed twice heartbeat_interval (%s); "
                  "using the defaults of both", format_duration(values["offline_after"]),
                  format_duration(values["heartbeat_interval"]))
        for key in ("heartbeat_interval", "offline_after"):
            values[key] = getattr(ClusterSettings, key)
    return ClusterSettings(**values)


def parse_setting(key: str, value: str) -> object:
    """Parse one value on its own (UsageError for an unknown key or a bad value)."""
    setting = SETTINGS.get(key)
    if setting is None:
        known = ", ".join(SETTINGS)
        raise UsageError(f"unknown setting {_shown(key)}; the settings are: {known}")
    return setting.check(value)


def validate_setting(key: str, value: str, current: ClusterSettings) -> str:
    """Check one new value against the others; return its canonical spelling."""
    parsed = parse_setting(key, value)
    setting = SETTINGS[key]
    heartbeat = parsed if key == "heartbeat_interval" else current.heartbeat_interval
    offline = parsed if key == "offline_after" else current.offline_after
    if key in ("heartbeat_interval", "offline_after") and not offline > 2 * heartbeat:
        raise UsageError(
            f"offline_after ({format_duration(offline)}) must exceed twice "
            f"heartbeat_interval ({format_duration(heartbeat)})"
        )
    return setting.format(parsed)

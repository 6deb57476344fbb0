"""The page's Jinja2 templates, and the few filters they use to write
times, states and sizes."""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..models import iso
from ..render import ago
from ..settings import format_duration

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
HTMX = "htmx-2.0.11.min.js"
"""The vendored htmx (version-pinned by its file name; its licence beside it)."""


def exact(value: datetime | None) -> str:
    """A time in full, UTC, to the second."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def seconds(value: float | None) -> str:
    return format_duration(value) if value else ""


def details(values: dict | None) -> str:
    """An event's details in a line: `old → new`, else `key: value` pairs."""
    values = {k: v for k, v in (values or {}).items() if k != "task_ranges"}
    if {"old", "new"} <= set(values):
        rest = {k: v for k, v in values.items() if k not in ("old", "new")}
        head = f"{values['old']} → {values['new']}"
        return "; ".join([head, *(f"{k}: {v}" for k, v in rest.items())])
    return "; ".join(f"{k}: {v}" for k, v in values.items())


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ago=lambda then, now: ago(now, then), exact=exact,
                       iso=lambda value: iso(value) or "", seconds=seconds, shell=shlex.join,
                       details=details, slug=lambda text: str(text).lower().replace(" ", "-"))
    env.globals.update(htmx=HTMX)
    return env


ENV = _environment()


def render(template: str, **values) -> str:
    return ENV.get_template(template).render(**values)

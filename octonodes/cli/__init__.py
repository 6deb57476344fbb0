"""The command line: parse, call the library, render.

`app.py` holds the Typer app and what the commands share; each module here
adds its commands to it, and importing this package imports them all, in the
order `--help` lists them. `main` is the console script.
"""

from __future__ import annotations

from . import admin, http_admin, nodes, check, tasks, events  # noqa: F401,I001
from .app import main

__all__ = ["main"]

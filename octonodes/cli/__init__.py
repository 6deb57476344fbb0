"""The Typer app: parse, call the library, render. Errors are translated once,
here: an `OctonodesError` becomes one `Error:` line on stderr and its exit code."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import Annotated, Callable, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..errors import OctonodesError

try:  # Typer >= 0.26 carries its own copy of Click
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click.exceptions import UsageError as ClickUsageError

DEBUG_ENV = "OCTONODES_DEBUG"


def print_json(document: object) -> None:
    """One JSON document on stdout (kept out of render.py: `--json` must not
    pay for importing Rich)."""
    import json

    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def enum_values(enum: type) -> Callable[[list[str] | None], list[str]]:
    """An option callback: each value, in any case, as one of `enum`'s values."""
    def parse(values: list[str] | None) -> list[str]:
        by_lower = {member.value.lower(): member.value for member in enum}
        for value in values or []:
            if value.lower() not in by_lower:
                raise typer.BadParameter(
                    f"{value!r} is not one of: " + ", ".join(m.value for m in enum))
        return [by_lower[v.lower()] for v in values or []]

    return parse


def fail(message: str, exit_code: int) -> typer.Exit:
    """Print the one `Error:` line and return the Exit to raise."""
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(exit_code)


class App(TyperGroup):
    """The root group: maps library errors to exit codes for every command below it."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OctonodesError as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code) from None


class UnknownOnUsageError(TyperCommand):
    """For `check`: a usage error is UNKNOWN (3), as monitoring plugins expect."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as exc:
            exc.exit_code = 3
            # A monitoring plugin's first stdout line is its status, even here.
            print(f"OCTONODES UNKNOWN - {exc.format_message()}")
            raise


@dataclass
class Globals:
    db: str | None = None

    def cluster(self, *, create: bool = False):
        from ..cluster import open as open_cluster

        return open_cluster(self.db, create=create)


app = typer.Typer(
    cls=App,
    name="octonodes",
    help="Run and administer a high-availability cluster of worker nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _version(value: bool) -> None:
    if value:
        print(f"octonodes {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    db: Annotated[Optional[str], typer.Option(
        "--db", metavar="DB", envvar="OCTONODES_DB", show_envvar=True,
        help="The cluster's database: a file path, sqlite:///path or postgresql://… "
             "[default: ~/.local/share/octonodes/octonodes.db]")] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Run and administer a high-availability cluster of worker nodes.

    Nodes (`octonodes node run`) share one database, check in, and run queued
    tasks up to their task cap; operators list, drain, cap and retire them.
    """
    ctx.obj = Globals(db=db)


def main() -> None:
    """The console script."""
    try:
        app(prog_name="octonodes")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(f"Error: internal error: {exc.__class__.__name__}: {exc} "
              f"(set {DEBUG_ENV}=1 for a traceback)", file=sys.stderr)
        sys.exit(1)


from . import admin, http_admin, nodes, tasks  # noqa: E402,F401  (register the commands)

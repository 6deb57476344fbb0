"""The Typer app and what its commands share: parsers, options, the error
line. Errors are translated once, here: an `OctonodesError` becomes one
`Error:` line on stderr and its exit code. The commands register themselves
on `app` when the `octonodes.cli` package imports them."""

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
INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (SIGINT), as shells report it."""
MAX_WHOLE_NUMBER = 2**63 - 1
"""The largest id or count a database column holds."""


def print_json(document: object) -> None:
    """One JSON document on stdout (kept out of render.py: `--json` must not
    pay for importing Rich)."""
    import json

    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def enum_values(enum: type) -> Callable[[list[str] | None], list[str]]:
    """An option callback: each value, in any case, as one of `enum`'s values;
    a value may also list several, comma-separated (`-s Running,Drained`)."""
    def parse(values: list[str] | None) -> list[str]:
        by_lower = {member.value.lower(): member.value for member in enum}
        words = [w.strip() for value in values or [] for w in value.split(",") if w.strip()]
        for word in words:
            if word.lower() not in by_lower:
                raise typer.BadParameter(
                    f"{word!r} is not one of: " + ", ".join(m.value for m in enum))
        return list(dict.fromkeys(by_lower[w.lower()] for w in words))

    return parse


def whole_number(what: str, low: int, high: int = MAX_WHOLE_NUMBER) -> Callable[[str], int]:
    """A parser for a whole-number argument or option, with the error in our
    words (`invalid task cap 'abc': give a whole number from 0 to 1000`)."""
    def parse(value: str | int) -> int:
        text = str(value).strip()
        if text.lstrip("+").isdigit() and low <= int(text) <= high:
            return int(text)
        span = f"from {low} to {high}" if high < MAX_WHOLE_NUMBER else f"{low} or more"
        raise ClickUsageError(f"invalid {what} {value!r}: give a whole number {span}")

    return parse


def integer(what: str) -> Callable[[str], int]:
    """A parser for an integer the library judges (a task id: one no task can
    have is "no such task", exit 3); only text that is no integer at all is a
    usage error here."""
    def parse(value: str | int) -> int:
        text = str(value).strip()
        if text[1:].isdigit() if text[:1] in "+-" else text.isdigit():
            return int(text)
        raise ClickUsageError(f"invalid {what} {value!r}: give a whole number")

    return parse


def fail(message: str, exit_code: int) -> typer.Exit:
    """Print the one `Error:` line and return the Exit to raise."""
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(exit_code)


class App(TyperGroup):
    """The root group: maps library errors to exit codes for every command
    below it, and Ctrl-C to exit 130."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OctonodesError as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None


class Command(TyperCommand):
    """Help in operator words: `--status STATUS`, `NODE`, `-- COMMAND [ARG]...`,
    never Python types (`<list[str]>`, `<int range>`, `{name}`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = _operator_word(param)

    def collect_usage_pieces(self, ctx):  # type: ignore[override]
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                word = param.metavar
                if param.nargs != 1 and not word.endswith("..."):
                    word += "..."
                pieces.append(word if param.required else f"[{word}]")
        return pieces

    def format_options(self, ctx, formatter):  # type: ignore[override]
        params = self.get_params(ctx)
        arguments = [(p.metavar, p.help or "") for p in params
                     if p.param_type_name == "argument" and not p.hidden]
        options = [record for p in params if p.param_type_name == "option"
                   if (record := p.get_help_record(ctx)) is not None]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _operator_word(param) -> str:
    """A value's word where the command gives none: its name in capitals."""
    return (param.name or "value").upper()


class Typer(typer.Typer):
    """Our Typer: every command renders its help in operator words (`Command`)."""

    def command(self, *args, cls=None, **kwargs):  # type: ignore[override]
        return super().command(*args, cls=cls or Command, **kwargs)


@dataclass
class Globals:
    db: str | None = None

    def cluster(self, *, create: bool = False):
        from ..cluster import open as open_cluster

        return open_cluster(self.db, create=create)


app = Typer(
    cls=App,
    name="octonodes",
    help="Run and administer a high-availability cluster of worker nodes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ReasonOption = Annotated[Optional[str], typer.Option(
    "--reason", metavar="TEXT", help="Why: kept with the change in the audit trail "
                                     "(`octonodes events`); at most 500 characters.")]


def checked_reason(reason: str | None) -> str | None:
    """A reason, refused (exit 2) before anything opens or changes."""
    from ..audit import validate_reason

    return validate_reason(reason)


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
        sys.exit(INTERRUPTED)
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(f"Error: internal error: {exc.__class__.__name__}: {exc} "
              f"(set {DEBUG_ENV}=1 for a traceback)", file=sys.stderr)
        sys.exit(1)

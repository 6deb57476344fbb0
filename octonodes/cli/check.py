"""`octonodes check`: cluster health for cron and monitoring.

A monitoring plugin speaks once: whatever happens (a result, database trouble,
a usage error), `check` prints its result on stdout alone (one summary line
and its details, or one JSON document) and nothing on stderr, so cron mails
it once, and exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import OctonodesError
from ..health import CheckCode
from ..settings import parse_duration
from .app import ClickUsageError, Command, JsonOption, app, print_json


class UnknownOnUsageError(Command):
    """A usage error is UNKNOWN (3), as monitoring plugins expect, reported
    like every other result."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        as_json = "--json" in args
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as exc:
            report_unknown(exc.format_message(), as_json)
            raise typer.Exit(CheckCode.UNKNOWN) from None


def report_unknown(problem: str, as_json: bool) -> None:
    summary = f"OCTONODES UNKNOWN - {problem}"
    if as_json:
        print_json({"status": "UNKNOWN", "code": CheckCode.UNKNOWN, "summary": summary,
                    "problems": [problem]})
    else:
        print(summary)


@app.command(cls=UnknownOnUsageError)
def check(
    ctx: typer.Context,
    warn_wait: Annotated[str, typer.Option(
        "--warn-wait", metavar="DURATION",
        help="WARNING when a task has been queued longer than this (90s, 10m, 1h).")] = "10m",
    warn_drained: Annotated[bool, typer.Option(
        "--warn-drained", help="WARNING for nodes drained with a reason too (by default they are "
                               "planned maintenance: OK, with a note).")] = False,
    json: JsonOption = False,
) -> None:
    """Cluster health for cron and monitoring, with monitoring-plugin exit codes.

    0 OK; 1 WARNING (a node draining, drained or stopped; tasks queued longer
    than --warn-wait); 2 CRITICAL (a node lost; tasks queued that no online
    node can take); 3 UNKNOWN (database trouble or a usage error). The first
    line is a one-line summary; the lines below it name each problem, the
    queue and the database. Nothing is written on stderr. A node drained
    with --reason is planned maintenance: OK, with a note, unless
    --warn-drained.

    Example: octonodes check --warn-wait 15m
    """
    try:
        seconds = parse_duration(warn_wait)
        cluster = ctx.obj.cluster()
        result = cluster.check(warn_wait=seconds, warn_drained=warn_drained)
    except OctonodesError as exc:
        report_unknown(str(exc), json)
        raise typer.Exit(CheckCode.UNKNOWN) from None
    if json:
        print_json({
            "status": result.status, "code": result.code, "summary": result.summary,
            "problems": result.problems, "notes": result.notes, "database": cluster.db,
            "nodes": [n.to_json() for n in result.nodes],
            "queue": result.queue.to_json(),
        })
    else:
        print(result.summary)
        for problem in result.problems:
            print(f"- {problem}")
        for note in result.notes:
            print(f"- note: {note}")
        print(result.queue.describe())
        print(f"database: {cluster.db}")
    raise typer.Exit(result.code)

"""`octonodes events`: the audit trail, newest first, or followed live."""

from __future__ import annotations

import json as json_module
import sys
from typing import Annotated, Optional

import typer

from ..audit import Action
from ..settings import parse_duration
from .app import MAX_WHOLE_NUMBER, JsonOption, app, print_json, whole_number
from .complete import node_names


def _actions(values: list[str] | None) -> list[str]:
    from ..audit import parse_action
    from ..errors import UsageError

    try:
        return [parse_action(v).value for v in values or []]
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def events(
    ctx: typer.Context,
    node: Annotated[Optional[str], typer.Option(
        "--node", metavar="NODE", autocompletion=node_names,
        help="Only events about this node.")] = None,
    task: Annotated[Optional[int], typer.Option(
        "--task", metavar="ID", parser=whole_number("task id", 1, MAX_WHOLE_NUMBER),
        help="Only events about this task (its batch's add included).")] = None,
    action: Annotated[Optional[list[str]], typer.Option(
        "--action", metavar="ACTION", callback=_actions,
        help="Only this action; repeatable: " + ", ".join(a.value for a in Action) + ".")] = None,
    actor: Annotated[Optional[str], typer.Option(
        "--actor", metavar="TEXT", help="Only events whose actor contains this text (any case), e.g. a user or `key ci`.")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", metavar="DURATION", help="Only events of the last DURATION (90s, 5m, 2h, 7d).")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", metavar="N", parser=whole_number("limit", 1, MAX_WHOLE_NUMBER),
        help="At most this many.")] = 50,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="After the newest events, print new ones as they happen, until Ctrl-C "
                               "(with --json, one JSON object a line).")] = False,
    json: JsonOption = False,
) -> None:
    """The audit trail: who changed what, when and why, newest first.

    Every change is an event: drain, undrain, cap, delete, settings, API keys,
    tasks added and cancelled, packages, and what nodes do by themselves
    (registered, took over a name, stopped, lost, fenced).

    Example: octonodes events --node node-3 --since 1d
    """
    seconds = parse_duration(since) if since else None
    cluster = ctx.obj.cluster()
    filters = dict(node=node, task=task, actions=action or (), actor=actor, since=seconds)
    start = cluster.newest_event_id() if follow else 0
    found = cluster.events(**filters, limit=limit)
    if not follow:
        if json:
            print_json([e.to_json() for e in found])
            return
        from ..render import emit, events_table

        emit(events_table(found, cluster.now()))
        return
    _follow(cluster, list(reversed(found)), max([start] + [e.id for e in found]), filters, json)


def _follow(cluster, shown: list, after_id: int, filters: dict, json: bool) -> None:
    from ..render import event_line

    filters = {k: v for k, v in filters.items() if k != "since"}  # new ones are recent
    try:
        for event in shown:
            _print(event, json, event_line)
        for event in cluster.follow_events(after_id, **filters):
            _print(event, json, event_line)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


def _print(event, json: bool, event_line) -> None:
    if json:
        sys.stdout.write(json_module.dumps(event.to_json()) + "\n")
    else:
        sys.stdout.write(event_line(event) + "\n")
    sys.stdout.flush()

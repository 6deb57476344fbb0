"""The audit trail: each change and its event are both there or both absent."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Callable

import pytest

import octonodes
from helpers import octonodes as run_cli
from octonodes.audit import Action
from octonodes.errors import DatabaseError
from octonodes.store.base import Registration

ACTOR = "alice@ops-1"


def reg(name: str, instance: str = "i-1") -> Registration:
    return Registration(name=name, instance_id=instance, host="test-host", pid=1,
                        version="test", heartbeat_interval=10.0)


@dataclass
class Kind:
    """One kind of change: how to prepare for it, make it, and see it made."""

    action: Action
    act: Callable
    made: Callable  # (cluster) -> bool: is the change in the database?
    setup: Callable = lambda c, clock: None
    actor: str = ACTOR
    reason: str | None = None


def _lost(c, clock):
    c.store.register(reg("n"))
    clock.advance(120)


KINDS = [
    Kind(Action.NODE_REGISTER, lambda c: c.store.register(reg("n")),
         lambda c: [n.name for n in c.nodes()] == ["n"], actor="node n"),
    Kind(Action.NODE_TAKE_OVER, lambda c: c.store.register(reg("n", "i-2")),
         lambda c: c.node("n").instance_id == "i-2", actor="node n",
         setup=lambda c, clock: (c.store.register(reg("n")), clock.advance(120))),
    Kind(Action.NODE_STOP, lambda c: c.store.mark_stopped("n", "i-1"),
         lambda c: c.node("n").stopped_at is not None, actor="node n",
         setup=lambda c, clock: c.store.register(reg("n"))),
    Kind(Action.NODE_LOST, lambda c: c.store.reap(actor="node finder"),
         lambda c: c.events(actions=["node.lost"]) != [], actor="node finder", setup=_lost),
    Kind(Action.NODE_FENCE, lambda c: c.store.note_fenced("n", "i-1", {"cut_off_seconds": 50}),
         lambda c: True, actor="node n", setup=lambda c, clock: c.store.register(reg("n"))),
    Kind(Action.NODE_DRAIN, lambda c: c.drain("n", actor=ACTOR, reason="disk swap"),
         lambda c: c.node("n").drain, reason="disk swap",
         setup=lambda c, clock: c.store.register(reg("n"))),
    Kind(Action.NODE_UNDRAIN, lambda c: c.undrain("n", actor=ACTOR, reason="done"),
         lambda c: not c.node("n").drain, reason="done",
         setup=lambda c, clock: (c.store.register(reg("n")), c.drain("n"))),
    Kind(Action.NODE_CAP, lambda c: c.set_cap("n", 9, actor=ACTOR, reason="bigger host"),
         lambda c: c.node("n").task_cap == 9, reason="bigger host",
         setup=lambda c, clock: c.store.register(reg("n"))),
    Kind(Action.NODE_DELETE, lambda c: c.delete("n", force=True, actor=ACTOR, reason="gone"),
         lambda c: c.nodes() == [], reason="gone",
         setup=lambda c, clock: c.store.register(reg("n"))),
    Kind(Action.TASK_ADD, lambda c: c.add_tasks([["true"]] * 3, actor=ACTOR),
         lambda c: len(c.tasks()) == 3),
    Kind(Action.TASK_CANCEL, lambda c: c.cancel(1, actor=ACTOR, reason="wrong input"),
         lambda c: c.task(1).state == "Canceled", reason="wrong input",
         setup=lambda c, clock: c.add_task(["true"])),
    Kind(Action.SETTING_SET, lambda c: c.set_setting("queue_timeout", "2h", actor=ACTOR),
         lambda c: c.stored_settings().get("queue_timeout") == "2h"),
    Kind(Action.APIKEY_ADD, lambda c: c.add_api_key("ci", "operator", actor=ACTOR),
         lambda c: [k.name for k in c.api_keys()] == ["ci"]),
    Kind(Action.APIKEY_REVOKE, lambda c: c.revoke_api_key("ci", actor=ACTOR),
         lambda c: c.api_keys()[0].revoked,
         setup=lambda c, clock: c.add_api_key("ci")),
]


def refuse_events(cluster) -> Callable[[], None]:
    """Make every event insert fail, as a full disk or a broken table would,
    with a trigger in the real database; returns what undoes it."""
    if cluster.store.kind == "sqlite":
        conn = sqlite3.connect(cluster.db)
        conn.execute("""CREATE TRIGGER refuse_events BEFORE INSERT ON events
                        BEGIN SELECT RAISE(ABORT, 'event insert refused'); END""")
        conn.commit()

        def undo() -> None:
            conn.execute("DROP TRIGGER refuse_events")
            conn.commit()
            conn.close()
        return undo
    import psycopg

    conn = psycopg.connect(cluster.store._url, autocommit=True)
    conn.execute("""CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'event insert refused'; END $$""")
    conn.execute("""CREATE TRIGGER refuse_events BEFORE INSERT ON events
                    FOR EACH ROW EXECUTE FUNCTION refuse_events()""")

    def undo() -> None:
        conn.execute("DROP TRIGGER refuse_events ON events")
        conn.execute("DROP FUNCTION refuse_events()")
        conn.close()
    return undo


@pytest.mark.parametrize("kind", KINDS, ids=[k.action.value for k in KINDS])
def test_each_change_is_recorded_with_its_event(clocked, kind):
    cluster, clock = clocked
    kind.setup(cluster, clock)
    before = cluster.newest_event_id()
    kind.act(cluster)
    assert kind.made(cluster)
    [event] = [e for e in cluster.events(after_id=before) if e.action == kind.action]
    assert event.actor == kind.actor and event.reason == kind.reason
    assert event.at == clock.now  # the store's clock
    assert event.id > before


@pytest.mark.parametrize("kind", [k for k in KINDS if k.action is not Action.NODE_FENCE],
                         ids=[k.action.value for k in KINDS if k.action is not Action.NODE_FENCE])
def test_a_change_whose_event_cannot_be_written_is_not_made(clocked, kind):
    cluster, clock = clocked
    kind.setup(cluster, clock)
    before = cluster.newest_event_id()
    undo = refuse_events(cluster)
    try:
        with pytest.raises(DatabaseError, match="event insert refused"):
            kind.act(cluster)
        assert not kind.made(cluster)
    finally:
        undo()
    assert cluster.events(after_id=before) == []
    kind.act(cluster)  # once events can be written again, so can the change
    assert kind.made(cluster)
    assert [e.action for e in cluster.events(after_id=before)] == [kind.action]


def test_what_changes_nothing_records_nothing(cluster):
    cluster.store.register(reg("n"))
    cluster.drain("n")
    before = cluster.newest_event_id()
    assert cluster.drain("n") is False
    cluster.set_cap("n", 5)  # the cap it has
    cluster.add_api_key("ci")
    after_key = cluster.newest_event_id()
    cluster.revoke_api_key("ci")
    cluster.revoke_api_key("ci")
    assert [e.action for e in cluster.events(after_id=before)] == ["apikey.revoke", "apikey.add"]
    assert cluster.newest_event_id() == after_key + 1


def test_a_batch_is_one_event_and_found_by_any_of_its_tasks(cluster):
    added = cluster.add_tasks([["true"]] * 50)
    [event] = cluster.events(actions=["task.add"])
    assert (event.task_first, event.task_last) == (added[0].id, added[-1].id)
    assert event.details["count"] == 50
    assert [e.id for e in cluster.events(task=added[25].id)] == [event.id]
    assert cluster.events(task=added[-1].id + 1) == []


def test_a_node_found_lost_is_recorded_once_per_instance(clocked):
    cluster, clock = clocked
    cluster.store.register(reg("n"))
    clock.advance(120)
    cluster.store.reap(actor="node a")
    cluster.store.reap(actor="node b")
    lost = cluster.events(actions=["node.lost"])
    assert [e.actor for e in lost] == ["node a"] and lost[0].node == "n"
    # It comes back (checks in again), then is lost again: a second event.
    assert cluster.store.check_in("n", "i-1", shutting_down=False, heartbeat_interval=10.0)
    clock.advance(120)
    cluster.store.reap(actor="node b")
    assert len(cluster.events(actions=["node.lost"])) == 2
    # A clean stop is not a loss.
    cluster.store.register(reg("m", "i-m"))
    cluster.store.mark_stopped("m", "i-m")
    clock.advance(120)
    cluster.store.reap()
    assert [e.node for e in cluster.events(actions=["node.lost"])] == ["n", "n"]


def test_events_age_out_after_event_retention(clocked):
    cluster, clock = clocked
    cluster.set_setting("event_retention", "1d")
    cluster.add_task(["true"])
    clock.advance(hours=23)
    cluster.store.reap()
    assert len(cluster.events()) == 2
    clock.advance(hours=2)
    cluster.store.reap()
    assert [e.action for e in cluster.events()] == []  # both older than a day now
    cluster.add_task(["true"])
    assert [e.action for e in cluster.events()] == ["task.add"]


def test_filters(clocked):
    cluster, clock = clocked
    cluster.store.register(reg("a"))
    cluster.store.register(reg("b", "i-b"))
    clock.advance(3600)
    cluster.drain("a", actor="bob@h", reason="r1")
    cluster.set_cap("b", 3, actor="carol@h")
    assert [e.action for e in cluster.events(node="a")] == ["node.drain", "node.register"]
    assert [e.actor for e in cluster.events(actor="CAROL")] == ["carol@h"]
    assert [e.node for e in cluster.events(since=60)] == ["b", "a"]
    assert [e.action for e in cluster.events(actions=["node.cap", "node.drain"])] == \
        ["node.cap", "node.drain"]
    assert len(cluster.events(limit=1)) == 1


def test_the_actor_is_user_at_host_or_octonodes_actor(cluster, monkeypatch):
    import getpass
    import socket

    cluster.add_task(["true"])
    assert cluster.events()[0].actor == f"{getpass.getuser()}@{socket.gethostname()}"
    monkeypatch.setenv("OCTONODES_ACTOR", "deploy-bot (pipeline 77)")
    cluster.add_task(["true"])
    assert cluster.events()[0].actor == "deploy-bot (pipeline 77)"


# -- the command line -----------------------------------------------------------


def test_cli_reasons_show_in_list_show_json_and_events(cluster):
    cluster.store.register(reg("node-1"))
    cluster.store.register(reg("node-2", "i-2"))
    env = {"OCTONODES_ACTOR": "alice@ops-1"}
    drained = run_cli(cluster.db, "drain", "node-1", "--reason", "kernel upgrade CHG-1042", env=env)
    assert drained.returncode == 0, drained.stderr
    node = json.loads(run_cli(cluster.db, "show", "node-1", "--json").stdout)
    assert node["drain_reason"] == "kernel upgrade CHG-1042"
    assert node["drained_by"] == "alice@ops-1" and node["drained_at"]
    wide = {"COLUMNS": "200"}
    listed = run_cli(cluster.db, "list", env=wide).stdout
    assert "Reason" in listed and "kernel upgrade CHG-1042 (alice@ops-1)" in listed
    assert "kernel upgrade CHG-1042" in run_cli(cluster.db, "show", "node-1", env=wide).stdout
    events = json.loads(run_cli(cluster.db, "events", "--node", "node-1", "--json").stdout)
    assert [(e["action"], e["actor"], e["reason"]) for e in events][0] == \
        ("node.drain", "alice@ops-1", "kernel upgrade CHG-1042")
    undrained = run_cli(cluster.db, "undrain", "node-1", "--reason", "done", env=env)
    assert undrained.returncode == 0
    node = json.loads(run_cli(cluster.db, "show", "node-1", "--json").stdout)
    assert (node["drain_reason"], node["drained_by"], node["drained_at"]) == (None, None, None)
    assert "Reason" not in run_cli(cluster.db, "list").stdout  # no node is drained


@pytest.mark.parametrize("command", [["drain", "node-1"], ["undrain", "node-1"],
                                     ["cap", "node-1", "3"], ["delete", "node-1"],
                                     ["task", "cancel", "1"]])
def test_a_reason_over_500_characters_is_refused_and_nothing_changes(cluster, command):
    cluster.store.register(reg("node-1"))
    cluster.add_task(["true"])
    before = cluster.newest_event_id()
    refused = run_cli(cluster.db, *command, "--reason", "x" * 10_000)
    assert refused.returncode == 2
    assert refused.stderr == "Error: the reason is 10000 characters long; the limit is 500\n"
    assert cluster.newest_event_id() == before
    ok = run_cli(cluster.db, *command, "--reason", "y" * 500, "--force" if "delete" in command else "--help")
    assert ok.returncode == 0, ok.stderr


def test_cli_events_filters_and_bad_input(cluster):
    cluster.store.register(reg("node-1"))
    cluster.add_tasks([["true"]] * 3)
    assert run_cli(cluster.db, "task", "cancel", "2", "--reason", "oops").returncode == 0
    by_task = json.loads(run_cli(cluster.db, "events", "--task", "2", "--json").stdout)
    assert [e["action"] for e in by_task] == ["task.cancel", "task.add"]
    actions = json.loads(run_cli(cluster.db, "events", "--action", "node.register",
                                 "--action", "task.cancel", "--json").stdout)
    assert [e["action"] for e in actions] == ["task.cancel", "node.register"]
    table = run_cli(cluster.db, "events", "--since", "1h", env={"COLUMNS": "200"})
    assert table.returncode == 0 and "task.cancel" in table.stdout and "oops" in table.stdout
    bad = run_cli(cluster.db, "events", "--action", "node.explode")
    assert bad.returncode == 2 and "the actions are: node.drain" in bad.stderr
    assert run_cli(cluster.db, "events", "--limit", "0").returncode == 2
    assert run_cli(cluster.db, "events", "--since", "-5m").returncode == 2
    assert run_cli(cluster.db, "events", "--node", "bad name!").returncode == 2

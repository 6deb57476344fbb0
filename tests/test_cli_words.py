"""The command line speaks in operator words: help without Python types,
values in the forms operators type (`-s Running,Drained`), and errors that
say what to give instead of a library's wording."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from helpers import register
from octonodes.cli.app import app
from test_docs_cli import gen_cli

INTERNALS = re.compile(r"<[a-z][^>]*>|\{[a-z-][^}]*\}|list\[|int range|\bstr\b|pydantic|Input should")


def invoke(*args: str, db: str | None = None):
    return CliRunner(env={"COLUMNS": "120", "OCTONODES_DEBUG": None}).invoke(
        app, [*(["--db", db] if db else []), *args])


def test_no_help_page_shows_python_or_library_internals():
    for path, _ in gen_cli.walk():
        text = gen_cli.help_text(path)
        text = text.replace("`<database>-packages/`", "")  # a path pattern, in prose
        assert not INTERNALS.search(text), f"{' '.join(path)} --help:\n{text}"


@pytest.mark.parametrize("args, wanted", [
    (["list"], "--status STATUS"),
    (["drain"], "--timeout DURATION"),
    (["check"], "--warn-wait DURATION"),
    (["task", "add"], "Usage: octonodes task add [OPTIONS] -- COMMAND [ARG]..."),
    (["task", "add"], "--retries N"),
    (["task", "wait"], "--timeout DURATION"),
    (["cap"], "Usage: octonodes cap [OPTIONS] NODE CAP"),
    (["task", "show"], "Usage: octonodes task show [OPTIONS] ID"),
])
def test_help_names_values_in_operator_words(args, wanted):
    result = invoke(*args, "--help")
    assert result.exit_code == 0, result.output
    assert wanted in result.output, result.output


def test_status_takes_a_comma_separated_list_as_well_as_repeats(cluster, db):
    for name in ("node-1", "node-2", "node-3"):
        register(cluster, name)
    cluster.drain("node-2")
    by_comma = invoke("list", "-s", "Running,drained", "--json", db=db)
    assert by_comma.exit_code == 0, by_comma.output
    by_repeat = invoke("list", "-s", "Running", "-s", "Drained", "--json", db=db)
    assert by_comma.stdout == by_repeat.stdout
    import json

    assert sorted(n["name"] for n in json.loads(by_comma.stdout)) == ["node-1", "node-2", "node-3"]
    only = json.loads(invoke("list", "-s", "Drained", "--json", db=db).stdout)
    assert [n["name"] for n in only] == ["node-2"]
    bad = invoke("list", "-s", "Running,Sleeping", db=db)
    assert bad.exit_code == 2 and "'Sleeping' is not one of" in bad.stderr, bad.output
    states = invoke("task", "list", "--state", "Queued,Failed", "--json", db=db)
    assert states.exit_code == 0, states.output


@pytest.mark.parametrize("args, line", [
    (["cap", "node-1", "abc"], "Error: invalid task cap 'abc': give a whole number from 0 to 1000"),
    (["cap", "node-1", "--", "-1"], "Error: invalid task cap '-1': give a whole number from 0 to 1000"),
    (["cap", "node-1", "1001"], "Error: invalid task cap '1001': give a whole number from 0 to 1000"),
    (["cap", "node-1", "99999999999999999999999"],
     "Error: invalid task cap '99999999999999999999999': give a whole number from 0 to 1000"),
    (["task", "show", "abc"], "Error: invalid task id 'abc': give a whole number"),
    (["task", "wait", "1.5"], "Error: invalid task id '1.5': give a whole number"),
    (["task", "log", "--", "--5"], "Error: invalid task id '--5': give a whole number"),
    (["task", "list", "--limit", "ten"], "Error: invalid limit 'ten': give a whole number 1 or more"),
    (["task", "add", "--retries", "-3", "--", "true"],
     "Error: invalid retries '-3': give a whole number 0 or more"),
    (["node", "run", "--name", "n", "--cap", "lots"],
     "Error: invalid task cap 'lots': give a whole number from 0 to 1000"),
])
def test_a_bad_number_says_what_to_give_in_our_words(cluster, db, args, line):
    result = invoke(*args, db=db)
    assert result.exit_code == 2, result.output
    errors = [l for l in result.stderr.splitlines() if l.startswith("Error:")]
    assert errors == [line], result.stderr
    assert "Traceback" not in result.output


def test_a_good_cap_still_works(cluster, db):
    register(cluster, "node-1")
    result = invoke("cap", "node-1", "7", db=db)
    assert result.exit_code == 0, result.output
    assert cluster.node("node-1").task_cap == 7

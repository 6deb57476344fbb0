"""Numbers a task command cannot use end in a usage error (exit 2) or "no
such task" (exit 3), never in an internal error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from octonodes.cli.app import app

HUGE = "99999999999999999999999"


def invoke(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


def error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert lines and lines[-1].startswith("Error:"), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[-1]


@pytest.mark.parametrize("retries", ["99999999999999999999", "1001", "-1"])
def test_task_add_refuses_retries_out_of_range(cluster, db, retries):
    result = invoke(db, "task", "add", "--retries", retries, "--", "true")
    assert result.exit_code == 2, result.output
    error_line(result)
    assert cluster.tasks() == []


def test_task_add_takes_the_most_retries(cluster, db):
    result = invoke(db, "task", "add", "--retries", "1000", "--", "true")
    assert result.exit_code == 0, result.output
    assert cluster.task(int(result.stdout)).retries == 1000


@pytest.mark.parametrize("command", [["task", "show"], ["task", "cancel"], ["task", "wait"],
                                     ["task", "log"]])
@pytest.mark.parametrize("task_id", [HUGE, "9223372036854775808", "0", "-5"])
def test_a_task_id_that_cannot_exist_is_no_such_task(cluster, db, command, task_id):
    result = invoke(db, *command, "--", task_id)
    assert result.exit_code == 3, result.output
    assert "no task" in error_line(result)


@pytest.mark.parametrize("field, value", [
    ("queue_timeout", 99999999999 * 86400.0), ("timeout", -5.0), ("name", "a\0b"),
    ("command", ["true", "\udcff"]), ("retries", 1001)])
def test_add_tasks_checks_every_spec_it_is_given(cluster, field, value):
    """The Python API's batch checks each task as `add_task` does: one bad
    spec refuses the batch, and nothing is queued."""
    from octonodes.errors import UsageError
    from octonodes.store.base import TaskSpec

    bad = TaskSpec(**{"command": ["true"], field: value})
    with pytest.raises(UsageError):
        cluster.add_tasks([TaskSpec(command=["true"]), bad])
    assert cluster.tasks() == []


@pytest.mark.parametrize("args", [["events", "--actor", "\udcff"],
                                  ["task", "list", "--node", "\udcff"]])
def test_a_filter_that_is_not_text_is_a_usage_error(cluster, db, args):
    """An argument the shell passed as bytes that are not UTF-8."""
    result = invoke(db, *args)
    assert result.exit_code == 2, result.output
    error_line(result)

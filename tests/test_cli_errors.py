"""Every bad input of the CLI: its exit code, exactly one
`Error:` line on stderr, no traceback, and nothing written.

Most cases run the CLI in-process through Typer's CliRunner (fast); a few
representative ones run the real console script as a process, so the whole
path (`python -m octonodes`, `main()`) is covered too.

Cases about a SQLite *file* (missing, random bytes, a directory, a path that
cannot be opened, a faked schema version) use their own paths under
`tmp_path` and run once, whatever backends are selected; the rest run on
every backend through the `db`/`cluster` fixtures.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

import octonodes
import helpers
from octonodes.cli.app import app
from octonodes.store.base import Registration

NODE_READS = [
    ["list"], ["list", "--json"], ["show", "node-1"], ["show", "node-1", "--json"],
    ["config"], ["config", "--json"], ["task", "list"], ["task", "show", "1"],
]
CHECK = [["check"], ["check", "--json"]]
WRITES = [
    ["drain", "node-1"], ["undrain", "node-1"], ["cap", "node-1", "3"], ["delete", "node-1"],
    ["delete", "node-1", "--force"], ["config", "set", "heartbeat_interval", "5s"],
    ["task", "add", "--", "true"], ["task", "cancel", "1"],
]
CREATORS = [["init"], ["node", "run", "--name", "node-1"]]
SIDECARS = ("-wal", "-shm", "-journal")


@pytest.fixture(autouse=True)
def _restore_node_logging():
    """`node run` in-process sets up the "octonodes" logger for stderr (and
    stops it propagating); put it back so later tests' log capture works."""
    logger = logging.getLogger("octonodes")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def invoke(db: str, *args: str):
    return CliRunner(env={"OCTONODES_DEBUG": None, "COLUMNS": "250"}).invoke(
        app, ["--db", db, *args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def assert_unknown(result) -> str:
    """`check`'s UNKNOWN: one line on stdout, nothing on stderr; returns the line."""
    output = result.stdout + result.stderr
    assert result.exit_code == 3, f"exit {result.exit_code}, wanted 3:\n{output}"
    assert "Traceback" not in output
    assert result.stderr == "", output  # a monitoring plugin speaks once, on stdout
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("OCTONODES UNKNOWN - "), output
    return lines[0]


def assert_error(result, code: int, *, contains: str | None = None) -> str:
    """Exit `code`, one `Error:` line on stderr, no traceback; returns the line."""
    output = result.stdout + result.stderr
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{output}"
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert "Traceback" not in output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, f"wanted one Error: line on stderr, got {lines}:\n{output}"
    if contains:
        assert contains in lines[0], lines[0]
    return lines[0]


def assert_usage_or_runtime_error(result, code: int, *, stdout_empty: bool = True) -> str:
    line = assert_error(result, code)
    if stdout_empty:
        assert result.stdout == "", result.stdout
    return line


# -- what "nothing written" means -------------------------------------------------


def snapshot(cluster: octonodes.Cluster) -> tuple:
    """Everything stored, read through the library (backend-neutral); the
    derived fields (status, offline reason) are left out."""
    nodes = []
    for node in cluster.nodes():
        doc = node.to_json()
        for derived in ("status", "offline_reason", "offline_since"):
            doc.pop(derived)
        nodes.append(doc)
    tasks = [t.to_json() for t in cluster.tasks(limit=None)]
    return nodes, cluster.stored_settings(), tasks


def file_state(path: Path) -> dict:
    """The bytes and mtime of a file (or a directory's listing) and which
    SQLite side files exist next to it."""
    state = {"sidecars": sorted(s for s in SIDECARS if Path(f"{path}{s}").exists())}
    if path.is_dir():
        state["listing"] = sorted(os.listdir(path))
    elif path.exists():
        state["bytes"] = path.read_bytes()
        state["mtime"] = path.stat().st_mtime_ns
        state["mode"] = path.stat().st_mode
    else:
        state["missing"] = True
    return state


def settled(result) -> None:
    """Let go of what an in-process run left behind (its exception keeps the
    store's frames alive), as the end of a real process would: an SQLite
    connection closes and removes its empty -wal and -shm files."""
    result.exception = result.exc_info = None
    gc.collect()


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def populated(cluster) -> octonodes.Cluster:
    """A cluster with something in every table: two nodes, a task, a setting."""
    for name in ("node-1", "node-2"):
        cluster.store.register(Registration(
            name=name, instance_id=f"instance-{name}", host="host-a", pid=100,
            version="test", heartbeat_interval=10.0))
    cluster.drain("node-2")
    cluster.set_cap("node-1", 4)
    cluster.set_setting("queue_timeout", "2h")
    cluster.add_task(["true"], name="queued")
    return cluster


@pytest.fixture
def unchanged(populated):
    """Yields the cluster; afterwards asserts its stored contents did not change."""
    before = snapshot(populated)
    yield populated
    assert snapshot(populated) == before


# -- SQLite files that are missing, not databases, or cannot be opened -----------------


@pytest.fixture
def missing(tmp_path) -> Path:
    """A database path whose folder does not exist either: nothing may create it."""
    return tmp_path / "not-here" / "cluster.db"


@pytest.mark.parametrize("args", NODE_READS + WRITES, ids=" ".join)
def test_a_missing_database_is_exit_6_and_creates_nothing(tmp_path, missing, args):
    result = invoke(str(missing), *args)
    line = assert_usage_or_runtime_error(result, 6)
    assert "octonodes init" in line  # says how to make one
    assert str(missing) in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", CHECK, ids=" ".join)
def test_check_on_a_missing_database_is_unknown_and_creates_nothing(tmp_path, missing, args):
    result = invoke(str(missing), *args)
    if "--json" in args:
        assert result.exit_code == 3 and result.stderr == "", result.output
        assert json.loads(result.stdout)["status"] == "UNKNOWN"
    else:
        assert "octonodes init" in assert_unknown(result)
    assert os.listdir(tmp_path) == []


def test_a_missing_database_in_an_existing_folder_is_not_created(tmp_path):
    path = tmp_path / "cluster.db"
    for args in NODE_READS + WRITES:
        assert invoke(str(path), *args).exit_code == 6, args
    assert os.listdir(tmp_path) == []


def test_a_missing_database_through_the_real_cli(tmp_path, missing):
    for args in (["list"], ["drain", "node-1"]):
        result = helpers.octonodes(str(missing), *args, env={"OCTONODES_DEBUG": "0"})
        assert result.returncode == 6, result
        assert result.stdout == ""
        assert len(error_lines(result.stderr)) == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("Error:") and "octonodes init" in result.stderr
    assert os.listdir(tmp_path) == []


def test_an_sqlite_url_to_a_missing_database(tmp_path):
    url = f"sqlite:///{tmp_path}/cluster.db"  # sqlite:////absolute/path
    assert_error(invoke(url, "list"), 6, contains="octonodes init")
    assert os.listdir(tmp_path) == []


def _junk(path: Path) -> Path:
    path.write_bytes(os.urandom(8192))
    return path


def _foreign(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.execute("INSERT INTO accounts (owner) VALUES ('someone else')")
    conn.commit()
    conn.close()
    return path


def _empty(path: Path) -> Path:
    path.touch()
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _under_a_file(path: Path) -> Path:
    # Tests may run as root, where permission bits stop neither reads nor
    # writes; a path whose parent is a regular file cannot be opened or
    # created by anyone, so it stands for "an unreadable or unwritable path".
    parent = path.parent / "a-regular-file"
    parent.write_text("not a folder\n")
    return parent / "cluster.db"


BAD_FILES = {
    "random bytes": _junk,
    "a foreign SQLite database": _foreign,
    "an empty file": _empty,
    "a directory": _directory,
    "a path under a regular file": _under_a_file,
}


# An empty file is an empty SQLite database: init and node run may use it.
UNUSABLE = [pytest.param(kind, args, id=f"{' '.join(args)}-{kind}")
            for args in NODE_READS + WRITES + CREATORS for kind in BAD_FILES
            if not (kind == "an empty file" and args in CREATORS)]


@pytest.mark.parametrize("kind, args", UNUSABLE)
def test_a_path_that_is_not_a_usable_database_is_exit_6_and_left_alone(tmp_path, kind, args):
    path = BAD_FILES[kind](tmp_path / "cluster.db")
    watched = path if path.exists() else path.parent
    before = file_state(watched), sorted(os.listdir(tmp_path))
    result = invoke(str(path), *args)
    assert_usage_or_runtime_error(result, 6)
    settled(result)
    assert (file_state(watched), sorted(os.listdir(tmp_path))) == before


@pytest.mark.parametrize("kind", BAD_FILES)
def test_check_on_a_path_that_is_not_a_usable_database_is_unknown(tmp_path, kind):
    path = BAD_FILES[kind](tmp_path / "cluster.db")
    watched = path if path.exists() else path.parent
    before = file_state(watched)
    assert_unknown(invoke(str(path), "check"))
    assert file_state(watched) == before


def test_a_file_that_is_not_a_database_through_the_real_cli(tmp_path):
    path = _junk(tmp_path / "cluster.db")
    before = file_state(path)
    for args in (["list"], ["drain", "node-1"], ["node", "run", "--name", "node-1"]):
        result = helpers.octonodes(str(path), *args, env={"OCTONODES_DEBUG": "0"}, timeout=30)
        assert result.returncode == 6, result
        assert len(error_lines(result.stderr)) == 1, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert file_state(path) == before


def _run_without_override(db: Path, *args: str):
    """The real CLI, meeting the file's mode bits. Root ignores them through
    CAP_DAC_OVERRIDE; as root the CLI runs without that capability (setpriv)."""
    import shutil
    import subprocess
    import sys

    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to run this test as root"
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    return subprocess.run([*prefix, sys.executable, "-m", "octonodes", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("mode, args", [(0o000, ["list"]), (0o000, ["drain", "node-1"]),
                                        (0o400, ["drain", "node-1"]),
                                        (0o400, ["config", "set", "cancel_grace", "5s"])])
def test_an_unreadable_or_read_only_file_is_exit_6(tmp_path, mode, args):
    path = tmp_path / "cluster.db"
    with octonodes.open(str(path), create=True) as c:
        c.store.initialize()
        c.store.register(Registration(name="node-1", instance_id="i-1", host="h", pid=1,
                                      version="test", heartbeat_interval=10.0))
    path.chmod(mode)
    before = file_state(path)
    result = _run_without_override(path, *args)
    assert result.returncode == 6, (result.returncode, result.stdout, result.stderr)
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert "Traceback" not in result.stderr
    path.chmod(0o600)
    assert file_state(path) | {"mode": None} == before | {"mode": None}
    with octonodes.open(str(path)) as c:
        assert c.node("node-1").drain is False
        assert "cancel_grace" not in c.stored_settings()


# -- schema versions (faked by editing the meta table directly) ---------------------


@pytest.fixture
def sqlite_db(tmp_path) -> Path:
    """An initialised SQLite file with one node, closed again."""
    path = tmp_path / "cluster.db"
    with octonodes.open(str(path), create=True) as c:
        c.store.initialize()
        c.store.register(Registration(name="node-1", instance_id="i-1", host="h", pid=1,
                                      version="test", heartbeat_interval=10.0))
    return path


def set_meta(path: Path, **values: str | None) -> None:
    conn = sqlite3.connect(path)
    for key, value in values.items():
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
    conn.commit()
    conn.close()


def current_version() -> int:
    from octonodes.store.sqlite_schema import SCHEMA_VERSION

    return SCHEMA_VERSION


@pytest.mark.parametrize("args", NODE_READS + WRITES + [["node", "run", "--name", "node-1"]],
                         ids=" ".join)
def test_an_out_of_date_schema_is_refused(sqlite_db, args):
    set_meta(sqlite_db, schema_version=str(current_version() - 1))
    before = file_state(sqlite_db), dump(sqlite_db)
    result = invoke(str(sqlite_db), *args)
    line = assert_usage_or_runtime_error(result, 6)
    assert "octonodes init" in line
    settled(result)
    assert (file_state(sqlite_db), dump(sqlite_db)) == before


@pytest.mark.parametrize("meta", [
    {"schema_version": "+1", "min_compatible": "+1"},
    {"schema_version": "+5", "min_compatible": "+2"},
    {"schema_version": "+1", "min_compatible": None},  # no promise recorded: not usable
], ids=["min_compatible-newer", "much-newer", "no-min_compatible"])
@pytest.mark.parametrize("args", [["list"], ["show", "node-1"], ["config"], ["drain", "node-1"],
                                  ["config", "set", "cancel_grace", "5s"], ["init"],
                                  ["node", "run", "--name", "node-1"]], ids=" ".join)
def test_a_too_new_incompatible_schema_is_refused(sqlite_db, meta, args):
    version = current_version()
    set_meta(sqlite_db, **{k: None if v is None else str(version + int(v)) for k, v in meta.items()})
    before = file_state(sqlite_db), dump(sqlite_db)
    result = invoke(str(sqlite_db), *args)
    line = assert_usage_or_runtime_error(result, 6)
    assert "newer" in line
    settled(result)
    assert (file_state(sqlite_db), dump(sqlite_db)) == before


def test_check_on_an_incompatible_schema_is_unknown(sqlite_db):
    set_meta(sqlite_db, schema_version=str(current_version() + 1),
             min_compatible=str(current_version() + 1))
    assert "upgrade octonodes" in assert_unknown(invoke(str(sqlite_db), "check"))


def test_a_newer_schema_that_this_version_may_use_still_works(sqlite_db):
    set_meta(sqlite_db, schema_version=str(current_version() + 1),
             min_compatible=str(current_version()))
    result = invoke(str(sqlite_db), "list", "--json")
    assert result.exit_code == 0, result.output
    result = invoke(str(sqlite_db), "drain", "node-1")
    assert result.exit_code == 0, result.output
    with octonodes.open(str(sqlite_db)) as c:
        assert c.node("node-1").drain is True
    result = invoke(str(sqlite_db), "config", "set", "cancel_grace", "5s")
    assert result.exit_code == 0, result.output


# -- unsupported database URLs (no database touched at all) ----------------------------


@pytest.mark.parametrize("url", ["mysql://db.example/octonodes", "http://example.com/x.db",
                                 "sqlite://relative.db", "sqlite:", "redis://localhost:6379/0"])
@pytest.mark.parametrize("args", [["list"], ["drain", "node-1"], ["init"]], ids=" ".join)
def test_an_unsupported_database_url_is_a_usage_error(tmp_path, monkeypatch, url, args):
    monkeypatch.chdir(tmp_path)
    line = assert_usage_or_runtime_error(invoke(url, *args), 2)
    assert "sqlite" in line or "postgresql" in line  # says what is supported
    assert os.listdir(tmp_path) == []


def test_an_unsupported_url_through_the_real_cli(tmp_path):
    result = helpers.octonodes("mysql://db.example/octonodes", "list",
                               env={"OCTONODES_DEBUG": "0"})
    assert result.returncode == 2, result
    assert len(error_lines(result.stderr)) == 1 and "Traceback" not in result.stderr


def test_the_environment_variable_is_read_like_db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner(env={"OCTONODES_DB": "mysql://db.example/x"}).invoke(app, ["list"])
    assert_error(result, 2)
    result = CliRunner(env={"OCTONODES_DB": str(tmp_path / "nope.db")}).invoke(app, ["list"])
    assert_error(result, 6, contains=str(tmp_path / "nope.db"))
    assert os.listdir(tmp_path) == []


# -- bad input on a good database (every backend) ------------------------------------


@pytest.mark.parametrize("args", [
    ["show", "ghost"], ["show", "ghost", "--json"], ["drain", "ghost"], ["undrain", "ghost"],
    ["cap", "ghost", "3"], ["delete", "ghost"], ["delete", "ghost", "--force"],
    ["drain", "ghost", "--wait", "--timeout", "1s"],
    ["show", "a" * 64],  # the longest valid name: well formed, just absent
], ids=lambda a: " ".join(a)[:40])
def test_an_unknown_node_is_exit_3(unchanged, db, args):
    line = assert_usage_or_runtime_error(invoke(db, *args), 3)
    assert args[1] in line


BAD_NAMES = [".hidden", "-dash-first", "_under", "has space", "slash/name", "a" * 65, "nodé",
             "semi;colon", "tab\tname"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("verb", [["show"], ["drain"], ["undrain"], ["delete"], ["cap", None]],
                         ids=lambda v: v[0])
def test_a_malformed_name_is_a_usage_error(unchanged, db, verb, name):
    args = [verb[0], "--", name] + (["3"] if verb[0] == "cap" else [])
    assert_usage_or_runtime_error(invoke(db, *args), 2)


@pytest.mark.parametrize("name", BAD_NAMES + [""])
def test_node_run_with_a_malformed_name_is_a_usage_error(unchanged, db, name):
    assert_usage_or_runtime_error(invoke(db, "node", "run", "--name", name), 2)


def test_node_run_with_a_malformed_name_creates_no_database(tmp_path):
    path = tmp_path / "cluster.db"
    assert_usage_or_runtime_error(invoke(str(path), "node", "run", "--name", "bad name"), 2)
    assert_usage_or_runtime_error(invoke(str(path), "node", "run", "--name", "n", "--cap", "1001"), 2)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", ["1001", "-1", "abc", "1.5", "99999999999999999999", ""])
def test_a_cap_out_of_range_is_a_usage_error(unchanged, db, value):
    assert_usage_or_runtime_error(invoke(db, "cap", "node-1", "--", value), 2)


@pytest.mark.parametrize("value", ["1001", "-1", "abc"])
def test_node_run_with_a_cap_out_of_range_is_a_usage_error(unchanged, db, value):
    assert_usage_or_runtime_error(invoke(db, "node", "run", "--name", "node-1", f"--cap={value}"), 2)


BAD_DURATIONS = ["nonsense", "0", "0s", "5x", "-1m", "1.5.3", "m", "10y", "1 d 2h"]


@pytest.mark.parametrize("value", BAD_DURATIONS)
@pytest.mark.parametrize("command", [
    # `--opt=VALUE` and `-- VALUE`, so a value like -1m is not read as an option
    ["drain", "node-1", "--timeout={}"],
    ["config", "set", "queue_timeout", "--", "{}"],
    ["config", "set", "heartbeat_interval", "--", "{}"],
    ["task", "add", "--timeout={}", "--", "true"],
    ["task", "add", "--queue-timeout={}", "--", "true"],
], ids=lambda c: " ".join(c))
def test_a_malformed_duration_is_a_usage_error(unchanged, db, command, value):
    args = [a.format(value) for a in command]
    line = assert_usage_or_runtime_error(invoke(db, *args), 2)
    assert "duration" in line


@pytest.mark.parametrize("args", [
    ["--timeout", "3651d", "--", "true"],
    ["--queue-timeout", "99999999999d", "--", "true"],
    ["--", "echo", "\udcff"],  # the byte 0xff, as Python reads a non-UTF-8 argument
    ["--name", "\udcfe", "--", "true"],
], ids=["timeout", "queue-timeout", "command", "name"])
def test_task_add_refuses_what_the_library_refuses(unchanged, db, args):
    """Ten years at most, and text a database can keep: exit 2, nothing queued."""
    result = helpers.octonodes(db, "task", "add", *args, env={"OCTONODES_DEBUG": "0"})
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(error_lines(result.stderr)) == 1 and "internal error" not in result.stderr, result
    assert "Traceback" not in result.stderr


def test_a_malformed_drain_timeout_leaves_drain_off(unchanged, db):
    assert_error(invoke(db, "drain", "node-1", "--timeout", "soon"), 2)
    assert unchanged.node("node-1").drain is False


@pytest.mark.parametrize("key", ["bogus", "heartbeat", "offline-after", "drain", "task_cap", ""])
def test_an_unknown_setting_is_a_usage_error(unchanged, db, key):
    line = assert_usage_or_runtime_error(invoke(db, "config", "set", key, "5s"), 2)
    assert "heartbeat_interval" in line  # names the settings there are


@pytest.mark.parametrize("key, value", [
    ("offline_after", "20s"),         # exactly twice the 10 s interval: must exceed it
    ("offline_after", "19s"),
    ("offline_after", "5s"),
    ("heartbeat_interval", "30s"),    # twice 30 s is exactly offline_after (60 s)
    ("heartbeat_interval", "1m"),
])
def test_offline_after_must_exceed_twice_the_heartbeat_interval(unchanged, db, key, value):
    line = assert_usage_or_runtime_error(invoke(db, "config", "set", key, value), 2)
    assert "offline_after" in line and "heartbeat_interval" in line


def test_the_boundary_just_past_twice_the_interval_is_accepted(populated, db):
    result = invoke(db, "config", "set", "offline_after", "21s")
    assert result.exit_code == 0, result.output
    assert populated.settings().offline_after == 21.0
    assert_error(invoke(db, "config", "set", "heartbeat_interval", "10.5s"), 2)
    assert populated.settings().heartbeat_interval == 10.0


def test_usage_errors_through_the_real_cli(unchanged, db):
    cases = [(["show", "bad name"], 2), (["config", "set", "bogus", "1"], 2),
             (["cap", "node-1", "1001"], 2), (["show", "ghost"], 3)]
    for args, code in cases:
        result = helpers.octonodes(db, *args, env={"OCTONODES_DEBUG": "0"})
        assert result.returncode == code, (args, result)
        assert result.stdout == ""
        assert len(error_lines(result.stderr)) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_delete_of_an_online_node_through_the_real_cli(unchanged, db):
    result = helpers.octonodes(db, "delete", "node-1", env={"OCTONODES_DEBUG": "0"})
    assert result.returncode == 4, result
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "node-1" in result.stderr and "online" in result.stderr


def test_a_bad_option_is_a_usage_error(unchanged, db):
    for args in (["list", "--bogus"], ["drain"], ["cap", "node-1"], ["show", "node-1", "extra"]):
        assert_usage_or_runtime_error(invoke(db, *args), 2)

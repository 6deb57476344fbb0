"""The runbooks work as written, and are safe to paste.

Each runbook's ```sh blocks are run in order, each with `bash -euo pipefail`,
as an operator would paste them, against real `node run` processes, once for
a node under systemd and once for a node stopped with a plain signal (blocks
marked `# with systemd` or `# without systemd` run in their mode only). The
only stand-in is `systemctl`: a script on PATH that hands each request to the
test, which stops (SIGTERM, as `KillMode=mixed` does) or starts the real node
process behind `octonodes@NAME`. Without systemd the blocks find the node's
pid themselves and send it SIGTERM; the test starts the node again where the
runbook tells the operator to.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import octonodes
from conftest import node_status, wait_status
from helpers import NodeProcess, wait_until

pytestmark = pytest.mark.slow

RUNBOOKS = Path(__file__).resolve().parent.parent / "docs" / "runbooks"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCK_TIMEOUT = 90.0

SYSTEMCTL = '''#!{python}
"""Stand-in for systemctl in the runbook tests: hands the request to the test
and exits with its answer."""
import os, sys, time, uuid

requests = os.environ["RUNBOOK_REQUESTS"]
name = os.path.join(requests, uuid.uuid4().hex)
with open(name + ".tmp", "w") as f:
    f.write("\\n".join(sys.argv[1:]))
os.rename(name + ".tmp", name + ".req")
deadline = time.monotonic() + {timeout}
while not os.path.exists(name + ".done"):
    if time.monotonic() > deadline:
        sys.exit("systemctl stand-in: the test did not answer")
    time.sleep(0.02)
with open(name + ".done") as f:
    code, _, message = f.read().partition("\\n")
if message:
    print(message, file=sys.stderr)
sys.exit(int(code))
'''

OCTONODES = '''#!/bin/sh
exec {python} -m octonodes "$@"
'''


MODES = {"systemd": "# with systemd", "signal": "# without systemd"}


def sh_blocks(runbook: str, mode: str | None = None) -> list[str]:
    """The runbook's ```sh blocks, in order; with `mode`, only those for it."""
    blocks = SH_BLOCK.findall((RUNBOOKS / runbook).read_text())
    assert blocks, f"{runbook} has no ```sh blocks"
    if mode is None:
        return blocks
    other = {marker for name, marker in MODES.items() if name != mode}
    return [b for b in blocks if b.split("\n", 1)[0] not in other]


class Systemd:
    """Answers the stand-in's requests with real node processes, one per
    `octonodes@NAME` unit."""

    def __init__(self, start_node, cluster: octonodes.Cluster, requests: Path) -> None:
        self.start_node = start_node
        self.cluster = cluster
        self.requests = requests
        self.units: dict[str, NodeProcess] = {}
        self.calls: list[list[str]] = []
        self.stopped: dict[str, list[int]] = {}
        """Exit codes of the node processes each unit's stops ended."""

    def adopt(self, node: NodeProcess) -> None:
        self.units[node.name] = node

    def serve(self) -> None:
        for node in self.units.values():
            node.proc.poll()  # reap a node a runbook stopped, so `kill -0` sees it gone
        for request in sorted(self.requests.glob("*.req")):
            args = request.read_text().split("\n")
            request.unlink()
            try:
                self._handle(args)
                answer = "0\n"
            except Exception as exc:  # the runbook sees a failing systemctl
                answer = f"1\nsystemctl stand-in: {exc}"
            done = request.with_suffix(".tmp")
            done.write_text(answer)
            done.rename(request.with_suffix(".done"))

    def _handle(self, args: list[str]) -> None:
        self.calls.append(args)
        verb, rest = args[0], args[1:]
        if verb == "disable" and "--now" in rest:
            verb, rest = "stop", [a for a in rest if a != "--now"]
        if len(rest) != 1:
            raise ValueError(f"unexpected arguments: {' '.join(args)}")
        match = re.fullmatch(r"octonodes@(.+?)(?:\.service)?", rest[0])
        if not match:
            raise ValueError(f"unknown unit {rest[0]!r}")
        name = match.group(1)
        node = self.units.get(name)
        if verb == "stop":
            if node is not None and node.alive():
                node.signal(signal.SIGTERM)
                self.stopped.setdefault(name, []).append(node.wait_exit(60))
        elif verb == "start":
            if node is None or not node.alive():
                self.units[name] = self.start_node(name)
        else:
            raise ValueError(f"the test does not emulate `systemctl {verb}`")


@pytest.fixture
def runbook_env(db, tmp_path):
    """The environment the runbooks run in, with the stand-ins on PATH."""
    bin_dir = tmp_path / "bin"
    requests = tmp_path / "systemctl-requests"
    bin_dir.mkdir()
    requests.mkdir()
    for name, text in (("systemctl", SYSTEMCTL), ("octonodes", OCTONODES)):
        script = bin_dir / name
        script.write_text(text.format(python=sys.executable, timeout=BLOCK_TIMEOUT))
        script.chmod(0o755)
    env = {**os.environ, "OCTONODES_DB": db, "RUNBOOK_REQUESTS": str(requests),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    env.pop("OCTONODES_DEBUG", None)
    return env


def run_runbook(runbook: str, mode: str, env: dict, systemd: Systemd, log: Path,
                during: dict[str, callable] | None = None) -> None:
    """Run each ```sh block of the runbook for `mode` in order; each must exit
    0. While a block whose text contains a key of `during` runs, call that
    function too (the test's side of the story)."""
    for number, block in enumerate(sh_blocks(runbook, mode)):
        hooks = [fn for key, fn in (during or {}).items() if key in block]
        with open(log, "ab") as out:
            out.write(f"\n--- block {number} ---\n{block}\n--- output ---\n".encode())
            out.flush()
            proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block], env=env,
                                    stdout=out, stderr=subprocess.STDOUT)

        def finished() -> bool:
            systemd.serve()
            for hook in hooks:
                hook()
            return proc.poll() is not None

        try:
            wait_until(finished, BLOCK_TIMEOUT, message=f"block {number} of {runbook} to finish")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, (
            f"block {number} of {runbook} exited {proc.returncode}:\n{log.read_text()}")


def blocked_task(cluster: octonodes.Cluster, release: Path) -> octonodes.Task:
    """A task that runs until the test creates `release`."""
    return cluster.add_task(
        ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.05; done; echo released', "sh",
         str(release)], name="long job")


def wait_executing_on(cluster: octonodes.Cluster, task_id: int, node: str) -> None:
    wait_until(lambda: (t := cluster.task(task_id)).state == "Executing" and t.node == node,
               message=f"task {task_id} to run on {node}")


def trail(env: dict, node: str) -> list[tuple[str, str, str | None]]:
    """What `octonodes events --node NODE` says happened since the node
    started, oldest first: (action, actor, reason)."""
    out = subprocess.run(["octonodes", "events", "--node", node, "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    events = [(e["action"], e["actor"], e["reason"]) for e in reversed(json.loads(out))]
    assert events[0][0] == "node.register", events  # the node as the test started it
    return events[1:]


@pytest.mark.parametrize("mode", MODES)
def test_maintenance_runbook(fast_cluster, start_node, runbook_env, tmp_path, mode):
    cluster = fast_cluster
    release = tmp_path / "release"
    systemd = Systemd(start_node, cluster, Path(runbook_env["RUNBOOK_REQUESTS"]))
    systemd.adopt(start_node("node-2"))
    first_pid = systemd.units["node-2"].pid
    long_job = blocked_task(cluster, release)
    wait_executing_on(cluster, long_job.id, "node-2")
    systemd.adopt(start_node("node-1"))
    wait_status(cluster, "node-1", "Running")
    side = {}

    def while_draining() -> None:
        """Once node-2 drains with its task still running, queue another task:
        node-1 must take it. Then let the long task finish."""
        if "task" not in side and node_status(cluster, "node-2") == "Draining":
            side["task"] = cluster.add_task(["true"], name="queued during the drain")
        if "task" in side and cluster.task(side["task"].id).ended:
            release.touch()

    def start_again() -> None:
        """Without systemd, the operator starts the node the way it was started."""
        if mode == "signal" and not systemd.units["node-2"].alive():
            systemd.adopt(start_node("node-2", wait=False))

    log = tmp_path / "maintenance.log"
    env = {**runbook_env, "NODE": "node-2", "REASON": "kernel upgrade, CHG-1042",
           "OCTONODES_ACTOR": "alice@ops-1"}
    run_runbook("maintenance.md", mode, env, systemd, log,
                during={"octonodes drain": while_draining, '= Drained ]': start_again})
    assert trail(env, "node-2") == [
        ("node.drain", "alice@ops-1", "kernel upgrade, CHG-1042"),
        ("node.stop", "node node-2", None),
        ("node.register", "node node-2", None),
        ("node.undrain", "alice@ops-1", "done: kernel upgrade, CHG-1042")]
    assert "node.undrain" in log.read_text(), "the runbook shows the trail"

    done = cluster.task(long_job.id)
    assert (done.state, done.node) == ("Success", "node-2"), done
    assert b"released" in b"".join(cluster.log(long_job.id))
    queued = cluster.task(side["task"].id)
    assert (queued.state, queued.node) == ("Success", "node-1"), queued
    if mode == "systemd":
        assert ["stop", "octonodes@node-2"] in systemd.calls
        assert ["start", "octonodes@node-2"] in systemd.calls
        assert systemd.stopped["node-2"] == [0], "the drained node stops cleanly"
    else:
        assert systemd.calls == []
        assert f"node-2 (pid {first_pid}) has stopped" in log.read_text()
    node = cluster.node("node-2")
    assert (node.status, node.drain) == ("Running", False), node
    assert node.pid == systemd.units["node-2"].pid, "it runs as the restarted process"

    cluster.set_cap("node-1", 0)
    after = cluster.add_task(["true"], name="after the maintenance")
    finished = cluster.wait(after.id, timeout=20)
    assert (finished.state, finished.node) == ("Success", "node-2"), finished


@pytest.mark.parametrize("mode", MODES)
def test_retirement_runbook(fast_cluster, start_node, runbook_env, tmp_path, mode):
    cluster = fast_cluster
    release = tmp_path / "release"
    systemd = Systemd(start_node, cluster, Path(runbook_env["RUNBOOK_REQUESTS"]))
    systemd.adopt(start_node("node-3"))
    long_job = blocked_task(cluster, release)
    wait_executing_on(cluster, long_job.id, "node-3")
    systemd.adopt(start_node("node-1"))
    wait_status(cluster, "node-1", "Running")

    def while_draining() -> None:
        if node_status(cluster, "node-3") == "Draining":
            release.touch()

    log = tmp_path / "retirement.log"
    env = {**runbook_env, "NODE": "node-3", "REASON": "host decommissioned",
           "OCTONODES_ACTOR": "bob@ops-2"}
    run_runbook("retirement.md", mode, env, systemd, log,
                during={"octonodes drain": while_draining})
    assert trail(env, "node-3") == [
        ("node.drain", "bob@ops-2", "retiring: host decommissioned"),
        ("node.stop", "node node-3", None),
        ("node.delete", "bob@ops-2", "host decommissioned")]

    done = cluster.task(long_job.id)
    assert (done.state, done.node) == ("Success", "node-3"), done
    if mode == "systemd":
        assert ["disable", "--now", "octonodes@node-3"] in systemd.calls
        assert systemd.stopped["node-3"] == [0], "the drained node stops cleanly"
    else:
        assert systemd.calls == []
        assert systemd.units["node-3"].wait_exit() == 0, "the drained node stops cleanly"
    assert not systemd.units["node-3"].alive()
    assert [n.name for n in cluster.nodes()] == ["node-1"]
    assert node_status(cluster, "node-1") == "Running"

    after = cluster.add_task(["true"])
    finished = cluster.wait(after.id, timeout=20)
    assert (finished.state, finished.node) == ("Success", "node-1"), finished


@pytest.mark.parametrize("runbook", ["maintenance.md", "retirement.md"])
def test_every_block_is_safe_to_paste_without_node_set(runbook, runbook_env, tmp_path):
    """Pasted into an interactive shell (no `set -e`) with NODE unset, a block
    stops before running anything, and the shell goes on to the next line."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "paste-bin"
    bin_dir.mkdir()
    for name in ("octonodes", "systemctl", "python3"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        script.chmod(0o755)
    env = {**runbook_env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    env.pop("NODE", None)
    for block in sh_blocks(runbook):
        result = subprocess.run(["bash", "-c", f"{block}\necho next-line-ran"], env=env,
                                capture_output=True, text=True, timeout=30)
        assert "set NODE to the name of the node" in result.stderr, (block, result)
        assert result.stdout.strip().endswith("next-line-ran"), (block, result)
        assert not calls.exists(), (block, calls.read_text())


@pytest.mark.parametrize("runbook", ["maintenance.md", "retirement.md"])
def test_the_signal_block_refuses_a_node_that_is_not_running(runbook, fast_cluster, runbook_env,
                                                              start_node, tmp_path):
    """The plain-signal block never signals a pid a stopped node left behind."""
    node = start_node("node-9")
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0
    block = next(b for b in sh_blocks(runbook) if b.startswith(MODES["signal"]))
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block],
                            env={**runbook_env, "NODE": "node-9"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "node-9 is not running" in result.stderr, result

"""docs/api.md's curl examples run as written, through the HAProxy
configuration of docs/load-balancing.md in front of two real nodes.

Needs HAProxy and curl; without them the test skips, except under CI
(`CI` set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from helpers import unavailable, wait_until
from http_helpers import PING, free_port, shared_package_store, start_http_node
from test_haproxy import config_for, haproxy_binary  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
MARKER = "<!-- tested: tests/test_api_examples.py runs the next code block -->"


def documented_script() -> str:
    """The `$ ` commands of the marked block (with their continuation lines),
    as one bash script; the lines they are shown to print are left out."""
    text = DOC.read_text()
    after = text[text.index(MARKER) + len(MARKER):]
    block = re.match(r"\s*```console\n(.*?)^```", after, re.DOTALL | re.MULTILINE)
    assert block, f"no console block after the marker in {DOC}"
    commands, continuing = [], False
    for line in block.group(1).splitlines():
        if line.startswith("$ ") or continuing:
            commands.append(line[2:] if line.startswith("$ ") and not continuing else line)
            continuing = line.endswith("\\")
    assert commands
    return "set -euo pipefail\n" + "\n".join(commands) + "\n"


def test_the_documented_examples_run_through_haproxy(fast_cluster, start_node, haproxy_binary,
                                                     tmp_path):
    if not shutil.which("curl"):
        unavailable("curl is not installed", "curl is required in CI (apt-get install curl)")
    shared_package_store(fast_cluster, tmp_path)
    nodes = {name: start_http_node(start_node, name) for name in ("node-1", "node-2")}
    _, key = fast_cluster.add_api_key("examples", "admin")
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(config_for(port, {name: node.url.removeprefix("http://")
                                        for name, node in nodes.items()}))
    log = open(tmp_path / "haproxy.log", "wb")
    proxy = subprocess.Popen([haproxy_binary, "-db", "-f", str(config)], stdout=log,
                             stderr=subprocess.STDOUT)
    balancer = f"http://127.0.0.1:{port}"
    work = tmp_path / "work"
    work.mkdir()
    (work / "Acme.Web.1.2.3.4.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    try:
        def both_up() -> bool:
            try:
                return {httpx.get(balancer + PING, timeout=2).json()["Name"]
                        for _ in range(6)} == set(nodes)
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_until(both_up, 20, message="both nodes behind HAProxy")
        ran = subprocess.run(["bash", "-c", documented_script()], cwd=work, capture_output=True,
                             text=True, timeout=120,
                             env={**os.environ, "OCTONODES_URL": balancer, "KEY": key})
        assert ran.returncode == 0, ran.stdout + ran.stderr
    finally:
        proxy.terminate()
        proxy.wait(10)
        log.close()
    assert "migrated\n" in ran.stdout and '"State":"Canceled"' in ran.stdout, ran.stdout
    assert (work / "downloaded.zip").read_bytes() == (work / "Acme.Web.1.2.3.4.zip").read_bytes()
    assert [(p.package_id, p.version) for p in fast_cluster.packages()] == [("Acme.Web", "1.2.3.4")]
    states = sorted(t.state.value for t in fast_cluster.task_page()[1])
    assert states == ["Canceled", "Success"]

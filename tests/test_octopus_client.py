"""Octopus Deploy's own TypeScript client (`@octopusdeploy/api-client`, the
version pinned in tests/js/package.json) against a live node.

Needs Node.js and the client installed (`npm ci` in tests/js, as .ci/run
does); without them the test skips, except under CI, where it fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import unavailable
from http_helpers import shared_package_store, start_http_node

pytestmark = pytest.mark.slow

JS = Path(__file__).resolve().parent / "js"
CLIENT = JS / "node_modules" / "@octopusdeploy" / "api-client"


@pytest.fixture
def node_js() -> str:
    found = shutil.which("node")
    if not found:
        unavailable("Node.js is not installed", "Node.js is required in CI (apt-get install nodejs)")
    if not CLIENT.is_dir():
        unavailable("the Octopus client is not installed (npm ci in tests/js)",
                    "the Octopus client is required in CI: run npm ci in tests/js")
    return found


def test_octopus_client_pushes_packages_and_follows_tasks(node_js, fast_cluster, start_node,
                                                          tmp_path):
    shared_package_store(fast_cluster, tmp_path)
    node = start_http_node(start_node, "node-1")
    _, key = fast_cluster.add_api_key("deploy", "admin")
    package = tmp_path / "Acme.Web.1.2.3.4.zip"
    package.write_bytes(b"PK\x05\x06" + bytes(18))
    quick = fast_cluster.add_task(["sh", "-c", "echo built; echo by octonodes"], name="build")
    long = fast_cluster.add_task(["sleep", "300"], name="long")

    ran = subprocess.run([node_js, str(JS / "octopus_client.js"), node.url, key, str(package),
                          f"ServerTasks-{quick.id}", f"ServerTasks-{long.id}"],
                         capture_output=True, text=True, timeout=120, cwd=JS)
    assert ran.returncode == 0, ran.stderr + node.process.log()
    result = json.loads(ran.stdout)

    assert result["serverVersion"]
    assert result["pushed"] is True
    assert [(p.package_id, p.version) for p in fast_cluster.packages()] == [("Acme.Web", "1.2.3.4")]
    assert "already exists" in result["secondPush"], result["secondPush"]
    assert result["task"]["Id"] == f"ServerTasks-{quick.id}" and result["task"]["Name"] == "build"
    assert result["waited"]["State"] == "Success" and result["waited"]["IsCompleted"] is True
    assert result["raw"] == "built\nby octonodes\n"
    assert result["canceled"]["Id"] == f"ServerTasks-{long.id}"
    assert result["canceled"]["State"] == "Canceled"
    assert fast_cluster.task(long.id).state == "Canceled"
    assert result["unknown"]["status"] == 404

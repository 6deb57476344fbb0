"""A real HAProxy, configured as docs/load-balancing.md says, in front of two
real nodes: draining one takes it out of rotation, undraining brings it back.

HAProxy is needed (`apt-get install haproxy`); without it the test skips,
except under CI (the CI environment variable set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from helpers import octonodes, unavailable, wait_until
from http_helpers import PING, free_port, start_http_node

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "load-balancing.md"
MARKER = "<!-- tested: tests/test_haproxy.py reads the next code block -->"
SWITCH = 15.0
"""Seconds allowed for HAProxy to follow a drain (the doc's checks need ~2 s)."""


def documented_config() -> str:
    text = DOC.read_text()
    after = text[text.index(MARKER) + len(MARKER):]
    match = re.match(r"\s*```haproxy\n(.*?)^```", after, re.DOTALL | re.MULTILINE)
    assert match, f"no haproxy code block after the marker in {DOC}"
    return match.group(1)


def config_for(port: int, servers: dict[str, str]) -> str:
    """The documented configuration with this test's addresses, nothing else changed."""
    config = documented_config()
    config, binds = re.subn(r"^(\s*bind\s+)\S+", rf"\g<1>127.0.0.1:{port}", config, flags=re.M)
    assert binds == 1, config
    seen = []

    def address(match: re.Match) -> str:
        seen.append(match.group(2))
        return match.group(1) + servers[match.group(2)]

    config = re.sub(r"^(\s*server\s+(\S+)\s+)\S+", address, config, flags=re.M)
    assert sorted(seen) == sorted(servers), config
    return config


def assert_round_robin(answers: Counter) -> None:
    assert set(answers) == {"node-1", "node-2"}, answers
    assert abs(answers["node-1"] - answers["node-2"]) <= 2, answers


@pytest.fixture
def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None)
    if not found:
        unavailable("haproxy is not installed",
                    "haproxy is required in CI (apt-get install -y haproxy)")
    return found


def test_the_documented_config_is_valid(haproxy_binary, tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(config_for(free_port(), {"node-1": "127.0.0.1:1", "node-2": "127.0.0.1:2"}))
    checked = subprocess.run([haproxy_binary, "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_haproxy_follows_drain_and_undrain(fast_cluster, start_node, haproxy_binary, tmp_path):
    nodes = {name: start_http_node(start_node, name) for name in ("node-1", "node-2")}
    port = free_port()
    path = tmp_path / "haproxy.cfg"
    path.write_text(config_for(port, {name: node.url.removeprefix("http://")
                                      for name, node in nodes.items()}))
    log = open(tmp_path / "haproxy.log", "wb")
    proxy = subprocess.Popen([haproxy_binary, "-db", "-f", str(path)],
                             stdout=log, stderr=subprocess.STDOUT)
    balancer = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        def who(n: int = 20) -> Counter:
            """Who answered n requests through HAProxy (by the ping body's Name)."""
            answers = Counter()
            for _ in range(n):
                response = balancer.get(PING)
                answers[response.json()["Name"] if response.status_code == 200
                        else response.status_code] += 1
            return answers

        def reachable() -> bool:
            try:
                return set(who(10)) == {"node-1", "node-2"}
            except httpx.HTTPError:
                return False

        wait_until(reachable, SWITCH, message="both nodes behind HAProxy")
        assert_round_robin(who())

        assert octonodes(fast_cluster.db, "drain", "node-1").returncode == 0
        wait_until(lambda: who(10) == {"node-2": 10}, SWITCH, message="node-1 out of rotation")
        assert who() == {"node-2": 20}
        # node-1 still runs and answers its own ping, with 418.
        assert nodes["node-1"].ping().status_code == 418

        assert octonodes(fast_cluster.db, "undrain", "node-1").returncode == 0
        wait_until(lambda: set(who(10)) == {"node-1", "node-2"}, SWITCH,
                   message="node-1 back in rotation")
        assert_round_robin(who())
    finally:
        balancer.close()
        proxy.terminate()
        proxy.wait(10)
        log.close()

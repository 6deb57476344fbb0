"""The page behind a real HAProxy (configured as docs/load-balancing.md
says), in Chromium: any node serves any request of a signed-in page, and an
open page keeps working while a node stops and starts again."""

from __future__ import annotations

import signal
import subprocess

import pytest

from helpers import octonodes, wait_until
from http_helpers import PING, free_port, start_http_node
from test_haproxy import SWITCH, config_for, haproxy_binary  # noqa: F401 (a fixture)
from test_web_browser import LIVE, browser, expect_status, row  # noqa: F401 (a fixture)
from web_helpers import browser_sign_in

pytestmark = pytest.mark.slow


def test_an_open_page_keeps_working_across_a_node_restart(fast_cluster, start_node, browser,
                                                           haproxy_binary, tmp_path):
    import httpx
    from playwright.sync_api import expect

    _, key = fast_cluster.add_api_key("balanced", role="operator")
    nodes = {name: start_http_node(start_node, name) for name in ("node-1", "node-2")}
    addresses = {name: node.url.removeprefix("http://") for name, node in nodes.items()}
    port = free_port()
    (tmp_path / "haproxy.cfg").write_text(config_for(port, addresses))
    proxy = subprocess.Popen([haproxy_binary, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    balancer = f"http://127.0.0.1:{port}"
    context = browser.new_context()
    try:
        def served_by() -> set:
            names = set()
            for _ in range(6):
                try:
                    answer = httpx.get(balancer + PING, timeout=5)
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    names.add(answer.json()["Name"])
            return names

        wait_until(lambda: served_by() == {"node-1", "node-2"}, SWITCH,
                   message="both nodes behind HAProxy")
        page = context.new_page()
        browser_sign_in(page, balancer, key)
        page.evaluate("window.notReloaded = true")
        expect_status(page, "node-1", "Running")
        expect_status(page, "node-2", "Running")

        nodes["node-1"].process.signal(signal.SIGTERM)
        nodes["node-1"].process.wait_exit()
        expect_status(page, "node-1", "Offline", timeout=SWITCH)
        expect(row(page, "node-1").locator(".offline-note")).to_contain_text("stopped")
        octonodes(fast_cluster.db, "cap", "node-2", "8")
        expect(row(page, "node-2").locator('[data-label="Task cap"]')).to_have_text(
            "8", timeout=LIVE * 1000)

        start_node("node-1", "--listen", addresses["node-1"])
        expect_status(page, "node-1", "Running", timeout=SWITCH)
        wait_until(lambda: served_by() == {"node-1", "node-2"}, SWITCH,
                   message="node-1 back behind HAProxy")
        octonodes(fast_cluster.db, "cap", "node-1", "2")
        expect(row(page, "node-1").locator('[data-label="Task cap"]')).to_have_text(
            "2", timeout=LIVE * 1000)
        assert page.evaluate("window.notReloaded") is True
        assert page.url.rstrip("/") == balancer
    finally:
        context.close()
        proxy.terminate()
        proxy.wait(10)

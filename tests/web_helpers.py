"""Helpers for tests of the web page: a signed-in HTTP client, and a real
Chromium driven by Playwright (Debian's `chromium`, never a downloaded one)."""

from __future__ import annotations

import os
import re
import shutil

import httpx

import octonodes
from conftest import FAST_SETTINGS, pg_schema
from helpers import NodeProcess, unavailable
from http_helpers import HttpNode, free_port

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
SESSION_COOKIE = "octonodes_session"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
"""As root in a container: no sandbox, no GPU, no reliance on a small /dev/shm."""


def chromium_path() -> str:
    for path in (os.environ.get("OCTONODES_TEST_CHROMIUM"), *CHROMIUM_PATHS):
        if path and shutil.which(path):
            return path
    unavailable("no system Chromium (apt-get install chromium)",
                "Chromium is required in CI (`apt-get install -y chromium`) and was not found")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(),
                                      args=CHROMIUM_ARGS)


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in:\n{html[:2000]}"
    return match.group(1)


def sign_in(url: str, key: str) -> httpx.Client:
    """An HTTP client signed in to the page at `url` with `key`."""
    client = httpx.Client(base_url=url, timeout=10)
    form = client.get("/signin")
    answer = client.post("/signin", data={"signin_token": hidden(form.text, "signin_token"),
                                          "api_key": key, "next": "/"})
    assert answer.status_code == 303, answer.text
    assert client.cookies.get(SESSION_COOKIE)
    return client


def csrf_token(client: httpx.Client, path: str = "/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return hidden(page.text, "csrf_token")


def browser_sign_in(page, url: str, key: str) -> None:
    page.goto(url + "/")
    page.fill("#api_key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#live")


class ModuleNodes:
    """Real nodes shared by a module's tests: started once, by name."""

    def __init__(self, db: str, log_dir) -> None:
        self.db, self.log_dir = db, log_dir
        self.started: dict[str, HttpNode] = {}

    def http_node(self, name: str) -> HttpNode:
        """The running node `name`, listening; started on first use (or again
        after a test stopped it)."""
        return self.http_nodes(name)[0]

    def http_nodes(self, *names: str) -> list[HttpNode]:
        """Several at once: those not running start together."""
        for name in names:
            node = self.started.get(name)
            if node is None or not node.process.alive():
                port = free_port()
                process = NodeProcess(self.db, name, self.log_dir, "--listen", f"127.0.0.1:{port}")
                self.started[name] = HttpNode(process, f"http://127.0.0.1:{port}")
        for name in names:
            self.started[name].process.wait_log("started", timeout=30)
        return [self.started[name] for name in names]

    def close(self) -> None:
        for node in self.started.values():
            node.process.close()


def module_cluster(backend: str, tmp_path_factory):
    """(cluster, nodes, db) on a fresh database of `backend`, for a module."""
    log_dir = tmp_path_factory.mktemp(f"web-{backend}")
    if backend == "sqlite":
        urls = iter([str(log_dir / "cluster.db")])
    else:
        urls = pg_schema()
    db = next(urls)
    cluster = octonodes.open(db, create=True)
    cluster.store.initialize()
    for key, value in FAST_SETTINGS.items():
        cluster.set_setting(key, value)
    nodes = ModuleNodes(db, log_dir)
    try:
        yield cluster, nodes, db
    finally:
        nodes.close()
        cluster.close()
        for _ in urls:  # drops the PostgreSQL schema
            pass

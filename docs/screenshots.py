"""Take the screenshots of the web page that docs/ and the README show.

    python docs/screenshots.py [--out docs/images]

Starts a small cluster of real nodes on a temporary SQLite database (one
running tasks, one drained with a reason, one lost), signs in with an
admin key in Debian's Chromium (driven by Playwright; nothing downloaded)
and saves the Nodes page, a node's page and a task's page. The test suite
runs it too (tests/test_web_screenshots.py), so it keeps working.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import octonodes  # noqa: E402
from octonodes.store.base import TaskSpec  # noqa: E402

CHROMIUM = os.environ.get("OCTONODES_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
SETTINGS = {"heartbeat_interval": "0.5s", "offline_after": "3s"}
WIDTH, HEIGHT = 1100, 640


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError("timed out preparing the screenshots")


def _node(db: str, name: str, port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "octonodes", "--db", db, "node", "run",
                             "--name", name, "--listen", f"127.0.0.1:{port}", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def take(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="octonodes-shots-"))
    db = str(workdir / "cluster.db")
    cluster = octonodes.open(db, create=True)
    cluster.store.initialize()
    for key, value in SETTINGS.items():
        cluster.set_setting(key, value)
    _, key = cluster.add_api_key("on-call", role="admin")
    ports = {name: _port() for name in ("web-1", "web-2", "web-3")}
    nodes = [_node(db, "web-1", ports["web-1"], "--cap", "4"),
             _node(db, "web-2", ports["web-2"]), _node(db, "web-3", ports["web-3"], "--cap", "0")]
    try:
        _wait(lambda: len([n for n in cluster.nodes() if n.online]) == 3)
        cluster.drain("web-2", reason="kernel upgrade")
        deploy = ["sh", "-c", "echo deploying release 2.4.1; for i in 1 2 3; do "
                  "echo step $i of 3; sleep 1; done; sleep 60"]
        cluster.add_tasks([TaskSpec(command=deploy, name=f"deploy shard {n}") for n in range(1, 6)])
        task = cluster.add_task(["sh", "-c", "echo building; echo tests passed; sleep 60"],
                                name="nightly build")
        _wait(lambda: cluster.node("web-1", with_tasks=False).tasks == 4)
        nodes[2].send_signal(signal.SIGKILL)
        _wait(lambda: not cluster.node("web-3", with_tasks=False).online, 15)
        url = f"http://127.0.0.1:{ports['web-1']}"
        shots = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto(url + "/")
            page.fill("#api_key", key)
            page.click("form.signin button[type=submit]")
            page.wait_for_selector("#nodes")
            time.sleep(1.5)
            for name, path in (("nodes", "/"), ("node", "/nodes/web-1"),
                               ("task", f"/tasks/{task.id}")):
                page.goto(url + path)
                page.wait_for_selector("#live")
                time.sleep(0.5)
                shot = out / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                shots.append(shot)
            browser.close()
        return shots
    finally:
        for node in nodes:
            node.send_signal(signal.SIGKILL)
            node.wait(10)
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    for shot in take(Path(parser.parse_args().out)):
        print(shot)


if __name__ == "__main__":
    main()

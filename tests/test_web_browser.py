"""The Nodes page in a real browser (Debian's Chromium, driven by
Playwright), against real nodes, on both backends: statuses, a lost node
showing without a reload, the drain toggle with a reason, the menu's cap
change and delete, a task's log followed live, and changes made elsewhere
showing within 2 s."""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import BACKENDS, FAST_SETTINGS
from helpers import octonodes
from web_helpers import browser_sign_in, launch_chromium, module_cluster

pytestmark = pytest.mark.slow

LIVE = 2.0
"""Seconds within which a change made anywhere shows on an open page."""
OFFLINE_AFTER = float(FAST_SETTINGS["offline_after"].rstrip("s"))


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        from helpers import unavailable
        unavailable("Playwright is not installed (pip install -e '.[test]')",
                    "Playwright is required in CI (the test extra)")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=BACKENDS)
def web_cluster(request, tmp_path_factory):
    for cluster, nodes, db in module_cluster(request.param, tmp_path_factory):
        _, key = cluster.add_api_key("page-admin", role="admin")
        yield cluster, nodes, db, key


@pytest.fixture
def page(browser, web_cluster):
    _, nodes, _, key = web_cluster
    node = nodes.http_node("node-1")
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    browser_sign_in(tab, node.url, key)
    tab.evaluate("window.notReloaded = true")
    yield tab
    assert tab.evaluate("window.notReloaded") is True, "the page was reloaded"
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def row(page, name: str):
    return page.locator(f'tr[data-node="{name}"]')


def expect_status(page, name: str, status: str, timeout: float = LIVE) -> None:
    from playwright.sync_api import expect

    expect(row(page, name)).to_have_attribute("data-status", status, timeout=timeout * 1000)


def cli_json(db: str, *args: str):
    result = octonodes(db, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_statuses_a_lost_node_the_menu_and_changes_from_elsewhere(web_cluster, page):
    from playwright.sync_api import expect

    cluster, nodes, db, _ = web_cluster
    _, doomed = nodes.http_nodes("node-2", "node-3")
    cluster.drain("node-2")
    expect_status(page, "node-1", "Running")
    expect_status(page, "node-2", "Drained")
    expect_status(page, "node-3", "Running")
    expect(page.locator(".banner-lost")).to_have_count(0)

    doomed.process.kill9()
    expect_status(page, "node-3", "Offline", timeout=OFFLINE_AFTER + LIVE)
    expect(row(page, "node-3").locator(".offline-note")).to_contain_text("lost")
    expect(page.locator(".banner-lost")).to_contain_text("node-3")

    octonodes(db, "cap", "node-1", "7")  # a change from the command line
    expect(row(page, "node-1").locator('[data-label="Task cap"]')).to_have_text("7",
                                                                              timeout=LIVE * 1000)
    cluster.undrain("node-2")  # and from the Python API
    expect_status(page, "node-2", "Running")

    row(page, "node-1").locator("summary").click()
    expect(page.locator("#menu-node-1 form[action$='/delete']")).to_have_count(0)  # online
    page.fill("#cap-node-1", "3")
    page.get_by_role("button", name="Change task cap").click()
    expect(row(page, "node-1").locator('[data-label="Task cap"]')).to_have_text("3")
    assert cli_json(db, "show", "node-1")["task_cap"] == 3

    row(page, "node-3").locator("summary").click()
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Delete node-3").click()
    expect(row(page, "node-3")).to_have_count(0)
    assert "node-3" in asked[0]
    assert "node-3" not in [n["name"] for n in cli_json(db, "list")]
    expect(page.locator(".banner-lost")).to_have_count(0)

    # An online node's delete is refused with the command line's words.
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    refused = page.request.post(page.url.rstrip("/") + "/nodes/node-2/delete",
                                form={"csrf_token": token, "confirmed": "node-2"},
                                max_redirects=0)
    assert refused.status == 409
    cli = octonodes(db, "delete", "node-2")
    assert cli.returncode == 4
    assert cli.stderr.strip().removeprefix("Error: ") in refused.text()
    cluster.set_cap("node-1", 5)


def test_the_drain_toggle_takes_a_reason_and_the_ping_follows(web_cluster, page):
    from playwright.sync_api import expect

    cluster, nodes, db, _ = web_cluster
    node = nodes.http_node("node-1")
    assert node.ping().status_code == 200
    toggle = page.locator("#drain-node-1")
    expect(toggle).to_have_attribute("aria-checked", "false")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept("kernel patch")))
    toggle.click()
    clicked = time.monotonic()
    node.wait_ping(418, timeout=LIVE)
    assert time.monotonic() - clicked < LIVE
    assert "node-1" in asked[0]
    expect(page.locator("#drain-node-1")).to_have_attribute("aria-checked", "true")
    assert cli_json(db, "show", "node-1")["status"] in ("Draining", "Drained")
    listed = octonodes(db, "list")
    assert re.search(r"node-1\s.*Drain(ing|ed)", listed.stdout), listed.stdout
    drained = cli_json(db, "events", "--node", "node-1", "--action", "node.drain")[0]
    assert drained["actor"].startswith("key page-admin (") and drained["reason"] == "kernel patch"
    page.get_by_role("link", name="node-1", exact=True).first.click()
    expect(page.locator("#drain-info")).to_contain_text("kernel patch")
    expect(page.locator("#drain-info")).to_contain_text("by key page-admin (")
    page.get_by_role("link", name="Events", exact=True).click()
    expect(page.locator("#events tr[data-action='node.drain']").first).to_contain_text("kernel patch")
    page.get_by_role("link", name="Nodes", exact=True).click()

    page.locator("#drain-node-1").click()  # back on: no question asked
    node.wait_ping(200, timeout=LIVE)
    expect(page.locator("#drain-node-1")).to_have_attribute("aria-checked", "false")
    undrained = cli_json(db, "events", "--node", "node-1", "--action", "node.undrain")[0]
    assert undrained["actor"].startswith("key page-admin (")


def test_a_tasks_page_follows_its_log_and_shows_the_end(web_cluster, page):
    from playwright.sync_api import expect

    cluster, nodes, db, _ = web_cluster
    node = nodes.http_node("node-1")
    task = cluster.add_task(["sh", "-c", "echo first; sleep 1.5; echo second; sleep 1.5; echo third"],
                            name="three lines")
    page.get_by_role("link", name="Tasks", exact=True).click()
    page.get_by_role("link", name="three lines").click()
    expect(page.locator("#log")).to_contain_text("first", timeout=10_000)
    expect(page.locator(".log-follow")).to_be_visible()
    assert "third" not in page.locator("#log").inner_text()
    expect(page.locator(".log-end")).to_be_visible(timeout=10_000)
    assert page.locator("#log").inner_text().split() == ["first", "second", "third"]
    expect(page.locator("#task-state")).to_have_text("Success", timeout=LIVE * 1000)
    assert cluster.task(task.id).state == "Success"
    assert node.ping().status_code == 200


def test_keyboard_labels_and_a_narrow_screen(web_cluster, page):
    from playwright.sync_api import expect

    nodes = web_cluster[1]
    nodes.http_node("node-1")
    summary = row(page, "node-1").locator("summary")
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#menu-node-1")).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(page.locator("#menu-node-1")).not_to_have_attribute("open", "")
    page.focus("#drain-node-1")  # a change redraws the table; the focus stays
    octonodes(web_cluster[2], "cap", "node-1", "4")
    expect(row(page, "node-1").locator('[data-label="Task cap"]')).to_have_text("4")
    assert page.evaluate("document.activeElement.id") == "drain-node-1"
    octonodes(web_cluster[2], "cap", "node-1", "5")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, button, summary')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !e.textContent.trim()).map(e => e.outerHTML)""")
    assert unlabelled == []
    page.set_viewport_size({"width": 360, "height": 740})
    for path in ("/", "/nodes/node-1", "/tasks", "/settings"):
        page.goto(page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
    page.evaluate("window.notReloaded = true")


def test_a_viewer_sees_no_controls_and_cannot_post(browser, web_cluster):
    from playwright.sync_api import expect

    cluster, nodes, _, _ = web_cluster
    node = nodes.http_node("node-1")
    _, key = cluster.add_api_key("page-viewer", role="viewer")
    context = browser.new_context()
    try:
        tab = context.new_page()
        browser_sign_in(tab, node.url, key)
        expect(row(tab, "node-1")).to_be_visible()
        expect(tab.locator(".who")).to_contain_text("page-viewer (viewer)")
        for path in ("/", "/nodes/node-1", "/tasks", "/settings"):
            tab.goto(node.url + path)
            controls = tab.locator("[role=switch], details.menu, main form[method=post], "
                                   "button.danger")
            assert controls.count() == 0, (path, controls.first.evaluate("e => e.outerHTML"))
        token = tab.locator('input[name="csrf_token"]').first.get_attribute("value")
        forged = tab.request.post(node.url + "/nodes/node-1/drain",
                                  form={"csrf_token": token, "reason": "forged"}, max_redirects=0)
        assert forged.status == 403 and "operator" in forged.text()
        assert node.ping().status_code == 200
        assert not cluster.node("node-1", with_tasks=False).drain
    finally:
        context.close()

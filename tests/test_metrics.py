"""`GET /metrics`: the cluster in Prometheus text format, read when scraped."""

from __future__ import annotations

import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_status
from helpers import wait_until
from http_helpers import start_http_node

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def node_value(samples, metric: str, node: str, **labels) -> float:
    return samples[(metric, tuple(sorted({"node": node, **labels}.items())))]


def test_metrics_describe_nodes_and_the_queue(fast_cluster, start_node, tmp_path):
    one = start_http_node(start_node, "node-1", "--cap", "1")
    two = start_http_node(start_node, "node-2", "--cap", "0")
    gate = tmp_path / "gate"
    held = fast_cluster.add_task(["sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.02; done'])
    wait_until(lambda: fast_cluster.task(held.id).state == "Executing", 10, message="the task")
    fast_cluster.add_task(["true"])  # waits: node-1 is at its cap, node-2 takes nothing
    fast_cluster.drain("node-2")

    samples = scrape(one.url)
    assert node_value(samples, "octonodes_node_up", "node-1") == 1
    assert node_value(samples, "octonodes_node_up", "node-2") == 1
    assert node_value(samples, "octonodes_node_running_tasks", "node-1") == 1
    assert node_value(samples, "octonodes_node_running_tasks", "node-2") == 0
    assert node_value(samples, "octonodes_node_task_cap", "node-1") == 1
    assert node_value(samples, "octonodes_node_task_cap", "node-2") == 0
    assert node_value(samples, "octonodes_node_drain", "node-1") == 0
    assert node_value(samples, "octonodes_node_drain", "node-2") == 1
    assert node_value(samples, "octonodes_node_status", "node-1", status="Running") == 1
    assert node_value(samples, "octonodes_node_status", "node-2", status="Drained") == 1
    assert node_value(samples, "octonodes_node_status", "node-2", status="Running") == 0
    assert node_value(samples, "octonodes_node_last_seen_timestamp_seconds", "node-1") > 0
    assert samples[("octonodes_queue_depth", ())] == 1
    assert samples[("octonodes_queue_oldest_age_seconds", ())] > 0

    # Every node answers for the whole cluster.
    assert scrape(two.url)[("octonodes_queue_depth", ())] == 1

    two.process.signal(signal.SIGTERM)
    assert two.process.wait_exit(20) == 0
    wait_status(fast_cluster, "node-2", "Offline")
    gate.touch()
    wait_until(lambda: fast_cluster.queue_summary().queued == 0, 20, message="the queue to empty")
    samples = scrape(one.url)
    assert node_value(samples, "octonodes_node_up", "node-2") == 0
    assert node_value(samples, "octonodes_node_status", "node-2", status="Offline") == 1
    assert samples[("octonodes_queue_depth", ())] == 0
    assert samples[("octonodes_queue_oldest_age_seconds", ())] == 0


def test_metrics_need_no_api_key_and_answer_head(fast_cluster, start_node):
    node = start_http_node(start_node, "node-1")
    assert httpx.get(node.url + "/metrics").status_code == 200
    assert httpx.head(node.url + "/metrics").status_code == 200

"""`GET /metrics`: the cluster in Prometheus text format, read when scraped.

Any node answers for the whole cluster (every node reads the same
database), so scraping one node is enough; scraping them all gives the same
series from each, labelled by the scrape target. No API key: the metrics
hold node names and counts, nothing secret; keep the port off public
networks as for the rest of the API. A database that cannot be read gives
503, which Prometheus records as a failed scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from ..models import NodeStatus


class ClusterCollector:
    """Reads nodes and the queue at each scrape, on one of the context's
    database threads."""

    def __init__(self, context) -> None:
        self.context = context

    def collect(self):
        cluster = self.context.cluster()
        nodes = cluster.nodes()
        queue = cluster.queue_summary()
        now = cluster.now()

        up = GaugeMetricFamily("octonodes_node_up",
                               "1 while the node is online (Running, Draining or Drained), 0 while Offline",
                               labels=["node"])
        status = GaugeMetricFamily("octonodes_node_status",
                                   "1 for the node's current status, 0 for the others",
                                   labels=["node", "status"])
        running = GaugeMetricFamily("octonodes_node_running_tasks",
                                    "tasks executing or cancelling on the node", labels=["node"])
        cap = GaugeMetricFamily("octonodes_node_task_cap",
                                "the most tasks the node runs at once", labels=["node"])
        drain = GaugeMetricFamily("octonodes_node_drain", "1 while drain is on", labels=["node"])
        seen = GaugeMetricFamily("octonodes_node_last_seen_timestamp_seconds",
                                 "when the node last checked in (Unix time)", labels=["node"])
        for node in nodes:
            up.add_metric([node.name], 1.0 if node.online else 0.0)
            for value in NodeStatus:
                status.add_metric([node.name, value.value], 1.0 if node.status is value else 0.0)
            running.add_metric([node.name], node.tasks)
            cap.add_metric([node.name], node.task_cap)
            drain.add_metric([node.name], 1.0 if node.drain else 0.0)
            if node.last_seen is not None:
                seen.add_metric([node.name], node.last_seen.timestamp())
        depth = GaugeMetricFamily("octonodes_queue_depth", "tasks waiting in the queue",
                                  value=queue.queued)
        oldest = GaugeMetricFamily(
            "octonodes_queue_oldest_age_seconds",
            "how long the oldest queued task has waited; 0 when the queue is empty",
            value=max(0.0, (now - queue.oldest_queued_at).total_seconds())
            if queue.oldest_queued_at else 0.0)
        return [up, status, running, cap, drain, seen, depth, oldest]


def metrics_endpoint(context):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(context))

    async def metrics(request: Request) -> Response:
        body = await context.run(lambda: generate_latest(registry))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics

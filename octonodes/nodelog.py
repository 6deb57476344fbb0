"""A node's event log on stderr: one line an event, as text or JSON, fit for journald."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from .models import iso


class TextFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
        self._second = -1
        self._prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        # A busy node logs a line or two a task: the date is made once a second.
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = int((record.created - second) * 1000)
        return f"{self._prefix}.{millis:03d}Z {record.levelname:<7} {self.node}: {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "node": self.node,
            "message": record.getMessage(),
        })


def setup(node: str, fmt: str) -> None:
    # A busy node logs two lines a task: skip what these formats never show.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else TextFormatter(node))
    root = logging.getLogger("octonodes")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False

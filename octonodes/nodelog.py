"""A node's event log on stderr: one line an event, as text or JSON, fit for journald."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class TextFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"{when[:-4]}Z {record.levelname:<7} {self.node}: {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "node": self.node,
            "message": record.getMessage(),
        })


class StepHandler(logging.StreamHandler):
    """Writes the lines of one step of the node's loop together: one write
    a step instead of one a line, since every write lets the task threads
    take the interpreter from the loop. Warnings and errors go out at once;
    the loop calls `flush_steps()` at the end of each step (within a quarter
    of a second), and logging flushes at exit."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self._write()

    def _write(self) -> None:
        if self._lines:
            text, self._lines = "\n".join(self._lines) + "\n", []
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:
            self._write()


def flush_steps() -> None:
    """Write what the node logged during this step of its loop."""
    for handler in logging.getLogger("octonodes").handlers:
        handler.flush()


def setup(node: str, fmt: str) -> None:
    # A busy node logs two lines a task: skip what these formats never show.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    handler = StepHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else TextFormatter(node))
    root = logging.getLogger("octonodes")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False

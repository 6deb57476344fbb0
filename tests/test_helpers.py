"""The test helpers fail fast and clean up even when things go wrong: a node
that exits at start is reported at once with its exit code and log, and a
PostgreSQL schema is dropped even when the first connection fails."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import PG_BASE, _pg_admin, drop_schema


@pytest.mark.slow
def test_start_node_fails_at_once_with_the_exit_code_and_the_log(db, start_node, cluster):
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        start_node("-not-a-valid-name")  # exits 2 at once
    assert time.monotonic() - started < 15, "it waited for a log line that could never come"
    message = str(failure.value)
    assert "exited with code 2" in message, message
    assert "invalid node name" in message, message  # the end of its log


class FlakyProxy:
    """A TCP forwarder to the PostgreSQL server that drops its first
    connection, as a restarting server does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted == 1:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self.listener.close()


def test_the_schema_teardown_retries_on_a_fresh_connection():
    admin = _pg_admin()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(PG_BASE)
    proxy = FlakyProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{proxy.port}"
        url = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
        drop_schema(schema, attempts=5, url=url)
        assert proxy.accepted >= 2  # the first connection failed, a fresh one dropped it
        gone = admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert gone is None
    finally:
        proxy.close()
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()

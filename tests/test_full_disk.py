"""A node on a full disk: it cannot record its task ends, says so every few
seconds, keeps them, and records them (and stops) once there is room."""

from __future__ import annotations

import os
import signal

import pytest

import octonodes
from conftest import FAST_SETTINGS, wait_status
from helpers import NodeProcess, small_disk, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.only_backend("sqlite")]


@pytest.fixture
def disk(tmp_path, backend):
    """A 4 MiB tmpfs (root only)."""
    yield from small_disk(tmp_path / "small", "4m")


def fill(folder) -> object:
    """Fill the file system of `folder` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_node_on_a_full_disk_says_what_it_waits_for(disk, tmp_path):
    db = str(disk / "cluster.db")
    cluster = octonodes.open(db, create=True)
    cluster.store.initialize()
    for key, value in FAST_SETTINGS.items():
        cluster.set_setting(key, value)
    node = NodeProcess(db, "node-a", tmp_path)
    try:
        node.wait_log("started", timeout=30)
        wait_status(cluster, "node-a", "Running")
        gate = tmp_path / "gate"
        task = cluster.add_task(["sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.02; done; '
                                 'head -c 3000000 /dev/urandom | od -An -tx1'])
        wait_until(lambda: cluster.task(task.id).state == "Executing", 10, message="the task to start")
        filler = fill(disk)
        gate.touch()
        node.wait_log("waiting to record 1 task end(s)", timeout=20)
        node.signal(signal.SIGTERM)
        first = node.log().count("waiting to record 1 task end(s)")
        wait_until(lambda: node.log().count("waiting to record 1 task end(s)") > first, 15,
                   message="the node to say again what it waits for")
        assert node.alive()
        lines = [l for l in node.log().splitlines() if "waiting to record" in l]
        assert all("full" in line for line in lines), lines
        os.unlink(filler)
        assert node.wait_exit(30) == 0, node.log()
        # Recorded at last: Success, or Failed if the full disk kept the node
        # from checking in long enough for it to fence first.
        ended = cluster.task(task.id)
        assert ended.state == "Success" or "cannot run twice" in ended.error, ended
    finally:
        node.close()
        cluster.close()

"""Test helpers: waiting on conditions with deadlines, real node processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator, NoReturn, TypeVar

T = TypeVar("T")

DEFAULT_WAIT = 20.0
LOG_TAIL_LINES = 20
"""How much of a node's log a failure shows."""


def unavailable(skip_reason: str, in_ci: str) -> NoReturn:
    """Something a test needs is missing: a skip on a workstation, a
    failure in CI (`CI` set), where every test must run."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(in_ci)
    pytest.skip(skip_reason)


def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (`1m`) mounted at `folder` for as long as the
    generator runs (root only): a real full disk. For a fixture to yield from."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a small tmpfs here: {done.stderr.strip()}",
                    f"CI runs as root and must be able to mount a tmpfs: {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def wait_until(predicate: Callable[[], T], timeout: float = DEFAULT_WAIT, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def register(cluster, name: str, *, cap: int | None = None) -> str:
    """Register `name` as a fresh `node run` instance would (without one
    running); returns its instance id."""
    from octonodes.store.base import Registration

    instance = uuid.uuid4().hex
    cluster.store.register(Registration(name=name, instance_id=instance, host="host-a", pid=4242,
                                        version="test", heartbeat_interval=10.0, task_cap=cap))
    return instance


class FakeClock:
    """The store's clock, moved by the test (`octonodes.open(db, clock=...)`)."""

    def __init__(self, start: datetime = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, **delta: float) -> None:
        self.now += timedelta(seconds=seconds, **delta)


def pid_alive(pid: int) -> bool:
    """Does the process exist and is it not a zombie (nobody may reap it here)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_pid(path: Path, timeout: float = DEFAULT_WAIT) -> int:
    """Wait for a task to write its pid (one complete line) to `path`."""
    def pid():
        text = path.read_text() if path.exists() else ""
        return int(text.split()[0]) if text.endswith("\n") else None

    return wait_until(pid, timeout, message=f"a pid in {path}")


def cli_env(env: dict | None = None) -> dict:
    """The environment of a real CLI process: this one's with `env` on top,
    less OCTONODES_DB (the process is given --db)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OCTONODES_DB", None)
    return full_env


def octonodes(db: str, *args: str, timeout: float = 60, env: dict | None = None,
              input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI as a separate process."""
    return subprocess.run([sys.executable, "-m", "octonodes", "--db", db, *args],
                          capture_output=True, text=True, timeout=timeout, env=cli_env(env),
                          input=input)


def start_octonodes(db: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start the real CLI as a separate process, its stdout and stderr piped (text)."""
    return subprocess.Popen([sys.executable, "-m", "octonodes", "--db", db, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(env))


class NodeProcess:
    """A real `octonodes node run` process."""

    def __init__(self, db: str, name: str, log_dir: Path, *extra: str, env: dict | None = None) -> None:
        self.db = db
        self.name = name
        self.log_path = log_dir / f"node-{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "octonodes", "--db", db, "node", "run", "--name", name, *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=cli_env(env),
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def wait_exit(self, timeout: float = DEFAULT_WAIT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node {self.name} did not exit within {timeout}s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = DEFAULT_WAIT) -> None:
        """Wait for `text` in the log; fail at once, with the exit code and
        the log's last lines, if the process exits first."""
        try:
            wait_until(lambda: text in self.log() or self.proc.poll() is not None, timeout,
                       message=f"{text!r} in the log of {self.name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the end of its log:\n{self.log_tail()}") from None
        if text not in self.log():  # read again: it may have logged it, then exited
            raise AssertionError(f"node {self.name} exited with code {self.proc.returncode} "
                                 f"before logging {text!r}; the end of its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(empty)"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

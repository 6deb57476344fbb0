"""The README's two commands work as written on a stock Debian or Ubuntu,
whose system pip refuses to install (PEP 668): each starts by making and
entering a virtual environment, and CI runs the very same test command."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parent.parent
VENV_STEP = "python3 -m venv .venv && . .venv/bin/activate && "


def readme_commands() -> list[str]:
    """The README's one-line commands that install something."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    return [line for block in blocks for line in block.splitlines() if "pip install" in line]


def test_every_install_command_starts_with_the_venv_step():
    commands = readme_commands()
    assert len(commands) >= 2, commands
    for line in commands:
        assert line.startswith(VENV_STEP), line
    assert any(line.endswith("octonodes node run --name node-1") for line in commands)
    assert any(line.endswith("python -m pytest") for line in commands)


def test_ci_runs_the_readmes_test_command():
    test_command = next(line for line in readme_commands() if line.endswith("python -m pytest"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, "the README's test command, verbatim, in .ci/run"


@pytest.mark.slow
def test_the_quick_start_command_works_as_written(tmp_path):
    """Run the README's first command in a fresh copy of the project: it makes
    the venv, installs octonodes into it, and starts a node, which then stops
    cleanly on SIGTERM."""
    if shutil.which("python3") is None:
        helpers.unavailable("no python3 on PATH", "python3 must be on PATH in CI")
    copy = tmp_path / "octonodes"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", "bench"))
    command = next(line for line in readme_commands() if "node run" in line)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("OCTONODES_DB", "VIRTUAL_ENV", "PYTHONPATH", "XDG_DATA_HOME")}
    env["HOME"] = str(home)
    log = tmp_path / "quick-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=copy, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        helpers.wait_until(lambda: "node node-1 started" in log.read_text(errors="replace")
                           or proc.poll() is not None, timeout=240, interval=0.5,
                           message="the quick start to install octonodes and start node-1")
        assert proc.poll() is None, log.read_text(errors="replace")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (copy / ".venv" / "bin" / "octonodes").exists()
    assert (home / ".local" / "share" / "octonodes" / "octonodes.db").exists()

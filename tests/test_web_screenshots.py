"""docs/screenshots.py, which made the pictures of the page in docs/images,
still works: run it into a temporary folder and look at what it made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from web_helpers import chromium_path

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_screenshot_script_makes_the_three_pictures(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    env["OCTONODES_TEST_CHROMIUM"] = chromium_path()
    done = subprocess.run([sys.executable, "docs/screenshots.py", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("nodes", "node", "task"):
        picture = (tmp_path / f"{name}.png").read_bytes()
        assert picture.startswith(b"\x89PNG") and len(picture) > 10_000
        assert (ROOT / "docs" / "images" / f"{name}.png").exists()

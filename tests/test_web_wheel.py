"""The page ships in the wheel: its templates, its stylesheet, its script,
and the vendored htmx with its licence. The wheel is built with what the
test extra installs (setuptools, wheel), so nothing is fetched."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from octonodes.web.templating import HTMX, STATIC, TEMPLATES

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_wheel_holds_the_pages_templates_and_static_files(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "octonodes", source / "octonodes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("octonodes-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"octonodes/web/templates/{p.name}" for p in TEMPLATES.glob("*.html")}
    wanted |= {f"octonodes/web/static/{p.name}" for p in STATIC.iterdir()}
    assert wanted - names == set()
    assert f"octonodes/web/static/{HTMX}" in names
    assert "octonodes/web/static/htmx-LICENSE.txt" in names
    assert len([n for n in wanted if n.endswith(".html")]) >= 10

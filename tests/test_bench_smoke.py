"""The benchmark harness still runs: `bench/run.py --quick` on two of its
benchmarks, end to end. The figures themselves are not checked (the machines
are shared and noisy); only that the run ends well and writes its document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_quick_bench_runs_and_writes_its_results(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "OCTONODES_DB"}
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--backend", "sqlite", "--only", "list,claim",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr

    doc = json.loads(out.read_text())
    assert {"machine", "when", "quick", "sizes", "results"} <= set(doc)
    assert doc["quick"] is True
    assert [(r["bench"], r["backend"]) for r in doc["results"]] == [("list", "sqlite"),
                                                                    ("claim", "sqlite")]
    for result in doc["results"]:
        assert {"name", "figure", "target", "met", "details"} <= set(result)
        assert isinstance(result["met"], bool)
    listing, claim = (r["details"] for r in doc["results"])
    assert {"ms", "bare_ms"} <= set(listing)
    assert {"small_us", "large_us"} <= set(claim)
    assert "| benchmark | backend | figure | target |" in done.stdout  # the table

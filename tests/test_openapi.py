"""`/api/openapi.json` describes every route, and schemathesis fuzzes a live
node through it, with a viewer's key and an admin's: no input yields a
500, and every answer matches the document."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
from starlette.routing import Route

from http_helpers import shared_package_store, start_http_node
from octonodes.http.openapi import OPERATIONS, build_document
from octonodes.http.server import build_app

FUZZ_EXAMPLES = 5
"""Cases per operation and key: a few hundred in all, well under two minutes."""
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


def test_every_route_is_described_with_its_role():
    app = build_app(context=None)
    document = build_document(app.routes)
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert routes
    for route in routes:
        operations = document["paths"][route.path]
        for method in route.methods - {"HEAD"}:
            op = operations[method.lower()]
            role = getattr(route, "role", None)
            assert op["x-octonodes-role"] == (role.value if role else None), (route.path, method)
            assert bool(op["security"]) == (role is not None), (route.path, method)
            if route.path.startswith("/api"):
                assert route.name in OPERATIONS, f"{method} {route.path} has no description"
    described = {(path, m) for path, ops in document["paths"].items() for m in ops}
    served = {(r.path, m.lower()) for r in routes for m in r.methods - {"HEAD"}}
    assert described == served
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_schemathesis_finds_no_error_and_no_mismatch(cluster, start_node, tmp_path):
    shared_package_store(cluster, tmp_path)
    node = start_http_node(start_node, "node-1", "--cap", "0")  # fuzzed tasks are never run
    served = httpx.get(node.url + "/api/openapi.json").json()
    assert served["paths"]["/api/tasks"]["post"]["x-octonodes-role"] == "operator"
    for role in ("viewer", "admin"):
        _, key = cluster.add_api_key(f"fuzz-{role}", role)
        ran = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", node.url + "/api/openapi.json",
             "--header", f"X-Octopus-ApiKey: {key}", "--max-examples", str(FUZZ_EXAMPLES),
             "--phases", "fuzzing", "--checks", CHECKS, "--generation-database", "none",
             "--workers", "2", "--no-color", "--report-dir", str(tmp_path / f"report-{role}")],
            capture_output=True, text=True, timeout=150, cwd=tmp_path)
        assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
        cases = re.search(r"(\d+) generated, \1 passed", ran.stdout)
        assert cases and int(cases.group(1)) >= 100, ran.stdout[-3000:]
    assert node.ping().status_code == 200
    assert "Traceback" not in node.process.log()

"""The operator docs answer what a newcomer trips over: how the binary gets
installed, how soon `check` sees a dead node, shell completion, a PostgreSQL
server reached from many hosts, and real command output."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from octonodes.cli.app import app

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_operations_says_how_the_service_binary_is_installed():
    text = (DOCS / "operations.md").read_text()
    section = text.split("## Installing the program", 1)[1].split("\n## ", 1)[0]
    assert "python3 -m venv /opt/octonodes" in section
    assert "ln -sf '/opt/octonodes/bin/octonodes' /usr/local/bin/octonodes" in section
    assert "externally-managed-environment" in section


def test_operations_says_how_soon_a_killed_node_is_critical():
    text = (DOCS / "operations.md").read_text()
    assert "kill -9" in text and "`offline_after` plus the cron period" in text


def test_operations_documents_shell_completion():
    text = (DOCS / "operations.md").read_text()
    for words in ("--install-completion", "--show-completion", "bash", "zsh", "fish", "node names"):
        assert words in text, words


def test_postgresql_urls_with_a_query_are_quoted_in_commands():
    text = (DOCS / "postgresql.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith("$ octonodes --db postgres")]
    assert commands
    for line in commands:
        url = line.split("--db ", 1)[1]
        assert "?" not in url.split()[0] or url.startswith("'"), line


def test_postgresql_says_what_a_server_for_many_hosts_needs():
    text = (DOCS / "postgresql.md").read_text()
    for words in ("listen_addresses", "pg_hba.conf", "firewall", "PGPASSFILE", ".pgpass"):
        assert words in text, words


def test_api_shows_the_real_output_of_apikey_list(tmp_path):
    db = str(tmp_path / "cluster.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "init"]).exit_code == 0
    assert runner.invoke(app, ["--db", db, "apikey", "add", "deploy-pipeline"]).exit_code == 0
    real = runner.invoke(app, ["--db", db, "apikey", "list"]).stdout.splitlines()
    header = next(line for line in real if line.startswith("┃"))
    words = re.findall(r"[A-Z][a-z]+(?: [a-z]+)?", header)
    text = (DOCS / "api.md").read_text()
    shown = text.split("$ octonodes apikey list\n", 1)[1].split("```", 1)[0].splitlines()
    assert shown and shown[0].startswith("API keys in "), shown
    documented = next(line for line in shown if line.startswith("┃"))
    assert re.findall(r"[A-Z][a-z]+(?: [a-z]+)?", documented) == words, (documented, header)

"""`octonodes init` with SQLite: the folders it makes and an empty file it
finds are its owner's alone, whatever the umask."""

from __future__ import annotations

import os
import stat

import pytest
from typer.testing import CliRunner

from octonodes.cli.app import app


@pytest.fixture
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_makes_every_missing_folder_owner_only(tmp_path, open_umask):
    path = tmp_path / "a" / "b" / "c" / "cluster.db"
    result = CliRunner().invoke(app, ["--db", str(path), "init"])
    assert result.exit_code == 0, result.output
    assert "created a new database" in result.stdout
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert mode(folder) == 0o700, folder
    assert mode(path) == 0o600


def test_init_in_an_existing_empty_file_says_so_and_makes_it_owner_only(tmp_path, open_umask):
    path = tmp_path / "cluster.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    result = CliRunner().invoke(app, ["--db", str(path), "init"])
    assert result.exit_code == 0, result.output
    assert "initialised a new database in the existing file" in result.stdout, result.stdout
    assert mode(path) == 0o600
    again = CliRunner().invoke(app, ["--db", str(path), "init"])
    assert "up to date" in again.stdout, again.stdout


def test_a_non_empty_file_keeps_its_mode(tmp_path, open_umask):
    path = tmp_path / "cluster.db"
    assert CliRunner().invoke(app, ["--db", str(path), "init"]).exit_code == 0
    os.chmod(path, 0o640)
    result = CliRunner().invoke(app, ["--db", str(path), "init"])
    assert result.exit_code == 0 and "up to date" in result.stdout, result.output
    assert mode(path) == 0o640

"""The docs stay true: the generated CLI reference is current, every command
and option has help, and the commands, options and settings the docs name
exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REGENERATE = "python docs/gen_cli.py"
CHECKED_DOCS = [
    "concepts.md", "tasks.md", "operations.md", "api.md", "load-balancing.md",
    "postgresql.md", "runbooks/maintenance.md", "runbooks/retirement.md",
]
"""The hand-written pages whose commands, options and links are checked here."""


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_cli = _load_generator()


def _params(command):
    from typer.core import TyperArgument, TyperOption

    return [p for p in command.params
            if isinstance(p, (TyperOption, TyperArgument)) and not getattr(p, "hidden", False)]


# -- the generated reference --------------------------------------------------


def test_cli_reference_is_up_to_date():
    current = (DOCS / "cli.md").read_text()
    assert current == gen_cli.render(), (
        f"docs/cli.md is stale: run `{REGENERATE}` and commit the result")


def test_check_mode_fails_on_a_stale_file_and_passes_after_writing(tmp_path):
    out = tmp_path / "cli.md"
    out.write_text("# stale\n")
    script = [sys.executable, str(DOCS / "gen_cli.py")]
    stale = subprocess.run([*script, "--check", "--output", str(out)],
                           capture_output=True, text=True, cwd=ROOT)
    assert stale.returncode == 1, stale
    assert REGENERATE in stale.stderr
    written = subprocess.run([*script, "--output", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert written.returncode == 0, written.stderr
    fresh = subprocess.run([*script, "--check", "--output", str(out)],
                           capture_output=True, text=True, cwd=ROOT)
    assert fresh.returncode == 0, fresh.stderr
    assert out.read_text() == gen_cli.render()


def test_the_generator_walks_every_command_and_subcommand():
    paths = {" ".join(path) for path, _ in gen_cli.walk()}
    assert {"octonodes", "octonodes list", "octonodes config set", "octonodes node run",
            "octonodes task add", "octonodes task wait"} <= paths
    text = (DOCS / "cli.md").read_text()
    for path in paths:
        assert f"\n## {path}\n" in text


@pytest.mark.parametrize("path", [(), ("task", "add"), ("node", "run")])
def test_the_reference_is_what_a_terminal_shows(path):
    env = {**os.environ, "COLUMNS": str(gen_cli.WIDTH), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("OCTONODES_DB", None)
    real = subprocess.run([sys.executable, "-m", "octonodes", *path, "--help"],
                          capture_output=True, text=True, env=env)
    assert real.returncode == 0, real.stderr
    shown = "\n".join(line.rstrip() for line in real.stdout.strip("\n").splitlines())
    assert shown == gen_cli.help_text(("octonodes", *path))
    assert "\x1b[" not in shown


def test_every_command_and_option_has_help():
    missing = []
    for path, command in gen_cli.walk():
        name = " ".join(path)
        if not (command.help or command.short_help or "").strip():
            missing.append(f"{name}: the command has no help text (give it a docstring)")
        for param in _params(command):
            if not (getattr(param, "help", None) or "").strip():
                label = "/".join(param.opts) if param.param_type_name == "option" else param.name
                missing.append(f"{name}: {label} has no help text")
    assert not missing, "\n".join(missing)


# -- what the hand-written pages say -------------------------------------------


def _option_names(command) -> dict[str, bool]:
    """Each option spelling of a command -> whether it takes a value."""
    names = {"--help": False, "-h": False}
    for param in command.params:
        if param.param_type_name != "option":
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            names[opt] = not (param.is_flag or param.count)
    return names


def _check_command_line(words: list[str], root) -> str | None:
    """None if `octonodes …` names a real command and its real options; else why not."""
    command, path = root, ["octonodes"]
    options = _option_names(command)
    i = 0
    while i < len(words):
        word = words[i].strip("[]…")
        if word == "--":
            return None
        if word.startswith("-") and len(word) > 1:
            opt = word.split("=", 1)[0]
            if opt not in options:
                return f"{' '.join(path)} has no option {opt}"
            if options[opt] and "=" not in word:
                i += 1
        elif getattr(command, "commands", None):
            sub = command.commands.get(word)
            if sub is None and (word.isupper() or word.startswith("<")):
                return None  # a placeholder: `octonodes COMMAND --help`
            if sub is None:
                return f"{' '.join(path)} has no command {word!r}"
            command = sub
            path.append(word)
            options = _option_names(command)
        i += 1
    return None


_CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INVOCATION = re.compile(r"(?:^|(?<=[\s\"'(/`=]))octonodes[ \t]+([^|;&>#)`\n]*)", re.MULTILINE)


def _command_lines(text: str) -> list[str]:
    """The `octonodes …` invocations a page shows, in inline code and in code
    blocks, each cut at the first shell operator. The service user is called
    octonodes too: a match that is an option's value (`sudo -u octonodes …`)
    or a cron line's user field (`* * * * * octonodes out=$(…)`) is skipped."""
    places = _CODE_SPAN.findall(_FENCE.sub("", text))
    places += [body.replace("\\\n", " ") for _, body in _FENCE.findall(text)]
    found = []
    for place in places:
        at = 0
        while (match := _INVOCATION.search(place, at)) is not None:
            at = match.start() + len("octonodes")
            before = place[:match.start()].split()
            words = match.group(1).split()
            if (before and before[-1].startswith("-")) or (words and "=" in words[0]):
                continue
            found.append("octonodes " + match.group(1).rstrip())
    return found


@pytest.mark.parametrize("page", CHECKED_DOCS)
def test_commands_and_options_in_the_docs_exist(page):
    import typer.main

    from octonodes.cli.app import app

    root = typer.main.get_command(app)
    text = (DOCS / page).read_text()
    wrong = []
    for line in _command_lines(text):
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        if words[:1] != ["octonodes"]:
            continue
        why = _check_command_line(words[1:], root)
        if why:
            wrong.append(f"`{line}`: {why}")
    assert not wrong, f"{page} names commands or options that do not exist:\n" + "\n".join(wrong)


def test_the_settings_table_lists_every_setting_with_its_default():
    from octonodes.settings import SETTINGS

    text = (DOCS / "concepts.md").read_text()
    wrong = []
    for key, setting in SETTINGS.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        if row is None:
            wrong.append(f"{key}: no row in the settings table of docs/concepts.md")
        elif setting.default and f"`{setting.default}`" not in row:
            wrong.append(f"{key}: its row does not give the default `{setting.default}`")
    assert not wrong, "\n".join(wrong)


def test_the_exit_codes_are_documented():
    from octonodes import errors

    text = (DOCS / "concepts.md").read_text()
    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.OctonodesError)}
    for code in sorted(codes | {0}):
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), f"exit code {code} is not in docs/concepts.md"


OTHERS_PAGES = {"load-balancing.md", "api.md", "postgresql.md", "performance.md", "README.md"}
"""Pages written alongside these ones; a link to them may precede the page."""


@pytest.mark.parametrize("page", CHECKED_DOCS)
def test_relative_links_lead_somewhere(page):
    source = DOCS / page
    text = _FENCE.sub("", source.read_text())
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        resolved = (source.parent / file).resolve()
        if not resolved.exists() and resolved.name not in OTHERS_PAGES:
            broken.append(target)
    assert not broken, f"{page} links to missing files: {broken}"

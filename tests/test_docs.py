"""The README is a promise: its set-up commands, CI and the command help stay in step."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer.main

from cohortctl.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _all_commands() -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, command: click.Command) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found.append((prefix, command))

    walk("", root)
    return found


def test_readme_opens_with_the_two_setup_commands() -> None:
    blocks = _shell_blocks(README)
    assert "cohortctl demo" in blocks[0]
    assert "pytest" in blocks[1] and "ruff check" in blocks[1]
    assert blocks[0].strip().count("\n") == 0 and blocks[1].strip().count("\n") == 0


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = _shell_blocks(README)[1].strip()
    # CI installs into the venv it just created; the rest of the command is the same.
    tail = test_command.split("&&", 1)[1].strip()
    assert tail in ci


def test_every_command_has_help_and_is_documented() -> None:
    for name, command in _all_commands():
        assert command.help, f"cohortctl {name} has no help text"
        assert f"cohortctl {name}" in README, f"cohortctl {name} is not in the README"

"""Help reads well at 80 columns and ends with Examples that work as written."""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from cohortctl.cli import app
from cohortctl.cli.examples import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_IDS = ROOT / "sample_payloads" / "ids.csv"
WIDTH = 80


def _leaves(command: click.Command, path: str = "") -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _leaves(sub, f"{path} {name}".strip())
    else:
        yield path, command


def _root() -> click.Command:
    return typer.main.get_command(app)


LEAVES = sorted(path for path, _ in _leaves(_root()))


def _help(path: str, columns: int) -> str:
    result = CliRunner().invoke(
        app, [*path.split(), "--help"], env={"COLUMNS": str(columns), "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_command_has_examples() -> None:
    assert sorted(EXAMPLES) == LEAVES


@pytest.mark.parametrize("path", LEAVES)
def test_help_ends_with_the_examples_and_fits_80_columns(path: str) -> None:
    text = _help(path, WIDTH)
    lines = [line.rstrip() for line in text.splitlines()]
    assert all(len(line) <= WIDTH for line in lines), path
    shown = [line.strip() for line in lines if line.strip()]
    assert shown[-len(EXAMPLES[path]) :] == list(EXAMPLES[path])
    heading = shown[: -len(EXAMPLES[path])]
    assert any(line.startswith("Examples") for line in heading[-4:]), path
    assert heading[-1].endswith(":"), path


@pytest.mark.parametrize("columns", [WIDTH, 160])
@pytest.mark.parametrize("path", LEAVES)
def test_nothing_is_clipped_and_every_choice_is_listed(path: str, columns: int) -> None:
    command = dict(_leaves(_root()))[path]
    text = _help(path, columns)
    written = " ".join(
        [command.help or "", *(getattr(p, "help", "") or "" for p in command.params)]
    )
    clipped = text.count("…") - written.count("…")
    assert clipped <= 0, f"cohortctl {path} --help clips text at {columns} columns"
    words = set(re.findall(r"[\w-]+", text))
    for param in command.params:
        if isinstance(param.type, click.Choice) and not getattr(param, "hidden", False):
            for choice in map(str, param.type.choices):
                assert choice in words or f"[{choice}" in text, (path, param.name, choice)


def _split(example: str) -> list[str]:
    words = shlex.split(example)
    assert words[0] == "cohortctl"
    return words[1:-1] if words[-1] == "&" else words[1:]


@pytest.mark.parametrize("path", LEAVES)
def test_every_example_parses_against_its_command(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example's words reach its command's callback: no usage error, right command."""
    monkeypatch.chdir(tmp_path)
    for name in ("ids.csv", "recording.har"):
        shutil.copy(SAMPLE_IDS, tmp_path / name)
    root = _root()
    called: list[str] = []
    for leaf_path, leaf in _leaves(root):
        leaf.callback = lambda *_a, _p=leaf_path, **_k: called.append(_p)
    for example in EXAMPLES[path]:
        assert len(example) <= WIDTH - 4, f"too long for 80 columns: {example}"
        called.clear()
        try:
            root.main(_split(example), prog_name="cohortctl", standalone_mode=False)
        except click.UsageError as error:
            pytest.fail(f"{example}: {error.format_message()}")
        assert called == [path], example

"""``--timeout`` takes a duration (`10s`, `2m` or seconds) on every command that has it."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
import typer

from cohortctl.cli import app
from cohortctl.cli.options import request_deadline
from cohortctl.errors import InputError


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):  # the root loads its commands lazily
            sub = command.get_command(context, name)
            if sub is not None:
                yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _timeout_options() -> list[tuple[str, click.Option]]:
    root = typer.main.get_command(app)
    found = []
    for name, command in _commands(root):
        for param in command.params:
            if isinstance(param, click.Option) and "--timeout" in param.opts:
                found.append((name, param))
    return found


TIMEOUT_OPTIONS = _timeout_options()


def test_the_commands_with_a_timeout_are_found() -> None:
    names = {name for name, _ in TIMEOUT_OPTIONS}
    assert {"mock identify", "check", "sync", "upload", "cohorts list", "wait"} <= names


@pytest.mark.parametrize(
    "option", [o for _, o in TIMEOUT_OPTIONS], ids=[n for n, _ in TIMEOUT_OPTIONS]
)
@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("2m", 120.0), ("7", 7.0)])
def test_timeout_takes_a_duration(option: click.Option, text: str, seconds: float) -> None:
    context = click.Context(click.Command("x"))
    value = option.type_cast_value(context, text)
    # Parsed at once (destination side) or kept as text and read with the same rules.
    assert (value if isinstance(value, float) else request_deadline(value)) == seconds


@pytest.mark.parametrize("text", ["0", "10x", "-1s"])
def test_a_timeout_that_is_no_positive_duration_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="--timeout"):
        request_deadline(text)


def test_bad_timeout_on_the_command_line_is_one_line_exit_2(cli) -> None:
    result = cli("mock", "identify", "--url", "http://127.0.0.1:9", "--timeout", "10x")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --timeout")

"""Option bundles: declared once as a dataclass, spread into each command's options."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from cohortctl.cli.bundles import with_bundles


@dataclasses.dataclass(frozen=True)
class Where:
    host: Annotated[str, typer.Option("--host")] = "localhost"
    port: Annotated[int, typer.Option("--port")] = 80


def test_a_bundle_becomes_options_and_arrives_as_one_object() -> None:
    seen: list[tuple[str, Where]] = []

    @with_bundles
    def command(name: Annotated[str, typer.Argument()], *, where: Where) -> None:
        seen.append((name, where))

    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, ["x", "--port", "8080"])
    assert result.exit_code == 0, result.output
    assert seen == [("x", Where(port=8080))]


def test_a_bundle_field_may_not_repeat_a_parameter() -> None:
    def command(host: str = "", *, where: Where) -> None:
        del host, where

    with pytest.raises(TypeError, match="repeats"):
        with_bundles(command)

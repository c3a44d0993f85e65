"""The ``cohortctl`` command line: one sub-app per file, errors mapped to exit codes here only."""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from cohortctl import __version__
from cohortctl.cli import (
    check,
    cohorts,
    config_cmd,
    demo,
    membership,
    mock,
    serve,
    serve_partner,
    sync,
    upload,
    wait,
)
from cohortctl.errors import CohortctlError, ExitCode
from cohortctl.render import err, report_error


class CohortctlGroup(TyperGroup):
    """Root group: turns every CohortctlError into one clear message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CohortctlError as error:
            report_error(error)
            raise click.exceptions.Exit(int(error.exit_code)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise click.exceptions.Exit(int(ExitCode.INTERRUPTED)) from None


app = typer.Typer(
    cls=CohortctlGroup,
    name="cohortctl",
    help=(
        "Amplitude behavioral cohorts from the command line.\n\n"
        "Customers: upload ID files into cohorts (upload, membership, cohorts).\n"
        "Partners: fire and receive Amplitude's cohort-sync payloads (mock, serve partner).\n\n"
        "Exit codes: 0 ok, 1 a request or check failed, 2 usage or input error, 130 interrupted."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cohortctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Amplitude behavioral cohorts from the command line."""


app.command("upload")(upload.upload)
app.add_typer(membership.app, name="membership")
app.add_typer(cohorts.app, name="cohorts")
serve.app.command("partner")(serve_partner.partner)
app.add_typer(serve.app, name="serve")
app.add_typer(config_cmd.app, name="config")
app.add_typer(mock.app, name="mock")
app.command("demo")(demo.demo)
app.command("sync")(sync.sync)
app.command("check")(check.check)
app.command("wait")(wait.wait)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cohortctl")

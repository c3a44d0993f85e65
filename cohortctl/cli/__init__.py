"""The ``cohortctl`` command line: one sub-app per file, errors mapped to exit codes here only.

Start-up is kept cheap: the root group knows each command by name, module and one-line help
(:data:`COMMANDS`) and imports a command's module only when that command is run, completed or
asked for its own help. ``cohortctl --help`` and ``--version`` load neither the HTTP stacks
nor the servers nor rich (the root help uses click's plain formatter).

To add a command or group, add one :func:`register` line below; the module it names holds a
``typer.Typer`` (a group) or a plain function (a single command).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click
import typer
import typer.main
from typer.core import TyperGroup

from cohortctl import __version__
from cohortctl.errors import CohortctlError, ExitCode


@dataclass(frozen=True)
class LazyCommand:
    """A command the root knows by name: where it lives and its one-line help."""

    target: str  # "package.module:attribute", a typer.Typer or a command function
    short_help: str


COMMANDS: dict[str, LazyCommand] = {}


def register(name: str, target: str, short_help: str) -> None:
    """Make ``cohortctl NAME`` run ``target`` ("module:attribute"), imported on first use."""
    COMMANDS[name] = LazyCommand(target, short_help)


# Listed in this order in `cohortctl --help`.
register("upload", "cohortctl.cli.upload:upload", "Upload an ID file into an Amplitude cohort.")
register("membership", "cohortctl.cli.membership:app", "Add ids to, or remove ids from, a cohort.")
register("cohorts", "cohortctl.cli.cohorts:app", "List, show, download, reconcile cohorts.")
register("mock", "cohortctl.cli.mock:app", "Fire Amplitude's cohort-sync payloads at a partner.")
register("sync", "cohortctl.cli.sync:sync", "Replay Amplitude's whole cohort sync at a partner.")
register("state", "cohortctl.cli.state:app", "See and change what the sync state holds.")
register("check", "cohortctl.cli.check:check", "Run the conformance suite against a partner.")
register(
    "destination",
    "cohortctl.cli.destination_cmd:app",
    "Destination files and the built-in profiles.",
)
register("replay", "cohortctl.cli.replay:replay", "Send a HAR recording again at an endpoint.")
register("wait", "cohortctl.cli.wait:wait", "Block until an endpoint answers (for CI).")
register("serve", "cohortctl.cli.serve:app", "Run an embedded server: fake Amplitude, partner.")
register("config", "cohortctl.cli.config_cmd:app", "Show the resolved configuration.")
register("demo", "cohortctl.cli.demo:demo", "Show both sides working on 127.0.0.1.")


def load_command(name: str) -> click.Command:
    """Import and build the click command registered as ``name``."""
    entry = COMMANDS[name]
    module_name, _, attribute = entry.target.partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    command: click.Command
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(context_settings=_CONTEXT, add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    from cohortctl.cli.examples import attach_examples

    attach_examples(name, command)
    return command


def _quiet_broken_pipe() -> None:
    """stdout was closed by its reader (``| head``): point it at /dev/null so the final flush
    at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (CliRunner)
        pass


class CohortctlGroup(TyperGroup):
    """Root group: lazy sub-commands; every CohortctlError becomes one message and its code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, click.Command] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load_command(cmd_name)
        return self._loaded[cmd_name]

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as error:
            # click suggests from the loaded commands only; suggest from every name.
            raise click.exceptions.NoSuchCommand(
                error.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the registry, so listing the commands imports none of them.
        rows = [(name, entry.short_help) for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        if "cohortctl.cli.render" in sys.modules:  # a second run in one process (tests)
            sys.modules["cohortctl.cli.render"].JsonOutput.reset()
        try:
            return super().invoke(ctx)
        except CohortctlError as error:
            from cohortctl.cli.render import print_failure_json, report_error

            report_error(error)
            print_failure_json(error)
            raise click.exceptions.Exit(int(error.exit_code)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise click.exceptions.Exit(int(ExitCode.OK)) from None
        except OSError as error:
            if not _raised_by_stdout_console(error):
                raise
            from cohortctl.cli.render import report_error
            from cohortctl.errors import FileWriteError

            reason = error.strerror or str(error)
            report_error(FileWriteError("output", "to standard output", reason))
            _quiet_broken_pipe()
            raise click.exceptions.Exit(int(ExitCode.USAGE)) from None


def _raised_by_stdout_console(error: OSError) -> bool:
    """Whether ``error`` came from writing a table or line to stdout (a full disk behind it)."""
    if error.errno == errno.EPIPE or "cohortctl.cli.render" not in sys.modules:
        return False
    stdout_console = sys.modules["cohortctl.cli.render"].out
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_locals.get("self") is stdout_console:
            return True
        frame = frame.tb_next
    return False


_CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    cls=CohortctlGroup,
    name="cohortctl",
    help=(
        "Amplitude behavioral cohorts from the command line.\n\n"
        "Customers: upload ID files into cohorts (upload, membership, cohorts).\n"
        "Partners: fire and receive Amplitude's cohort-sync payloads (mock, sync, check, "
        "serve partner).\n\n"
        "Exit codes: 0 ok, 1 a request or check failed, 2 usage or input error, "
        "3 busy (another sync of the same cohort), 130 interrupted."
    ),
    epilog=(
        "\b\nExamples:\n"
        "  cohortctl demo\n"
        "  cohortctl upload --help\n"
        "  cohortctl mock flow --help\n"
        "  cohortctl --install-completion"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings=_CONTEXT,
)


def _version(value: bool) -> None:
    if value:
        click.echo(f"cohortctl {__version__}")
        raise click.exceptions.Exit(int(ExitCode.OK))


@app.callback()
def root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        show_default=False,
        help="Show the version and exit.",
    ),
) -> None:
    """Amplitude behavioral cohorts from the command line."""


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="cohortctl")
    except Exception as error:
        if type(error).__name__ != "ShellDetectionFailure":  # shellingham's, via completion
            raise
        click.echo(
            "error: cannot tell which shell this is: name it, e.g. "
            "cohortctl --show-completion bash (bash, zsh, fish, powershell)",
            err=True,
        )
        raise SystemExit(int(ExitCode.USAGE)) from None
    except SystemExit as exit_:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise SystemExit(exit_.code) from None
        except OSError as error:  # a full disk behind a redirected stdout
            if error.errno != errno.EPIPE:
                reason = error.strerror or str(error)
                click.echo(f"error: cannot write standard output: {reason}", err=True)
                _quiet_broken_pipe()
                raise SystemExit(int(ExitCode.USAGE)) from None
        raise

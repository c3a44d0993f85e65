"""``cohortctl demo``: both sides of the wire on one machine, no account, no network."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
import typer.main
from rich.markup import escape

from cohortctl.cli.render import err
from cohortctl.errors import CheckFailed
from cohortctl.partner import samples
from cohortctl.servers.runner import BackgroundServer

DEMO_COHORT = "Demo power users"
DEMO_APP_ID = "153957"
DEMO_OWNER = "demo@example.com"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the demo's own commands, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _demo_ids_file(workdir: Path) -> Path:
    """The sample ID file shipped in ``sample_payloads/``, or a copy of its ids if absent."""
    shipped = samples.SAMPLES_DIR / samples.DEMO_IDS_FILE
    if shipped.is_file():
        try:
            return shipped.relative_to(Path.cwd())
        except ValueError:
            return shipped
    fallback = workdir / samples.DEMO_IDS_FILE
    ids = [f"user-{1000 + n}" for n in range(1, 41)]
    fallback.write_text("user_id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return fallback


WIDTH = 80


def command_lines(words: Sequence[str], *, prompt: str = "$ ") -> list[str]:
    """A command as a user types it, broken with `` \\`` between words to fit 80 columns."""
    lines: list[str] = []
    current = prompt
    for number, word in enumerate(shlex.quote(w) for w in words):
        candidate = current + word if number == 0 else f"{current} {word}"
        if len(candidate) > WIDTH - 2 and number > 0:
            lines.append(current + " \\")
            current = "    " + word
        else:
            current = candidate
    return [*lines, current]


CLOSING = """
Try it yourself: start the servers with keys you choose, then run the commands.

  export AMPLITUDE_API_KEY=local-key AMPLITUDE_SECRET_KEY=local-secret
  cohortctl serve amplitude --port 8600 &
  cohortctl upload sample_payloads/ids.csv --name Demo --app-id 1 \\
      --owner me@example.com --base-url http://127.0.0.1:8600
  cohortctl cohorts list --base-url http://127.0.0.1:8600

  export COHORTCTL_PARTNER_API_KEY=local-partner-key
  cohortctl serve partner --port 8080 &
  cohortctl mock flow --mode both --url http://127.0.0.1:8080 -v

Stop the servers with: kill %1 %2"""


def _run(args: Sequence[str]) -> int:
    """Run one cohortctl command in-process, echoing it first as a user would type it."""
    from cohortctl.cli import app  # the root app imports this module

    err.print()
    for line in command_lines(["cohortctl", *args]):
        err.print(f"[bold]{escape(line)}[/]")
    command = typer.main.get_command(app)
    try:
        result = command.main(list(args), prog_name="cohortctl", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return int(result) if isinstance(result, int) else 0


def demo(
    side: Annotated[
        str,
        typer.Option(
            "--side",
            help="Which side to show: customer (upload), partner (mock flows) or both.",
            click_type=click.Choice(["customer", "partner", "both"]),
        ),
    ] = "both",
) -> None:
    """Show both sides working against the embedded servers, on 127.0.0.1 only.

    Customer side: starts the fake Amplitude API, uploads sample_payloads/ids.csv and lists
    the cohort. Partner side: starts the reference receiver and runs `mock flow` in list and
    property mode against it. Keys are generated for this run and never printed.
    Exit 0 when every step succeeded.
    """
    from cohortctl.servers.amplitude.app import FakeSettings
    from cohortctl.servers.amplitude.app import create_app as amplitude_app
    from cohortctl.servers.partner.app import ReceiverSettings
    from cohortctl.servers.partner.app import create_app as partner_app

    failures: list[str] = []
    # One stream, in order: the steps' diagnostics go where their tables go.
    with contextlib.redirect_stderr(sys.stdout), ExitStack() as stack:
        workdir = Path(stack.enter_context(_tempdir()))
        if side in ("customer", "both"):
            api_key, secret_key = secrets.token_hex(12), secrets.token_hex(16)
            amplitude = stack.enter_context(
                BackgroundServer(lambda: amplitude_app(FakeSettings(api_key, secret_key)))
            )
            err.print(f"[bold]Customer side[/]: fake Amplitude cohort API on {amplitude.url}")
            ids_file = _demo_ids_file(workdir)
            with _environment({"AMPLITUDE_API_KEY": api_key, "AMPLITUDE_SECRET_KEY": secret_key}):
                steps = [
                    [
                        "upload", str(ids_file), "--name", DEMO_COHORT, "--app-id", DEMO_APP_ID,
                        "--owner", DEMO_OWNER, "--base-url", amplitude.url,
                    ],
                    ["cohorts", "list", "--base-url", amplitude.url],
                ]  # fmt: skip
                for step in steps:
                    if _run(step) != 0:
                        failures.append(" ".join(step[:2]))
        if side in ("partner", "both"):
            partner_key = secrets.token_hex(12)
            receiver = stack.enter_context(
                BackgroundServer(lambda: partner_app(ReceiverSettings(api_key=partner_key)))
            )
            err.print(f"\n[bold]Partner side[/]: reference receiver on {receiver.url}")
            with _environment({"COHORTCTL_PARTNER_API_KEY": partner_key}):
                for mode in ("list", "property"):
                    step = [
                        "mock", "flow", "--mode", mode, "--url", receiver.url,
                        "--cohort-name", DEMO_COHORT, "--cohort-id", "demo123",
                    ]  # fmt: skip
                    if _run(step) != 0:
                        failures.append(f"mock flow --mode {mode}")
        if failures:
            raise CheckFailed(f"demo steps failed: {', '.join(failures)}")
        err.print("\n[bold green]demo complete:[/] every step succeeded; its servers stop now.")
        err.print(escape(CLOSING), highlight=False)


@contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cohortctl-demo-") as path:
        yield path

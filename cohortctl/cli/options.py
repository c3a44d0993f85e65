"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cohortctl import http
from cohortctl.cli.render import OutputFormat, note_output
from cohortctl.durations import parse_duration
from cohortctl.errors import InputError


def option(
    *names: str, help: str, panel: str | None = None, show_default: bool = False, **settings: Any
) -> Any:
    """A typer option with the house defaults: no ``[default: …]`` shown unless asked for
    (the help text says what the default means where it matters); ``panel`` is its
    ``rich_help_panel``; other keywords go to :func:`typer.Option` as they are."""
    if panel is not None:
        settings["rich_help_panel"] = panel
    return typer.Option(*names, help=help, show_default=show_default, **settings)


def flag(*names: str, help: str, panel: str | None = None, **settings: Any) -> Any:
    """An on/off flag with the house defaults (click shows a flag's default only when it is
    on, as ``--member/--not-member`` does)."""
    return typer.Option(*names, help=help, rich_help_panel=panel, **settings)


TIMEOUT_HELP = "Give up on one request after this long, connect to last byte: 10s, 2m or seconds."


def request_deadline(value: str | float) -> float:
    """Seconds of ``--timeout`` (the per-request deadline): ``10s``, ``2m`` or plain seconds.

    Also the option's parser, so a default given as a number passes through unchanged.
    """
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        seconds = parse_duration(value, option="--timeout")
    if not seconds > 0:
        raise InputError(f"--timeout must be positive, got {value!r}")
    return seconds


Profile = Annotated[
    str | None,
    typer.Option(
        "--profile", help="Config profile to use (env COHORTCTL_PROFILE).", show_default=False
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file (env COHORTCTL_CONFIG; default: the user config dir).",
        show_default=False,
        dir_okay=False,
    ),
]
Output = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="table for people, json for machines.",
        case_sensitive=False,
        callback=note_output,
    ),
]
# Where ``-o`` names a file the command writes (``cohorts download``, ``state export``), the
# format option is long-form only, on every command of that group.
OutputLong = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        help="table for people, json for machines.",
        case_sensitive=False,
        callback=note_output,
    ),
]
AllowInsecureHttp = Annotated[
    bool,
    typer.Option(
        "--allow-insecure-http",
        help="Allow sending credentials over plain http:// to a non-loopback host.",
    ),
]
Har = Annotated[
    Path | None,
    typer.Option(
        "--har",
        help="Record every exchange in this HAR 1.2 file (credentials redacted), written as "
        "requests finish; opens in browsers' developer tools.",
        dir_okay=False,
        show_default=False,
    ),
]


def _exchange_watcher(threshold: int) -> Callable[[typer.Context, int], int]:
    def callback(ctx: typer.Context, value: int) -> int:
        if value >= threshold:
            from cohortctl import http
            from cohortctl.cli.exchanges import ExchangePrinter

            printer = ExchangePrinter()
            http.add_observer(printer)
            ctx.call_on_close(lambda: http.remove_observer(printer))
        return value

    return callback


Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        callback=_exchange_watcher(1),
        help="Show every exchange on stderr, as curl -v does: request line, headers "
        "(credentials redacted), body; status line, headers, body (cut at 64 KiB).",
    ),
]
SyncVerbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        callback=_exchange_watcher(2),
        help="-v: each step and every retry with its delay; -vv: also every exchange, as "
        "curl -v shows it (credentials redacted, bodies cut at 64 KiB).",
    ),
]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only the final one-line summary (and errors)."),
]


def check_verbosity(verbose: int, quiet: bool) -> None:
    """-v and -q contradict each other: a usage error."""
    if verbose and quiet:
        raise InputError("--verbose and --quiet cannot be used together")


AsCurl = Annotated[
    bool,
    typer.Option(
        "--as-curl",
        help="With --dry-run: print each request as a runnable curl command, credentials "
        "as $ENV_VAR references (never their values).",
    ),
]


def check_as_curl(as_curl: bool, dry_run: bool) -> None:
    """--as-curl only shapes a dry run."""
    if as_curl and not dry_run:
        raise InputError("--as-curl goes with --dry-run (it prints requests instead of sending)")


def set_user_agent(value: str | None) -> str | None:
    """Make ``value`` (or, for None, ``cohortctl/<version>``) the User-Agent of every request."""
    # Called for every command that sends (given or not): each run starts from the default.
    if value is not None:
        if not value.strip() or any(c in value for c in "\r\n\0"):
            raise typer.BadParameter("give a non-empty one-line User-Agent")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise typer.BadParameter("a User-Agent must be latin-1 text") from None
    http.configure(user_agent=value if value is not None else http.USER_AGENT)
    return value


def _set_ca_cert(value: Path | None) -> Path | None:
    if value is not None:
        try:
            http.settings.ssl_context(str(value))
        except (OSError, ssl.SSLError) as exc:
            raise typer.BadParameter(f"cannot load CA certificates from {value}: {exc}") from None
    http.configure(ca_cert=str(value) if value is not None else None)
    return value


UserAgent = Annotated[
    str | None,
    typer.Option(
        "--user-agent",
        help=f"User-Agent to send instead of {http.USER_AGENT}.",
        callback=set_user_agent,
        show_default=False,
        metavar="TEXT",
    ),
]
CaCert = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert",
        help="Trust the CA certificates in this PEM file (default: SSL_CERT_FILE, else the "
        "system store).",
        callback=_set_ca_cert,
        show_default=False,
        dir_okay=False,
        metavar="FILE",
    ),
]

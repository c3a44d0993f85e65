"""``cohortctl serve``: run the embedded servers in the foreground."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from cohortctl.cli.bundles import with_bundles
from cohortctl.cli.options import option
from cohortctl.cli.render import err
from cohortctl.config import is_loopback_host
from cohortctl.errors import CohortctlError, ConfigError, InputError

if TYPE_CHECKING:
    from aiohttp import web

HostOption = Annotated[
    str, typer.Option("--host", help="Interface to bind; anything but loopback warns.")
]
PortOption = Annotated[
    int, typer.Option("--port", min=0, max=65535, help="Port to bind; 0 picks a free one.")
]

ServeQuiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Do not log each request on stderr (time, method, path, status, ms, and why a "
        "request was rejected).",
    ),
]


app = typer.Typer(
    help="Run an embedded server on 127.0.0.1: the fake Amplitude API or a partner receiver.",
    no_args_is_help=True,
)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@dataclasses.dataclass(frozen=True)
class Listening:
    """Where an embedded server listens and whether it logs each request: ``--host``,
    ``--port``, ``--quiet`` (the options every ``serve`` command starts with)."""

    host: HostOption = "127.0.0.1"
    port: PortOption = 0
    quiet: ServeQuiet = False

    def warn_if_exposed(self, consequence: str) -> None:
        """Unless the host is loopback, warn that anyone who can reach it can ``consequence``."""
        if not is_loopback_host(self.host):
            err.print(
                f"[yellow]warning:[/] listening on {escape(self.host)}: anyone who can reach it "
                f"can {consequence}"
            )

    def serve(self, app: web.Application, describe: Callable[[str], str]) -> None:
        """Serve ``app`` until Ctrl-C or SIGTERM (both raise KeyboardInterrupt: exit 130).

        Once listening, prints ``describe(url)`` and how to stop on stderr, then the URL alone
        on stdout. A port that cannot be bound is a :class:`CohortctlError`.
        """
        from cohortctl.cli import serve_log
        from cohortctl.servers.runner import serve_forever

        if not self.quiet:
            serve_log.install(app)
        undo_logging = serve_log.quiet_tracebacks()

        def ready(url: str) -> None:
            err.print(describe(url), markup=False)
            err.print("press Ctrl-C to stop")
            sys.stdout.write(url + "\n")
            sys.stdout.flush()

        host, port = self.host, self.port
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve_forever(app, host=host, port=port, on_ready=ready)
        except OSError as exc:
            reason = exc.strerror or exc
            raise CohortctlError(f"cannot listen on {host}:{port}: {reason}") from None
        finally:
            undo_logging()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _credentials(api_key: str | None, secret_key: str | None) -> tuple[str, str]:
    """The key pair the fake accepts; both are required so none is ever made up and printed."""
    missing = [
        name
        for name, value in (
            ("--api-key / AMPLITUDE_API_KEY", api_key),
            ("--secret-key / AMPLITUDE_SECRET_KEY", secret_key),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"the fake needs the key pair its clients will use: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set",
            hint="any values will do, e.g. export AMPLITUDE_API_KEY=local-key "
            "AMPLITUDE_SECRET_KEY=local-secret (cohortctl reads the same variables)",
        )
    assert api_key is not None and secret_key is not None
    return api_key, secret_key


@dataclasses.dataclass(frozen=True)
class FakeRules:
    """What the fake allows beyond the key pair: ``--app-id``, ``--export-polls``,
    ``--export-redirect``, ``--max-concurrent`` (named as :class:`FakeSettings` names them)."""

    app_id: Annotated[
        int | None,
        option(
            "--app-id", min=1, help="Only accept uploads naming this project id (default: any)."
        ),
    ] = None
    export_polls: Annotated[
        int,
        option(
            "--export-polls",
            min=0,
            help="Status polls answering JOB INPROGRESS before COMPLETED.",
            show_default=True,
        ),
    ] = 1
    export_redirect: Annotated[
        bool,
        option(
            "--export-redirect",
            help="Answer export file requests with a 302 to a one-minute signed URL.",
        ),
    ] = False
    max_concurrent: Annotated[
        int,
        option(
            "--max-concurrent",
            min=1,
            help="Requests in flight before the next answers 429.",
            show_default=True,
        ),
    ] = 5


@app.command("amplitude")
@with_bundles
def amplitude(
    *,
    listening: Listening,
    db: Annotated[
        Path | None,
        option(
            "--db",
            help="SQLite file to keep cohorts in across restarts (default: in memory).",
            dir_okay=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        option(
            "--api-key",
            envvar="AMPLITUDE_API_KEY",
            help="API key clients must send (prefer the env var: flags show up in ps).",
        ),
    ] = None,
    secret_key: Annotated[
        str | None,
        option(
            "--secret-key",
            envvar="AMPLITUDE_SECRET_KEY",
            help="Secret key clients must send (prefer the env var: flags show up in ps).",
        ),
    ] = None,
    rules: FakeRules,
    users: Annotated[
        Path | None,
        option(
            "--users",
            help="JSON Lines of users the fake knows besides its cohorts' members: "
            '{"user_id", "amplitude_id", "user_properties"} per line (user search, props=1).',
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Run a fake of Amplitude's Behavioral Cohorts API, strict like the real one.

    Prints the base URL on stdout (and nothing else), diagnostics on stderr, and serves until
    Ctrl-C. Clients authenticate with HTTP Basic: the api key and secret key taken from
    --api-key/--secret-key or AMPLITUDE_API_KEY/AMPLITUDE_SECRET_KEY (both required, any
    values; the same variables cohortctl's client reads), never printed.

    Start it on a fixed port in the background (cohortctl serve amplitude --port 8600 &),
    then point cohortctl at it with --base-url http://127.0.0.1:8600 (or
    AMPLITUDE_BASE_URL). Each request is logged on stderr; --quiet leaves that out.
    """
    from cohortctl.servers.amplitude.app import STORE_KEY, FakeSettings, create_app
    from cohortctl.servers.amplitude.users import add_users, read_users

    key, secret = _credentials(api_key, secret_key)
    known = read_users(users) if users is not None else []
    db_shown = str(db) if db is not None else ":memory:"
    if db is not None and not db.parent.exists():
        raise InputError(f"--db {db}: directory {db.parent} does not exist")
    try:
        fake = create_app(
            FakeSettings(api_key=key, secret_key=secret, db=db_shown, **dataclasses.asdict(rules))
        )
    except (sqlite3.Error, RuntimeError) as exc:
        raise InputError(f"--db {db_shown}: cannot use it as the fake's database: {exc}") from None
    add_users(fake[STORE_KEY], known)

    listening.warn_if_exposed("call this fake over plain http")

    listening.serve(fake, lambda url: f"fake Amplitude API listening on {url} (db: {db_shown})")


# `serve partner` lives in its own module, which imports the options above and joins itself
# to this group; imported last for that side effect.
from cohortctl.cli import serve_partner  # noqa: E402, F401

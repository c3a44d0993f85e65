"""``cohortctl wait``: block until an endpoint answers, for CI start-up ordering."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer

from cohortctl.cli import destination_options as dest
from cohortctl.cli.options import CaCert, Output, Quiet, UserAgent, Verbose, check_verbosity
from cohortctl.cli.render import OutputFormat, err, print_json
from cohortctl.config import Config
from cohortctl.durations import format_duration, json_seconds, parse_duration
from cohortctl.errors import CheckFailed, ConfigError
from cohortctl.http.waiting import wait_for

# How the command pauses and reads the time: the seams tests replace to wait in virtual time.
sleep: Callable[[float], None] = time.sleep
clock: Callable[[], float] = time.monotonic


def wait(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Endpoint to poll (default: the --destination's url, else partner_url from "
            "config/env).",
        ),
    ] = None,
    destination_name: dest.DestinationName = None,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Give up after this long: 60s, 2m, 1h.")
    ] = "60s",
    user_agent: UserAgent = None,
    ca_cert: CaCert = None,
    interval: Annotated[
        str, typer.Option("--interval", help="First pause between attempts (doubles, max 2s).")
    ] = "250ms",
    output: Output = OutputFormat.table,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Exit 0 as soon as URL answers at all (any HTTP status), 1 if it never does in time.

    Use it in CI to start a service in the background and check it without sleeps:
    `cohortctl serve partner --port 8080 & cohortctl wait --url http://127.0.0.1:8080`.
    """
    check_verbosity(verbose, quiet)
    file = dest.load_destination(destination_name)
    target = url or (file.url if file is not None else None) or Config.load().get("partner_url")
    if not target:
        raise ConfigError("no URL to wait for: pass --url or set COHORTCTL_PARTNER_URL")
    result = wait_for(
        target,
        timeout=parse_duration(timeout, option="--timeout"),
        interval=parse_duration(interval, option="--interval"),
        sleep=lambda seconds: sleep(seconds),
        clock=lambda: clock(),
    )
    if output is OutputFormat.json:
        print_json(
            {
                "url": target,
                "ok": result.answered,
                "status": result.status,
                "attempts": result.attempts,
                "waited_s": json_seconds(result.waited_s),
                "error": result.last_error,
            }
        )
    elif result.answered:
        err.print(
            f"{target} answered {result.status} after {format_duration(result.waited_s)} "
            f"({result.attempts} attempt{'s' if result.attempts != 1 else ''})"
        )
    if not result.answered:
        raise CheckFailed(
            f"{target} did not answer within {timeout} "
            f"({result.attempts} attempts, last: {result.last_error})"
        )

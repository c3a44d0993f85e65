"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cohortctl.durations import parse_duration
from cohortctl.errors import InputError
from cohortctl.render import OutputFormat

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
        "--output", "-o", help="table for people, json for machines.", case_sensitive=False
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

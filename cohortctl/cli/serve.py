"""``cohortctl serve``: run the embedded servers in the foreground."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Run an embedded server on 127.0.0.1: the fake Amplitude API or a partner receiver.",
    no_args_is_help=True,
)

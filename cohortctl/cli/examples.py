"""The Examples block that ends every command's help, kept in one place.

Each line is one command exactly as a user would type it (``&`` at the end to start a server
in the background). An example works offline: the block's heading names the embedded server
and the environment it runs against (:data:`SETUPS`). ``tests/test_cli_help.py`` parses every
example against its command, and ``tests/test_cli_examples.py`` runs every one of them
against those servers, so an example that stops working fails CI. A command without examples
here fails those tests too: add its lines when adding a command.
"""

from __future__ import annotations

import shutil

import click

EXAMPLES: dict[str, tuple[str, ...]] = {
    "upload": (
        "cohortctl upload ids.csv --name Churn --app-id 153957 --owner me@x.com",
        "cohortctl upload ids.csv --name Churn --app-id 1 --owner me@x.com --dry-run",
        "cohortctl upload ids.csv --name Churn --app-id 1 --owner me@x.com -v",
    ),
    "membership add": (
        "cohortctl membership add ids.csv --cohort-id 1a2bc3d",
        "cohortctl membership add ids.csv --cohort-id 1a2bc3d --dry-run",
    ),
    "membership remove": ("cohortctl membership remove ids.csv --cohort-id 1a2bc3d -v",),
    "cohorts list": (
        "cohortctl cohorts list",
        "cohortctl cohorts list --include-sync-info -o json",
    ),
    "cohorts show": ("cohortctl cohorts show 1a2bc3d",),
    "cohorts download": (
        "cohortctl cohorts download 1a2bc3d --out members.csv",
        "cohortctl cohorts download 1a2bc3d --out ids.txt --ids-only",
    ),
    "cohorts reconcile": (
        "cohortctl cohorts reconcile ids.csv --cohort-id 1a2bc3d --dry-run",
        "cohortctl cohorts reconcile ids.csv --cohort-id 1a2bc3d",
    ),
    "mock list-create": (
        "cohortctl mock list-create --url http://127.0.0.1:8080 -v",
        "cohortctl mock list-create --url http://127.0.0.1:8080 --dry-run --as-curl",
    ),
    "mock list-add": (
        "cohortctl mock list-add --url http://127.0.0.1:8080 --list-id 1 --id u1",
        "cohortctl mock list-add --url http://127.0.0.1:8080 --list-id 1 --dry-run",
    ),
    "mock list-remove": ("cohortctl mock list-remove --url http://127.0.0.1:8080 --list-id 1 -v",),
    "mock identify": (
        "cohortctl mock identify --url http://127.0.0.1:8080 --id u1 --not-member",
        "cohortctl mock identify --url http://127.0.0.1:8080 --id u1 --dry-run",
    ),
    "mock identify-batch": (
        "cohortctl mock identify-batch --url http://127.0.0.1:8080 --ids ids.csv",
    ),
    "mock flow": (
        "cohortctl mock flow --mode both --url http://127.0.0.1:8080",
        "cohortctl mock flow --mode list --url http://127.0.0.1:8080 --dry-run",
    ),
    "mock webhook": (
        "cohortctl mock webhook --url http://127.0.0.1:8080/webhook --id u1",
        "cohortctl mock webhook --url http://127.0.0.1:8080/webhook --dry-run",
    ),
    "sync": (
        "cohortctl sync ids.csv --cohort-name Churn --cohort-id 7y6y3ij",
        "cohortctl sync ids.csv --cohort-name Churn --cohort-id c1 --dry-run",
        "cohortctl sync ids.csv --cohort-name Churn --cohort-id c1 -vv",
    ),
    "state list": ("cohortctl state list",),
    "state show": ("cohortctl state show --url http://127.0.0.1:8080 --cohort-id 7y6y3ij",),
    "state export": ("cohortctl state export --url http://127.0.0.1:8080 --cohort-id c1 -o m.txt",),
    "state forget": ("cohortctl state forget --url http://127.0.0.1:8080 --cohort-id 7y6y3ij",),
    "state check": ("cohortctl state check",),
    "check": (
        "cohortctl check --url http://127.0.0.1:8080 --mode both",
        "cohortctl check --url http://127.0.0.1:8080 --junit check.xml -q",
    ),
    "destination show": ("cohortctl destination show segment",),
    "destination validate": ("cohortctl destination validate segment",),
    "destination init": ("cohortctl destination init -",),
    "destination list": ("cohortctl destination list",),
    "replay": ("cohortctl replay recording.har --url http://127.0.0.1:8080",),
    "wait": (
        "cohortctl wait --url http://127.0.0.1:8080 --timeout 60s",
        "cohortctl wait --url http://127.0.0.1:8080/_cohortctl/health -q",
    ),
    "serve amplitude": (
        "cohortctl serve amplitude --port 8600 &",
        "cohortctl serve amplitude --port 8600 --quiet &",
    ),
    "serve partner": (
        "cohortctl serve partner --port 8080 &",
        "cohortctl serve partner --port 8080 --rate-limit 50/s --fail-rate 0.1 &",
    ),
    "config show": ("cohortctl config show", "cohortctl config show -o json"),
    "demo": ("cohortctl demo", "cohortctl demo --side partner"),
}


# What the examples of a command group run against, offline (the heading of the block).
AMPLITUDE = "amplitude"
PARTNER = "partner"
SETUPS = {
    AMPLITUDE: "offline, after cohortctl serve amplitude --port 8600 & with "
    "AMPLITUDE_BASE_URL=http://127.0.0.1:8600 and any AMPLITUDE_API_KEY and "
    "AMPLITUDE_SECRET_KEY exported",
    PARTNER: "offline, after cohortctl serve partner --port 8080 & with any "
    "COHORTCTL_PARTNER_API_KEY and COHORTCTL_PARTNER_URL=http://127.0.0.1:8080 exported",
}
SETUP_OF = {
    "upload": AMPLITUDE,
    "membership": AMPLITUDE,
    "cohorts": AMPLITUDE,
    "mock": PARTNER,
    "sync": PARTNER,
    "state": PARTNER,
    "check": PARTNER,
    "replay": PARTNER,
    "wait": PARTNER,
}


def setup_of(path: str) -> str | None:
    """Which server the examples of ``cohortctl PATH`` run against (a :data:`SETUPS` key)."""
    return SETUP_OF.get(path.split()[0])


def examples_text(path: str, *, plain: bool = False) -> str | None:
    """The Examples block of ``cohortctl PATH`` as help epilog text (``None``: none known);
    ``plain`` for click's formatter, else for typer's rich one."""
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    setup = setup_of(path)
    heading = f"Examples ({SETUPS[setup]}):" if setup else "Examples:"
    if plain:  # "\b": click keeps the lines as they are
        return f"{heading}\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
    # typer's rich help joins the lines of a paragraph: one example per paragraph
    return f"{heading}\n\n" + "\n\n".join(lines)


RICH_HELP_MIN_COLUMNS = 100


def attach_examples(path: str, command: click.Command) -> None:
    """Set the Examples epilog on ``command`` and every sub-command under it; below
    :data:`RICH_HELP_MIN_COLUMNS` columns use click's plain help, which wraps every line
    whole (rich's option panels clip option names and long words there)."""
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                attach_examples(f"{path} {name}", sub)
        return
    plain = shutil.get_terminal_size().columns < RICH_HELP_MIN_COLUMNS
    text = examples_text(path, plain=plain)
    if text is not None and not command.epilog:
        command.epilog = text
    _short_choice_metavars(command)
    if plain:
        command.rich_markup_mode = None  # type: ignore[attr-defined]
        for param in command.params:
            _unescape_help(param)


def _unescape_help(param: click.Parameter) -> None:
    # typer escapes "[" for rich even when click formats the help: undo it there.
    original = param.get_help_record

    def get_help_record(ctx: click.Context) -> tuple[str, str] | None:
        record = original(ctx)
        if record is None:
            return None
        return record[0], record[1].replace("\\[", "[")

    param.get_help_record = get_help_record  # type: ignore[method-assign]


_LONGEST_METAVAR = 14


def _short_choice_metavars(command: click.Command) -> None:
    # A long "[a|b|c|d]" metavar is folded mid-word in an 80-column help table: name the
    # value instead (AUTH) and list the choices in the help text, where lines wrap.
    for param in command.params:
        if not isinstance(param, click.Option) or not isinstance(param.type, click.Choice):
            continue
        choices = [str(c) for c in param.type.choices]
        if len("|".join(choices)) + 2 <= _LONGEST_METAVAR or param.metavar:
            continue
        param.metavar = (param.name or "value").upper()
        param.help = f"{param.help or ''} One of: {', '.join(choices)}.".strip()

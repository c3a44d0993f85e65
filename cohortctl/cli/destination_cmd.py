"""``cohortctl destination``: show, validate, start and list destination files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cohortctl.cli.options import Output
from cohortctl.cli.render import OutputFormat, err, out, print_json, table
from cohortctl.errors import InputError
from cohortctl.partner import destination_files, templates
from cohortctl.partner.destination_files import BUILTIN_PAYLOADS, DestinationFile

app = typer.Typer(
    help=(
        "Destination files: a partner's calls, auth, item template, list id path and error "
        "classifications in one YAML file, as in Amplitude's Integration Portal. Give one to "
        "mock, check, sync or wait with --destination FILE|NAME."
    ),
    no_args_is_help=True,
)

STARTER = """\
# A cohortctl destination file: what a partner configures in Amplitude's Integration Portal.
# Use it with: cohortctl check --destination THIS_FILE (also mock, sync, wait).
# Flags override single values (--url, --auth, --list-id-path, --add-path...).
# No secrets here: the key comes from COHORTCTL_PARTNER_API_KEY, a config profile or --api-key.
name: Example CRM
mode: list                    # list | property
url: https://api.example.com/amplitude
auth: {type: basic}           # none | basic (key, optional secret) | bearer | header
                              # header: {type: header, header: X-Api-Key} sends the key there
headers: {X-Team: growth}     # extra headers; values may use custom $variables
batch_size: 1000              # users per request
# max_body_bytes: 512000      # split batches to stay under this size
# rate_limit: {requests: 12, seconds: 10}   # pace requests to the receiver's limit
success: [200, 201, 202, 204] # default: any 2xx
list_id_path: listId          # where the create answer holds the id; none: it holds none
items: '"$user_id"'           # what each user becomes in $items ($user_id, $member)
variables: {}                 # custom fields, e.g. {region: eu} used as $region;
                              # null: must be given with --var NAME=VALUE
# Pre-defined: $items $listId $amplitude_cohort_name (slugified) $cohort_name (as is)
# $amplitude_cohort_id $user_id $member. Write $$ for a literal $.
calls:
  list-create:
    method: POST
    path: /lists
    payload: '{"name": "[Amplitude] $cohort_name: $amplitude_cohort_id"}'
  list-add:    {method: POST, path: '/lists/$listId/add', payload: '{"userIds": $items}'}
  list-remove: {method: POST, path: '/lists/$listId/remove', payload: '{"userIds": $items}'}
  # property mode: identify: {...} and identify-batch (or batch): {...}
errors:                       # the Portal's error classifications
  - {status: 401, reason: Bad API key, message: Check the key under Settings > API}
  - {status: 400, sub_code: E_SIZE, reason: Batch too large}
# rejects: what `check` expects for the calls a receiver must refuse (null: skip the case)
# rejects: {wrong_key: 401, no_credentials: 401, malformed: 400, missing_field: 400,
#           unknown_list: 404}
"""

Target = Annotated[
    str, typer.Argument(help="A destination file, or a built-in name (destination list).")
]


def _calls_rows(file: DestinationFile) -> list[tuple[str, str, str, str]]:
    base = file.url or "$url"
    rows = []
    for call, spec in file.calls.items():
        if "://" in spec.path:
            url = spec.path
        elif not spec.path.strip():
            url = base
        else:
            url = base.rstrip("/") + ("" if spec.path.startswith("/") else "/") + spec.path
        payload = (
            spec.payload if spec.payload is not None else "(built-in) " + BUILTIN_PAYLOADS[call]
        )
        rows.append((call, spec.method, url, payload))
    return rows


@app.command("show")
def show(target: Target, output: Output = OutputFormat.table) -> None:
    """Print the resolved calls and the variables table (declared, used, pre-defined).

    Exit 2 when a variable is used but not declared.
    """
    file = destination_files.resolve(target, strict=False)
    if file.mode == "webhook":
        _show_webhook(file, output)
        return
    if output is OutputFormat.json:
        print_json({**file.to_dict(), "ok": not file.undeclared()})
    else:
        auth = (file.auth.value if file.auth else "basic") + (
            f" ({file.auth_header}: KEY)" if file.auth_header else ""
        )
        facts = [
            f"{file.name} · {file.source} · mode {file.mode} · auth {auth}",
            f"list id path: {file.list_id_path or 'listId'} · items: "
            f"{file.items or templates.DEFAULT_ITEMS}",
            f"batch size: {file.batch_size or 1000}"
            + (f" · max body: {file.max_body_bytes:,} bytes" if file.max_body_bytes else "")
            + f" · success: {', '.join(map(str, file.success)) or 'any 2xx'}",
        ]
        for line in facts:
            out.print(escape(line))
        out.print(
            table(
                ["call", "method", "url", "payload"],
                [tuple(escape(c) for c in row) for row in _calls_rows(file)],
                title="calls",
            )
        )
        rows = [
            (
                f"${row['name']}",
                row["kind"],
                str(row["value"] if row["value"] is not None else "-"),
                ", ".join(row["used"]) or "-",
            )
            for row in file.variables_table()
        ]
        out.print(
            table(
                ["variable", "kind", "value", "used in"],
                [tuple(escape(c) for c in r) for r in rows],
                title="variables",
            )
        )
        if file.errors:
            out.print(
                table(
                    ["status", "sub code", "reason", "message"],
                    [
                        (
                            str(e.status),
                            e.sub_code or "-",
                            escape(e.reason),
                            escape(e.message or ""),
                        )
                        for e in file.errors
                    ],
                    title="error classifications",
                )
            )
    file.check_variables()


def _show_webhook(file: DestinationFile, output: OutputFormat) -> None:
    """A ``mode: webhook`` file: URL, headers (values hidden), batch size, the template."""
    from cohortctl.partner.webhooks.payload import describe_file

    view = describe_file(file)
    if output is OutputFormat.json:
        print_json(view)
        return
    url = view["url"] or "(none: give --url)"
    out.print(escape(f"{file.name} · {file.source} · mode webhook · auth: its headers only"))
    out.print(escape(f"url: {url} · batch size: {view['batch_size']}"))
    out.print(
        table(
            ["header", "value"],
            [(escape(k), escape(v)) for k, v in view["headers"].items()],
            title="headers",
        )
    )
    if view["payload"] is None:
        out.print("payload: the default body (spec part C; no calls.webhook.payload)")
    else:
        out.print("payload: FreeMarker template (calls.webhook.payload)")
        out.print(escape(view["payload"]), highlight=False)


@app.command("validate")
def validate(target: Target) -> None:
    """Check a destination file; exit 2 with one line naming the file and field if bad."""
    file = destination_files.resolve(target)
    err.print(escape(f"{file.source}: ok ({file.name}, mode {file.mode}, {len(file.calls)} calls)"))


@app.command("init")
def init(
    path: Annotated[
        Path, typer.Argument(help="Where to write the starter file.", dir_okay=False)
    ] = Path("destination.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter destination file (``-`` prints it)."""
    if str(path) == "-":
        typer.echo(STARTER, nl=False)
        return
    if path.exists() and not force:
        raise InputError(f"{path}: already exists (use --force to overwrite)")
    try:
        path.write_text(STARTER, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    err.print(escape(f"wrote {path}; check it with: cohortctl destination validate {path}"))


@app.command("list")
def list_builtins(output: Output = OutputFormat.table) -> None:
    """Name the built-in profiles (use them as --destination NAME)."""
    found = [destination_files.resolve(name) for name in destination_files.builtin_names()]
    if output is OutputFormat.json:
        listed = [
            {"name": f.name, "mode": f.mode, "description": f.description, "url": f.url}
            for f in found
        ]
        print_json({"ok": True, "destinations": listed})
        return
    out.print(
        table(
            ["name", "mode", "description"],
            [(f.name, f.mode, escape(f.description or "")) for f in found],
        )
    )

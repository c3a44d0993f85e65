"""``cohortctl membership``: add ids to, or remove ids from, an existing cohort."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from cohortctl.cli.customer_options import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_TEXT,
    BaseUrl,
    Column,
    DryRun,
    GroupType,
    IdTypeOption,
    Region,
    Retries,
    StrictIds,
    Timeout,
    load_ids,
    load_target,
    open_client,
    print_dry_run,
    print_run_result,
    progress_reporter,
)
from cohortctl.cli.options import (
    AllowInsecureHttp,
    AsCurl,
    ConfigFile,
    Har,
    Output,
    Profile,
    Quiet,
    Verbose,
    check_as_curl,
    check_verbosity,
)
from cohortctl.customer.uploading import execute, plan_membership
from cohortctl.ids import IdType
from cohortctl.render import OutputFormat

app = typer.Typer(
    help="Add ids to or remove ids from an existing cohort, without replacing it.",
    no_args_is_help=True,
)

FileArgument = Annotated[
    str,
    typer.Argument(
        help="ID file: one id per line, or CSV/TSV (see --column); .gz ok; - for stdin.",
        show_default=False,
    ),
]
CohortId = Annotated[
    str, typer.Option("--cohort-id", help="The cohort to change.", show_default=False)
]


def _membership_command(operation: str, doc: str) -> Callable[..., None]:
    """One command per operation: the same options, a different ``operation``."""

    def command(
        file: FileArgument,
        cohort_id: CohortId,
        id_type: IdTypeOption = IdType.user,
        strict_ids: StrictIds = False,
        group_type: GroupType = None,
        column: Column = None,
        dry_run: DryRun = False,
        as_curl: AsCurl = False,
        output: Output = OutputFormat.table,
        verbose: Verbose = 0,
        quiet: Quiet = False,
        region: Region = None,
        base_url: BaseUrl = None,
        har: Har = None,
        profile: Profile = None,
        config: ConfigFile = None,
        allow_insecure_http: AllowInsecureHttp = False,
        timeout: Timeout = DEFAULT_TIMEOUT_TEXT,
        retries: Retries = DEFAULT_RETRIES,
    ) -> None:
        check_verbosity(verbose, quiet)
        check_as_curl(as_curl, dry_run)
        cfg, url = load_target(
            profile,
            config,
            region=region,
            base_url=base_url,
            allow_insecure_http=allow_insecure_http,
        )
        ids = load_ids(file, column=column, id_type=id_type)
        plan = plan_membership(
            ids.ids,
            cohort_id=cohort_id,
            operation=operation,
            id_type=id_type,
            strict_ids=strict_ids,
            group_type=group_type,
            stats=ids.stats,
        )
        if dry_run:
            print_dry_run(plan, url, ids, output, as_curl=as_curl)
            return
        with (
            open_client(cfg, url, timeout=timeout, retries=retries, har=har) as client,
            progress_reporter(f"membership {operation}", len(ids.ids)) as on_progress,
            open_client(cfg, url, timeout=timeout, retries=retries) as client,
            progress_reporter(f"membership {operation}", len(ids.ids), quiet=quiet) as on_progress,
        ):
            result = execute(client, plan, on_progress=on_progress)
        print_run_result(result, ids, output, quiet=quiet)

    command.__doc__ = doc
    command.__name__ = operation.lower()
    return command


app.command("add")(
    _membership_command(
        "ADD", "Add the ids of FILE to cohort --cohort-id (membership ADD, 100,000 per request)."
    )
)
app.command("remove")(
    _membership_command(
        "REMOVE",
        "Remove the ids of FILE from cohort --cohort-id (membership REMOVE, 100,000 per request).",
    )
)

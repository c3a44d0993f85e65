"""``cohortctl membership``: add ids to, or remove ids from, an existing cohort."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from cohortctl.cli.bundles import OutputOptions, with_bundles
from cohortctl.cli.customer_options import (
    AmplitudeOptions,
    IdFile,
    IdTypeOption,
    RequestOptions,
    load_ids,
    print_dry_run,
    print_run_result,
    progress_reporter,
)
from cohortctl.cli.options import option
from cohortctl.customer.uploading import execute, plan_membership
from cohortctl.ids import IdType

app = typer.Typer(
    help="Add ids to or remove ids from an existing cohort, without replacing it.",
    no_args_is_help=True,
)

CohortId = Annotated[str, option("--cohort-id", help="The cohort to change.")]


def _membership_command(operation: str, doc: str) -> Callable[..., None]:
    """One command per operation: the same options, a different ``operation``."""

    def command(
        file: IdFile,
        cohort_id: CohortId,
        id_type: IdTypeOption = IdType.user,
        *,
        requests: RequestOptions,
        view: OutputOptions,
        amplitude: AmplitudeOptions,
    ) -> None:
        cfg, url = amplitude.target()
        ids = load_ids(file, column=requests.column, id_type=id_type)
        plan = plan_membership(
            ids.ids,
            cohort_id=cohort_id,
            operation=operation,
            id_type=id_type,
            strict_ids=requests.strict_ids,
            group_type=requests.group_type,
            stats=ids.stats,
        )
        if requests.dry_run:
            print_dry_run(plan, url, ids, view.output, as_curl=requests.as_curl)
            return
        with (
            amplitude.client(cfg, url) as client,
            progress_reporter(
                f"membership {operation}", len(ids.ids), quiet=view.quiet
            ) as on_progress,
        ):
            result = execute(client, plan, on_progress=on_progress)
        print_run_result(result, ids, view.output, quiet=view.quiet)

    command.__doc__ = doc
    command.__name__ = operation.lower()
    return with_bundles(command)


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

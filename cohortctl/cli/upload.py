"""``cohortctl upload``: an ID file into an Amplitude cohort, whatever its size."""

from __future__ import annotations

from typing import Annotated

import typer

from cohortctl.cli.bundles import OutputOptions, with_bundles
from cohortctl.cli.customer_options import (
    AmplitudeOptions,
    IdFile,
    IdTypeOption,
    RequestOptions,
    app_id_of,
    load_ids,
    print_dry_run,
    print_run_result,
    progress_reporter,
)
from cohortctl.cli.options import option
from cohortctl.customer.uploading import UploadSpec, execute, plan_upload
from cohortctl.ids import IdType


@with_bundles
def upload(
    file: IdFile,
    name: Annotated[str, option("--name", help="Cohort name.")],
    app_id: Annotated[
        int | None,
        option("--app-id", help="Amplitude project id, an integer (env AMPLITUDE_APP_ID)."),
    ] = None,
    owner: Annotated[
        str | None,
        option("--owner", help="Login email of the cohort owner (env AMPLITUDE_OWNER)."),
    ] = None,
    id_type: IdTypeOption = IdType.user,
    published: Annotated[
        bool,
        typer.Option("--published/--hidden", help="Discoverable in Amplitude, or hidden."),
    ] = True,
    existing_cohort_id: Annotated[
        str | None,
        option(
            "--existing-cohort-id",
            help="Replace the contents of this cohort instead of creating a new one.",
        ),
    ] = None,
    validate_only: Annotated[
        bool,
        typer.Option(
            "--validate-only",
            help="Ask Amplitude to validate the ids and save nothing (skip_save). Over "
            "100,000 ids every chunk is sent as its own validate-only upload.",
        ),
    ] = False,
    *,
    requests: RequestOptions,
    view: OutputOptions,
    amplitude: AmplitudeOptions,
) -> None:
    """Upload an ID file into an Amplitude cohort (new, or replacing --existing-cohort-id).

    Up to 100,000 ids go in one upload; a larger file is uploaded as its first 100,000 ids
    and then added 100,000 at a time through the membership API, one request after the
    other. More than 2,000,000 ids (Amplitude's cohort limit) are refused before anything
    is sent. Credentials: AMPLITUDE_API_KEY / AMPLITUDE_SECRET_KEY or a config profile.
    """
    cfg, url = amplitude.target()
    spec = UploadSpec(
        name=name,
        app_id=app_id_of(cfg, app_id),
        owner=str(cfg.require("owner", owner, flag_name="--owner")),
        published=published,
        existing_cohort_id=existing_cohort_id,
        strict_ids=requests.strict_ids,
        validate_only=validate_only,
        group_type=requests.group_type,
    )
    ids = load_ids(file, column=requests.column, id_type=id_type)
    plan = plan_upload(ids.ids, spec, id_type=id_type, stats=ids.stats)
    if requests.dry_run:
        print_dry_run(plan, url, ids, view.output, as_curl=requests.as_curl)
        return
    with (
        amplitude.client(cfg, url) as client,
        progress_reporter("upload", len(ids.ids), quiet=view.quiet) as on_progress,
    ):
        result = execute(client, plan, on_progress=on_progress)
    print_run_result(result, ids, view.output, quiet=view.quiet)

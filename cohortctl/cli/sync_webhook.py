"""``cohortctl sync --mode webhook``: the Cohort Webhook endpoint of a sync (options parsed in
sync)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cohortctl.cli import destination_options as dest
from cohortctl.cli import webhook_options as wh
from cohortctl.config import Config
from cohortctl.partner.destination_files import DestinationFile
from cohortctl.sync.job import SyncJob
from cohortctl.sync.properties import PropertySelection
from cohortctl.sync.webhook import WebhookSync


def target(
    cfg: Config,
    job: SyncJob,
    options: dest.DestinationOptions,
    *,
    user_agent: str | None,
    payload: Path | None,
    file: DestinationFile | None,
    selection: PropertySelection,
    resend_changed: bool,
) -> WebhookSync:
    """The endpoint and properties of a webhook sync: the URL and ``--path`` after the plan,
    the headers, deadline and settings of the destination options (partner credentials given
    as flags are an input error)."""
    endpoint = wh.webhook_destination(
        cfg,
        replace(options, url=job.url),
        path=job.path,
        user_agent=user_agent,
        payload=payload,
        file=file,
    )
    return WebhookSync(endpoint, selection, resend_changed)

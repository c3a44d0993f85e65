"""``cohortctl sync --mode webhook``: the Cohort Webhook endpoint of a sync (options parsed in
sync)."""

from __future__ import annotations

from pathlib import Path

from cohortctl.cli import webhook_options as wh
from cohortctl.config import Config
from cohortctl.partner.destination_files import DestinationFile
from cohortctl.sync.job import SyncJob
from cohortctl.sync.properties import PropertySelection
from cohortctl.sync.webhook import WebhookSync


def target(
    cfg: Config,
    job: SyncJob,
    *,
    headers: list[str] | None,
    user_agent: str | None,
    timeout: float,
    payload: Path | None,
    allow_insecure_http: bool,
    file: DestinationFile | None,
    selection: PropertySelection,
    resend_changed: bool,
) -> WebhookSync:
    """The endpoint and properties of a webhook sync, from the options and the plan."""
    return WebhookSync(
        wh.webhook_destination(
            cfg,
            url=job.url,
            path=job.path,
            headers=headers,
            user_agent=user_agent,
            timeout=timeout,
            payload=payload,
            allow_insecure_http=allow_insecure_http,
            file=file,
        ),
        selection,
        resend_changed,
    )

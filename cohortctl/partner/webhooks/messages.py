"""Webhook messages as requests: plan the batches of one direction; each is sent once by
:func:`cohortctl.http.once.send_once`.

Used by ``mock webhook``, ``mock flow --mode webhook`` and ``check --mode webhook``; ``sync
--mode webhook`` builds the same bodies on its hot path (:mod:`cohortctl.sync.webhook`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from cohortctl.http.har import redact_url
from cohortctl.http.outcomes import describe_status
from cohortctl.http.redact import Redactor
from cohortctl.ids import chunked
from cohortctl.partner.webhooks.payload import (
    CALL,
    User,
    WebhookDestination,
    WebhookRun,
    webhook_body,
)

# A webhook has no API key: its only auth is the custom headers.
WEBHOOK_MEANINGS = {
    401: "unauthorized: the endpoint wants a header this message lacks (--header)",
    403: "forbidden: the endpoint refused a header's value (--header)",
}


@dataclass(frozen=True)
class WebhookRequest:
    """One message, exactly as it goes on the wire (headers may hold secrets)."""

    url: str
    headers: dict[str, str] = field(repr=False)
    content: bytes
    body: Any
    users: int
    in_cohort: bool
    message_id: str
    label: str = CALL

    @property
    def call(self) -> str:
        """The row's call name (``webhook``, or a conformance case's label)."""
        return self.label

    @property
    def method(self) -> str:
        """Every webhook message is a POST."""
        return "POST"

    def row_extra(self) -> dict[str, Any]:
        """The facts its :class:`Outcome` row keeps: users, direction and ``message_id``."""
        return {"ids": self.users, "member": self.in_cohort, "message_id": self.message_id}

    def read_answer(
        self, destination: WebhookDestination, response: httpx.Response
    ) -> tuple[str, dict[str, Any]]:
        """What an answer means for a webhook (its only auth is headers); no other facts."""
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        return WEBHOOK_MEANINGS.get(status) or describe_status(status, retry_after), {}

    def shown(self, destination: WebhookDestination) -> dict[str, Any]:
        """The request as it may be printed: custom header values redacted."""
        return {
            "call": self.label,
            "method": "POST",
            "url": destination.scrub(redact_url(self.url)),
            "headers": destination.redacted_headers(self.headers),
            "body": json.loads(destination.scrub(json.dumps(self.body, ensure_ascii=False))),
            "ids": self.users,
            "message_id": self.message_id,
        }


def plan_messages(
    destination: WebhookDestination,
    cohort_name: str,
    cohort_id: str,
    users: Sequence[User],
    *,
    in_cohort: bool,
    batch_size: int,
    run: WebhookRun,
) -> list[WebhookRequest]:
    """The messages of one direction: batches of ``batch_size`` users numbered from 0."""
    headers = destination.request_headers()
    requests: list[WebhookRequest] = []
    for number, chunk in enumerate(chunked(users, batch_size)):
        mid = run.message_id(entering=in_cohort, batch=number)
        body = webhook_body(
            cohort_name,
            cohort_id,
            in_cohort=in_cohort,
            computed_time=run.computed_time,
            message_id=mid,
            users=chunk,
        )
        content, shown = destination.render(body)
        requests.append(
            WebhookRequest(destination.url, headers, content, shown, len(chunk), in_cohort, mid)
        )
    return requests


def users_of(ids: Sequence[str], properties: Mapping[str, Mapping[str, Any]]) -> list[User]:
    """``(user_id, properties)`` pairs for ``ids`` (None where a user has no properties)."""
    return [(uid, properties.get(uid) or None) for uid in ids]


def make_webhook_client(destination: WebhookDestination) -> httpx.Client:
    """An httpx client for webhook messages: the destination's timeout, no redirects, seen by
    the observers (``-v``) with every custom header value redacted."""
    from cohortctl.http.client import make_client

    return make_client(timeout=destination.timeout, redactor=Redactor(destination.secrets()))

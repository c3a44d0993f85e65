"""Webhook messages as requests: plan the batches of one direction, send one message once.

Used by ``mock webhook``, ``mock flow --mode webhook`` and ``check --mode webhook``; ``sync
--mode webhook`` builds the same bodies on its hot path (:mod:`cohortctl.sync.webhook`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from cohortctl.http.har import redact_url
from cohortctl.http.once import Clock, send_once
from cohortctl.http.outcomes import Outcome, describe_status
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


def send_message(
    client: httpx.Client,
    destination: WebhookDestination,
    request: WebhookRequest,
    *,
    expect: int | None = None,
    clock: Clock = time.perf_counter,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> Outcome:
    """Send one message once and describe the answer (``headers``/``content`` override)."""
    extra: dict[str, Any] = {
        "ids": request.users,
        "member": request.in_cohort,
        "message_id": request.message_id,
    }
    if headers is not None:
        request = replace(request, headers=dict(headers))
    if content is not None:
        request = replace(request, content=content)

    def meaning(response: httpx.Response) -> str:
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        return WEBHOOK_MEANINGS.get(status) or describe_status(status, retry_after)

    outcome, _ = send_once(
        client,
        destination,
        request,
        extra,
        expect=expect,
        is_success=lambda status: 200 <= status < 300,
        meaning=meaning,
        clock=clock,
    )
    return outcome


def make_webhook_client(destination: WebhookDestination) -> httpx.Client:
    """An httpx client for webhook messages: the destination's timeout, no redirects, seen by
    the observers (``-v``) with every custom header value redacted."""
    from cohortctl.http.client import make_client

    return make_client(timeout=destination.timeout, redactor=Redactor(destination.secrets()))

"""Webhook messages as requests: plan the batches of one direction, send one message once.

Used by ``mock webhook``, ``mock flow --mode webhook`` and ``check --mode webhook``; ``sync
--mode webhook`` builds the same bodies on its hot path (:mod:`cohortctl.sync.webhook`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from cohortctl.http.client import answer_excerpt, send_held
from cohortctl.http.har import redact_url
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

Clock = Callable[[], float]
BODY_KEEP = 2000
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
    shown_url = destination.scrub(redact_url(request.url))
    extra: dict[str, Any] = {
        "ids": request.users,
        "member": request.in_cohort,
        "message_id": request.message_id,
    }
    if expect is not None:
        extra["expected"] = expect
    started = clock()
    try:
        response = send_held(
            client,
            "POST",
            request.url,
            headers=dict(headers if headers is not None else request.headers),
            content=content if content is not None else request.content,
            timeout=destination.timeout,
        )
    except httpx.TransportError as exc:
        return Outcome.unanswered(
            exc,
            call=request.label,
            method="POST",
            url=shown_url,
            latency_ms=(clock() - started) * 1000,
            scrub=destination.scrub,
            extra=extra,
        )
    latency = (clock() - started) * 1000
    status = response.status_code
    passed = status == expect if expect is not None else 200 <= status < 300
    extra["passed"] = passed
    retry_after = response.headers.get("Retry-After")
    meaning = WEBHOOK_MEANINGS.get(status) or describe_status(status, retry_after)
    if expect is not None and not passed:
        meaning += f" (expected {expect})"
    return Outcome(
        call=request.label,
        method="POST",
        url=shown_url,
        status=status,
        meaning=meaning,
        latency_ms=round(latency, 1),
        body=answer_excerpt(response, destination.scrub, BODY_KEEP),
        retry_after=retry_after,
        extra=extra,
    )


def make_webhook_client(destination: WebhookDestination) -> httpx.Client:
    """An httpx client for webhook messages: the destination's timeout, no redirects, seen by
    the observers (``-v``) with every custom header value redacted."""
    from cohortctl.http.client import make_client

    return make_client(timeout=destination.timeout, redactor=Redactor(destination.secrets()))

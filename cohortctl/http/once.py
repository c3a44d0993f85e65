"""Send one request once, timed, and describe it as an :class:`Outcome` row.

The one timed send behind ``mock`` (list and property calls), ``check`` and webhook messages:
what came back (or why nothing did), its latency, the scrubbed answer excerpt and the row's
verdict against ``--expect``. Each caller names what an answer means.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from cohortctl.http.client import answer_excerpt, send_held
from cohortctl.http.har import redact_url
from cohortctl.http.outcomes import Outcome

Clock = Callable[[], float]
BODY_KEEP = 2000  # characters of each answer kept in an Outcome


class Sendable(Protocol):
    """A request exactly as it goes on the wire (headers may hold secrets)."""

    @property
    def call(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...


class Target(Protocol):
    """Where a request goes: its per-request deadline and how its secrets are hidden."""

    @property
    def timeout(self) -> float: ...

    def scrub(self, text: str) -> str: ...


def send_once(
    client: httpx.Client,
    target: Target,
    request: Sendable,
    extra: dict[str, Any],
    *,
    expect: int | None,
    is_success: Callable[[int], bool],
    meaning: Callable[[httpx.Response], str],
    clock: Clock = time.perf_counter,
) -> tuple[Outcome, httpx.Response | None]:
    """Send ``request`` once: its row and the held answer (None when nothing came back).

    ``extra`` starts the row's extra facts; ``expected`` and ``passed`` are added (``passed``:
    the ``expect`` status came back, else ``is_success``). ``meaning`` labels an answer.
    """
    shown_url = target.scrub(redact_url(request.url))
    if expect is not None:
        extra["expected"] = expect
    started = clock()
    try:
        response = send_held(
            client,
            request.method,
            request.url,
            headers=request.headers,
            content=request.content,
            timeout=target.timeout,
        )
    except httpx.TransportError as exc:
        failed = Outcome.unanswered(
            exc,
            call=request.call,
            method=request.method,
            url=shown_url,
            latency_ms=(clock() - started) * 1000,
            scrub=target.scrub,
            extra=extra,
        )
        return failed, None
    latency = (clock() - started) * 1000
    status = response.status_code
    passed = status == expect if expect is not None else is_success(status)
    extra["passed"] = passed
    shown = meaning(response)
    if expect is not None and not passed:
        shown += f" (expected {expect})"
    answered = Outcome(
        call=request.call,
        method=request.method,
        url=shown_url,
        status=status,
        meaning=shown,
        latency_ms=round(latency, 1),
        body=answer_excerpt(response, target.scrub, BODY_KEEP),
        retry_after=response.headers.get("Retry-After"),
        extra=extra,
    )
    return answered, response

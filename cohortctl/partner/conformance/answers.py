"""Judging the answers of a conformance run: what came back, in words and as a JSON record.

Shared by ``check`` and ``check-webhook``: a case says what it expected and what it got with
these, so every report describes an answer the same way.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

from cohortctl.durations import json_seconds
from cohortctl.http.outcomes import Outcome, describe_status
from cohortctl.http.text import body_excerpt

BODY_SHOWN = 200
ACCEPTED = "2xx (success)"


def usable_retry_after(value: str | None) -> bool:
    """True for a ``Retry-After`` a client can act on: delay-seconds or an HTTP date."""
    if value is None or not value.strip():
        return False
    text = value.strip()
    if text.isdigit():
        return True
    try:
        parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def describe_answer(outcome: Outcome) -> str:
    """What came back: ``"<status> <meaning>"``, or the error when nothing answered."""
    if outcome.status is None:
        return outcome.error or "no answer"
    return f"{outcome.status} {outcome.meaning}"


def answer_detail(outcome: Outcome) -> str:
    """Why an answer is what it is: an excerpt of its body, or what went wrong."""
    if outcome.status is None:
        return outcome.meaning
    if outcome.body.strip():
        return f"body: {body_excerpt(outcome.body, BODY_SHOWN)}"
    return "empty body"


def request_record(outcome: Outcome) -> dict[str, Any]:
    """One request of a case as the JSON report shows it (the URL already redacted)."""
    record: dict[str, Any] = {
        "call": outcome.call,
        "method": outcome.method,
        "url": outcome.url,
        "status": outcome.status,
        "latency_s": json_seconds(outcome.latency_ms / 1000),
    }
    if outcome.retry_after is not None:
        record["retry_after"] = outcome.retry_after
    if outcome.error is not None:
        record["error"] = outcome.error
    return record


def expected_status(status: int, meaning: str | None = None) -> str:
    """An expected answer in words: ``"404 invalid user id"``."""
    return f"{status} {meaning or describe_status(status)}"


def usable_throttle(outcome: Outcome) -> bool:
    """True when a 429 says when to come back: Retry-After or X-Ratelimit-Reset."""
    if usable_retry_after(outcome.retry_after):
        return True
    reset = outcome.extra.get("x_ratelimit_reset")
    return isinstance(reset, str) and reset.strip().isdigit()

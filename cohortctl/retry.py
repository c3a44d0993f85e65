"""Retry policy shared by every sender: which answers are retried, and how long to wait.

Retried: 429, every 5xx, and requests that got no answer (refused, timeout, reset).
Not retried: every other status; 4xx other than 429 is the caller's mistake and resending
it cannot help. The wait before retry *n* (1-based) is ``base * 2**(n-1)`` capped at
``max_delay``, unless the server sent ``Retry-After`` (or, without it,
``X-Ratelimit-Reset``), which wins (also capped); ``cohortctl.http.server_wait`` reads both.
Amplitude's own sync uses 8 retries from 1 s: 1, 2, 4, ... 128 s; its event-streaming
webhooks use :class:`StreamingRetryPolicy` (``--retry-policy streaming``).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cohortctl.errors import InputError
from cohortctl.http.retry_after import (
    parse_ratelimit_reset,
    parse_retry_after,
    server_wait,
)

__all__ = [
    "AMPLITUDE_SYNC_POLICY",
    "STREAMING_POLICY",
    "RetryPolicy",
    "StreamingRetryPolicy",
    "is_retryable_status",
    "named_policy",
    "parse_ratelimit_reset",
    "parse_retry_after",
    "server_wait",
]


def is_retryable_status(status: int) -> bool:
    """True for the answers a sender should try again: 429 and 5xx."""
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how the wait grows between attempts."""

    retries: int = 8
    base_delay: float = 1.0
    max_delay: float = 128.0

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 = the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return min(self.base_delay * 2 ** (retry_number - 1), self.max_delay)

    def schedule(self) -> list[float]:
        """The full backoff schedule without Retry-After, for help text and reports."""
        return [self.delay(n) for n in range(1, self.retries + 1)]


AMPLITUDE_SYNC_POLICY = RetryPolicy(retries=8, base_delay=1.0, max_delay=128.0)


@dataclass(frozen=True)
class StreamingRetryPolicy(RetryPolicy):
    """Amplitude's event-streaming webhook policy (``--retry-policy streaming``, spec part C).

    The first ``fast_retries`` retries (default 3) wait ``base_delay`` (100 ms), doubling, so
    they fall within 4 s; the rest (default 9) are spread over ``slow_span`` seconds (4 hours)
    by a doubling schedule. Every wait gets ``jitter`` (50 %): it is drawn between 50 % and
    150 % of the schedule. ``random`` is injectable for tests.
    """

    retries: int = 12
    base_delay: float = 0.1
    max_delay: float = 7200.0
    fast_retries: int = 3
    slow_span: float = 4 * 3600.0
    jitter: float = 0.5
    random: Callable[[], float] = field(default=_random.random, compare=False, repr=False)

    def nominal(self, retry_number: int) -> float:
        """The wait before retry ``retry_number`` without jitter or Retry-After."""
        if retry_number <= self.fast_retries:
            return min(self.base_delay * 2 ** (retry_number - 1), self.max_delay)
        slow = max(1, self.retries - self.fast_retries)
        first = self.slow_span / (2**slow - 1)
        return min(first * 2 ** (retry_number - self.fast_retries - 1), self.max_delay)

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 = the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        spread = 1.0 - self.jitter + 2 * self.jitter * self.random()
        return min(self.nominal(retry_number) * spread, self.max_delay)

    def schedule(self) -> list[float]:
        """The nominal schedule (no jitter), for help text and reports."""
        return [self.nominal(n) for n in range(1, self.retries + 1)]


STREAMING_POLICY = StreamingRetryPolicy()


def named_policy(
    name: str,
    *,
    retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
) -> RetryPolicy:
    """``cohort-sync`` (Amplitude's cohort sync, the default) or ``streaming``, with overrides."""
    base: RetryPolicy
    if name == "streaming":
        base = STREAMING_POLICY
    elif name in ("cohort-sync", "sync", "default"):
        base = AMPLITUDE_SYNC_POLICY
    else:
        raise InputError(f"unknown --retry-policy {name!r}: use cohort-sync or streaming")
    changes: dict[str, Any] = {}
    if retries is not None:
        if retries < 0:
            raise InputError(f"--retries must not be negative, got {retries}")
        changes["retries"] = retries
    for flag, key, value in (
        ("--backoff-base", "base_delay", base_delay),
        ("--backoff-max", "max_delay", max_delay),
    ):
        if value is not None:
            if value < 0:
                raise InputError(f"{flag} must not be negative")
            changes[key] = value
    return replace(base, **changes) if changes else base

"""Retry policy shared by every sender: which answers are retried, and how long to wait.

Retried: 429, every 5xx, and requests that got no answer (refused, timeout, reset).
Not retried: every other status; 4xx other than 429 is the caller's mistake and resending
it cannot help. The wait before retry *n* (1-based) is ``base * 2**(n-1)`` capped at
``max_delay``, unless the server sent ``Retry-After`` (or, without it,
``X-Ratelimit-Reset``), which wins (also capped); ``cohortctl.http.server_wait`` reads both.
Amplitude's own sync uses 8 retries from 1 s: 1, 2, 4, ... 128 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cohortctl.http.retry_after import parse_ratelimit_reset, parse_retry_after, server_wait

Clock = Callable[[], float]
__all__ = [
    "AMPLITUDE_SYNC_POLICY",
    "RetryPolicy",
    "is_retryable_status",
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

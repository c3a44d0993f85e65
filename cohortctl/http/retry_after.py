"""How long a server asked us to wait: ``Retry-After`` or ``X-Ratelimit-Reset``."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable

Clock = Callable[[], float]

# An epoch in milliseconds is past this many seconds (year 33658 in seconds).
_MS_EPOCH = 10**12


def parse_retry_after(value: str | None, *, now: Clock = time.time) -> float | None:
    """Seconds from ``Retry-After``: delta-seconds or an HTTP date; None when unusable.

    A negative, non-numeric or NaN value is ignored (None: plain backoff); a date in the past
    means 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_ratelimit_reset(value: str | None, *, now: Clock = time.time) -> float | None:
    """Seconds until ``X-Ratelimit-Reset`` (an epoch in seconds or milliseconds), or None.

    A number far below the current epoch (more than ten years before now) is read as seconds
    to wait, since some servers send a delta under this name.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number >= _MS_EPOCH:
        number /= 1000.0
    current = now()
    if number < current - 10 * 365 * 86400:
        return number  # a delta, not an epoch
    return max(0.0, number - current)


def server_wait(
    retry_after: str | None, ratelimit_reset: str | None = None, *, now: Clock = time.time
) -> float | None:
    """Seconds the server asked to wait: ``Retry-After`` when usable, else
    ``X-Ratelimit-Reset``; None means plain backoff. Callers apply their own cap."""
    wait = parse_retry_after(retry_after, now=now)
    if wait is None:
        wait = parse_ratelimit_reset(ratelimit_reset, now=now)
    return wait

"""Wait until an endpoint answers at all, so CI can start a service and check it without sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from cohortctl.http.client import make_client
from cohortctl.http.outcomes import classify_transport_error


@dataclass(frozen=True)
class WaitResult:
    """How waiting ended: the first HTTP status seen, or the last reason there was none."""

    answered: bool
    status: int | None
    attempts: int
    waited_s: float
    last_error: str | None


def wait_for(
    url: str,
    *,
    timeout: float,
    interval: float = 0.25,
    max_interval: float = 2.0,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> WaitResult:
    """GET ``url`` until any HTTP answer arrives (any status counts) or ``timeout`` passes."""
    own = client is None
    http = client or make_client(timeout=min(5.0, max(timeout, 0.1)))
    start = clock()
    attempts = 0
    delay = interval
    last_error: str | None = None
    try:
        while True:
            attempts += 1
            try:
                response = http.get(url)
                return WaitResult(True, response.status_code, attempts, clock() - start, None)
            except httpx.TransportError as exc:
                last_error = classify_transport_error(exc)
            remaining = timeout - (clock() - start)
            if remaining <= 0:
                return WaitResult(False, None, attempts, clock() - start, last_error)
            sleep(min(delay, remaining))
            delay = min(delay * 2, max_interval)
    finally:
        if own:
            http.close()

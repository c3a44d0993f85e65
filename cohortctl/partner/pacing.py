"""Keep to a destination's request rate (``rate_limit: {requests: 12, seconds: 10}``).

Amplitude's sync does not pace itself (its 4 workers can outrun Statsig's ~12 requests per
10 s); a destination file may ask cohortctl to stay under the receiver's limit instead of
collecting 429s. A sliding window: at most ``requests`` sends start in any ``seconds``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    """Hands out send times so that at most ``requests`` start within any ``seconds``."""

    def __init__(
        self, requests: int, seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.requests = requests
        self.seconds = seconds
        self._clock = clock
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Seconds to wait before the next send may start (its slot is taken at once)."""
        with self._lock:
            now = self._clock()
            starts = self._starts
            while starts and starts[0] <= now - self.seconds:
                starts.popleft()
            at = now
            if len(starts) >= self.requests:
                at = max(now, starts[-self.requests] + self.seconds)
            starts.append(at)
            while len(starts) > self.requests:
                starts.popleft()
            return at - now


def pacer_for(rate_limit: tuple[int, float] | None) -> Pacer | None:
    """A :class:`Pacer` for a destination's ``rate_limit``, or None when it has none."""
    return Pacer(*rate_limit) if rate_limit is not None else None

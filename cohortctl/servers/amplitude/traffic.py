"""What the fake Amplitude saw: a request log and the in-flight high-water mark (no secrets)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """One request as the fake saw it (never its credentials)."""

    method: str
    path: str
    status: int = 0
    in_flight: int = 0  # requests in flight when it arrived, itself included
    max_in_flight: int = 0  # the most in flight at any moment while it was
    authorization_sent: bool = False


@dataclass
class RequestLog:
    """Thread-safe view of the requests the fake has handled.

    ``max_in_flight`` counts every authenticated /api request at the moment it arrived,
    including those answered 429: a client that keeps within the limit never pushes it past
    ``max_concurrent``.
    """

    log_size: int = 10_000
    in_flight: int = 0
    max_in_flight: int = 0
    rejected: int = 0  # answered 429 for concurrency
    log: deque[RequestRecord] = field(default_factory=deque)
    _active: list[RequestRecord] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.log = deque(maxlen=self.log_size)

    # Called on the server's loop.
    def record(self, record: RequestRecord) -> None:
        """Add a finished request to the log."""
        with self._cond:
            self.log.append(record)
            self._cond.notify_all()

    def enter(self, record: RequestRecord) -> int:
        """Count an arriving request; returns how many are now in flight, itself included."""
        with self._cond:
            self.in_flight += 1
            self._active.append(record)
            record.in_flight = self.in_flight
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            for active in self._active:
                active.max_in_flight = max(active.max_in_flight, self.in_flight)
            self._cond.notify_all()
            return self.in_flight

    def leave(self, record: RequestRecord, *, rejected: bool = False) -> None:
        """Count a request as finished."""
        with self._cond:
            self.in_flight -= 1
            self._active.remove(record)
            if rejected:
                self.rejected += 1
            self._cond.notify_all()

    # Called from tests (any thread).
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._cond:
            return list(self.log)

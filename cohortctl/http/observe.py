"""What one HTTP exchange looked like, for observers (``-v``, ``--har``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Exchange:
    """One request attempt and its answer (or why there was none); secrets already redacted.

    Timings are milliseconds; ``started`` is wall-clock time (``time.time()``) when the
    attempt began. ``response_body`` holds at most 1 MiB; ``response_cut`` says there was
    more and ``response_size`` is how many body bytes arrived (``None`` when not known).
    """

    method: str
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    started: float
    status: int | None = None
    reason: str = ""
    http_version: str = "HTTP/1.1"
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    response_cut: bool = False
    response_size: int | None = None
    connect_ms: float = 0.0
    send_ms: float = 0.0
    wait_ms: float = 0.0
    receive_ms: float = 0.0
    error: str | None = None
    proxy: str | None = None

    @property
    def total_ms(self) -> float:
        """Connect + send + wait + receive."""
        return self.connect_ms + self.send_ms + self.wait_ms + self.receive_ms


Observer = Callable[[Exchange], object]


def notify(observers: Sequence[Observer], exchange: Exchange) -> None:
    """Call every observer with ``exchange``; an observer's exception is swallowed."""
    for observer in observers:
        with contextlib.suppress(Exception):  # an observer must never break the traffic
            observer(exchange)

"""What a caller plugs into a sync or a delivery (:class:`SyncHooks`: progress, phase and retry
callbacks, the sleep between retries, the transport) and the structured events a sync emits
while it runs (:class:`PhaseStarted`; the CLI words and draws them).

Its own module so both :mod:`cohortctl.sync.delivery` (which takes the hooks whole) and
:mod:`cohortctl.sync.settings` can import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cohortctl.http.fast import Answer
from cohortctl.sync.batches import Batch, DeliveryProgress

# The phases a sync goes through, in the order they start (PhaseStarted.name).
READING = "reading"  # path: the snapshot
OTHER_LIST = "other list"  # list_id: a --list-id other than the remembered one
RECREATING_LIST = "recreating list"
COMPARING = "comparing"
REPAIRED = "repaired"  # batches: confirmations of a discarded plan dropped
CREATING_LIST = "creating list"
PLANNING = "planning"
SENDING = "sending"  # users, batches: what the delivery will send
RECORDING = "recording"


@dataclass(frozen=True)
class PhaseStarted:
    """A phase of a sync starts: which (one of the names above) and its numbers."""

    name: str
    users: int = 0
    batches: int = 0
    path: str | None = None
    list_id: str | None = None


class Transport(Protocol):
    """Sends one request; never raises for HTTP or network failures (they are answers)."""

    async def send(self, method: str, url: str, body: bytes) -> Answer:
        """Send one request and return its :class:`Answer`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


Sleep = Callable[[float], Awaitable[Any]]
OnPhase = Callable[[PhaseStarted], object]
OnProgress = Callable[[DeliveryProgress], object]
OnRetry = Callable[[Batch, int, float, str], object]


@dataclass
class SyncHooks:
    """Injection points: progress, phase and retry callbacks, the sleep between retries
    (None: really wait), the transport (None: the delivery builds its own)."""

    on_progress: OnProgress | None = None
    on_retry: OnRetry | None = None
    on_phase: OnPhase | None = None
    sleep: Sleep | None = None
    transport: Transport | None = None
    progress_every: float = 0.25

    def phase(
        self, name: str, *, users: int = 0, batches: int = 0, path: str | None = None,
        list_id: str | None = None,
    ) -> None:  # fmt: skip
        """Tell the caller a phase starts (reading, diffing, creating the list, sending…)."""
        if self.on_phase is not None:
            self.on_phase(PhaseStarted(name, users, batches, path, list_id))

"""A batch, its result and failure, and the report of a delivery (what the engine returns).

:class:`Batch` and :class:`BatchResult` are plain slotted classes: one of each is built per
request on the hot path. :class:`DeliveryProgress` is what a progress view gets while a
delivery runs; :class:`DeliveryReport` what it did in the end.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from cohortctl.durations import json_seconds
from cohortctl.errors import CohortctlError, ExitCode


@dataclass(slots=True, eq=False, repr=False)
class Batch:
    """One prepared request: the users it carries and the exact bytes to send.

    ``ref`` is the caller's handle to confirm the batch with (a planned batch's
    :data:`cohortctl.sync.state.BatchRef`); slotted, since one is built per request on the
    hot path.
    """

    key: str
    method: str
    url: str
    body: bytes
    user_ids: Sequence[str]
    kind: str
    ref: Any = None

    def __repr__(self) -> str:
        return f"Batch(key={self.key!r}, kind={self.kind!r}, users={len(self.user_ids)})"


@dataclass(slots=True, eq=False, repr=False)
class BatchResult:
    """The final result of one batch (after any retries)."""

    status: int | None
    error: str | None  # an outcomes kind (REFUSED, TIMEOUT, RESET, ...) when no answer
    attempts: int
    body: bytes  # the answer (at most 1 MiB), unredacted: list creation reads it
    detail: str | None = None  # more words: which proxy failed, where a redirect points
    success: bool | None = None  # the destination's verdict (its success statuses), if any

    @property
    def ok(self) -> bool:
        """True for a success: the destination's success statuses when it has them, else 2xx."""
        if self.success is not None:
            return self.success
        return self.status is not None and 200 <= self.status < 300

    @property
    def reason(self) -> str:
        """The status code or the kind of network failure, as a short label."""
        return str(self.status) if self.status is not None else (self.error or "unknown")

    def __repr__(self) -> str:
        return f"BatchResult(status={self.status}, error={self.error}, attempts={self.attempts})"


@dataclass(frozen=True)
class BatchFailure:
    """A batch that did not get a 2xx: enough to explain it and to retry its users."""

    key: str
    kind: str
    reason: str
    meaning: str
    attempts: int
    body: str
    user_ids: Sequence[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (user ids included, for a retry file)."""
        shallow = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict copies every id
        return {**shallow, "user_ids": list(self.user_ids)}


@dataclass(frozen=True)
class DeliveryProgress:
    """A snapshot of a running delivery, for a progress bar."""

    users_done: int
    users_failed: int
    batches_done: int
    requests: int
    retries: int
    elapsed: float

    @property
    def users_per_second(self) -> float:
        """Users delivered (2xx) per second so far."""
        return self.users_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def requests_per_second(self) -> float:
        """Requests sent per second so far (retries included)."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class DeliveryReport:
    """What a delivery did: counts, failures, retry delays, latency percentiles, throughput."""

    batches_ok: int = 0
    batches_failed: int = 0
    users_ok: int = 0
    users_failed: int = 0
    requests: int = 0
    retries: int = 0
    duration: float = 0.0
    interrupted: bool = False
    attempt_failures: Counter[str] = field(default_factory=Counter)
    """Every non-2xx attempt by status or network failure kind (retried ones included)."""
    failed_by: Counter[str] = field(default_factory=Counter)
    """Final batch failures by status or network failure kind."""
    retry_delays: list[float] = field(default_factory=list)
    failures: list[BatchFailure] = field(default_factory=list)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    """Seconds per request attempt (8 bytes each)."""

    @property
    def ok(self) -> bool:
        """True when every batch got a 2xx and the delivery was not interrupted."""
        return self.batches_failed == 0 and not self.interrupted

    def latency_ms(self, quantile: float) -> float:
        """Latency at ``quantile`` (0..1) in milliseconds, nearest rank; 0 with no requests."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(quantile * len(ordered)) - 1))
        return ordered[index] * 1000.0

    @property
    def requests_per_second(self) -> float:
        """Requests sent per second (retries included)."""
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def batches_per_second(self) -> float:
        """Batches finished (ok or failed) per second."""
        done = self.batches_ok + self.batches_failed
        return done / self.duration if self.duration > 0 else 0.0

    @property
    def users_per_second(self) -> float:
        """Users delivered (2xx) per second."""
        return self.users_ok / self.duration if self.duration > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; failures carry their user ids for a retry file."""
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            if not ordered:
                return 0.0
            return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

        return {
            "ok": self.ok,
            "interrupted": self.interrupted,
            "batches_ok": self.batches_ok,
            "batches_failed": self.batches_failed,
            "users_ok": self.users_ok,
            "users_failed": self.users_failed,
            "requests": self.requests,
            "retries": self.retries,
            "retry_delays_s": [json_seconds(d) for d in self.retry_delays],
            "attempt_failures": dict(self.attempt_failures),
            "failed_by": dict(self.failed_by),
            "latency_s": {
                "p50": json_seconds(pct(0.50)),
                "p95": json_seconds(pct(0.95)),
                "p99": json_seconds(pct(0.99)),
            },
            "duration_s": json_seconds(self.duration),
            "requests_per_s": self.requests_per_second,
            "users_per_s": self.users_per_second,
            "failures": [f.to_dict() for f in self.failures],
        }


class DeliveryInterrupted(CohortctlError):
    """Ctrl-C during a delivery; carries the report of what was done before it."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, report: DeliveryReport) -> None:
        super().__init__(
            f"interrupted after {report.batches_ok} batches ({report.users_ok} users) confirmed;"
            " run the same command again to send the rest"
        )
        self.report = report


def write_retry_file(report: DeliveryReport, path: str | os.PathLike[str]) -> int:
    """Write the user ids of every failed batch to ``path``, one per line; return the count.

    The file is a plain ID file: feed it back as the snapshot of a retry.
    """
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for failure in report.failures:
            for user_id in failure.user_ids:
                out.write(user_id)
                out.write("\n")
                count += 1
    return count

"""Send prepared batches the way Amplitude's cohort sync does: N workers, retries, Retry-After.

Defaults are Amplitude's (spec part B, "How Amplitude runs a sync"): 4 workers, 8 retries
backing off 1, 2, 4 … 128 s, ``Retry-After`` honoured (capped at the policy's ``max_delay``);
retried: 429, 5xx and requests with no answer (refused, reset, timeout). Other 4xx are
final and reported per batch with the start of the answer and the batch's user ids.

The hot path sends through :class:`cohortctl.http.fast.FastTransport` (asyncio protocols,
framed by ``httptools``) behind :class:`Transport` (a small interface); it follows the rules of
:mod:`cohortctl.http` (proxies, deadlines, body limits, redirects not followed). Failure bodies
kept in the report are redacted for every credential the requests carried.

``on_done(batch, result)`` runs in the worker right after the batch's final result and
before that worker takes another batch; a caller confirms its state there on a 2xx. A batch
whose request is in flight when the delivery is cancelled (Ctrl-C) gets no ``on_done``, so
it stays unconfirmed and the next run sends it again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import time
from array import array
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cohortctl.durations import json_seconds
from cohortctl.errors import CohortctlError, ExitCode, InputError
from cohortctl.http import outcomes
from cohortctl.http.fast import Answer, FastTransport
from cohortctl.http.proxy import proxy_for as proxy_for
from cohortctl.http.redact import Redactor
from cohortctl.http.redirects import redirect_note
from cohortctl.partner import payloads
from cohortctl.partner.pacing import pacer_for
from cohortctl.retry import (
    AMPLITUDE_SYNC_POLICY,
    RetryPolicy,
    is_retryable_status,
    server_wait,
)

T = TypeVar("T")

DEFAULT_WORKERS = 4
DEFAULT_BATCH_SIZE = 1000
DEFAULT_TIMEOUT = 30.0
EXCERPT_CHARS = 300

Sleep = Callable[[float], Awaitable[Any]]
Clock = Callable[[], float]


class Batch:
    """One prepared request: the users it carries and the exact bytes to send.

    ``ref`` is the caller's handle to confirm the batch with (a planned batch's
    :data:`cohortctl.sync.state.BatchRef`); a plain slotted class, since one is built per
    request on the hot path.
    """

    __slots__ = ("body", "key", "kind", "method", "ref", "url", "user_ids")

    def __init__(
        self,
        key: str,
        method: str,
        url: str,
        body: bytes,
        user_ids: Sequence[str],
        kind: str,
        ref: Any = None,
    ) -> None:
        self.key = key
        self.method = method
        self.url = url
        self.body = body
        self.user_ids = user_ids
        self.kind = kind
        self.ref = ref

    def __repr__(self) -> str:
        return f"Batch(key={self.key!r}, kind={self.kind!r}, users={len(self.user_ids)})"


class BatchResult:
    """The final result of one batch (after any retries)."""

    __slots__ = ("_success", "attempts", "body", "detail", "error", "status")

    def __init__(
        self,
        status: int | None,
        error: str | None,
        attempts: int,
        body: bytes,
        detail: str | None = None,
        success: bool | None = None,
    ) -> None:
        self._success = success  # the destination's verdict (its success statuses), if any
        self.status = status
        self.error = error  # an outcomes kind (REFUSED, TIMEOUT, RESET, ...) when no answer
        self.attempts = attempts
        self.body = body  # the answer (at most 1 MiB), unredacted: list creation reads it
        self.detail = detail  # more words: which proxy failed, where a redirect points

    @property
    def ok(self) -> bool:
        """True for a success: the destination's success statuses when it has them, else 2xx."""
        if self._success is not None:
            return self._success
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
        return {
            "key": self.key,
            "kind": self.kind,
            "reason": self.reason,
            "meaning": self.meaning,
            "attempts": self.attempts,
            "body": self.body,
            "user_ids": list(self.user_ids),
        }


@dataclass(frozen=True)
class Progress:
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


# -- transport --------------------------------------------------------------------------------


class Transport(Protocol):
    """Sends one request; never raises for HTTP or network failures (they are answers)."""

    async def send(self, method: str, url: str, body: bytes) -> Answer:
        """Send one request and return its :class:`Answer`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


StreamTransport = FastTransport  # the name before the transport moved to cohortctl.http.fast


# -- the delivery -----------------------------------------------------------------------------

OnDone = Callable[[Batch, BatchResult], object]
OnProgress = Callable[[Progress], object]
OnRetry = Callable[[Batch, int, float, str], object]


class Delivery:
    """One delivery run: workers, retries, report. Most callers use :func:`deliver`."""

    def __init__(
        self,
        batches: Iterable[Batch],
        *,
        headers: Mapping[str, str] | None = None,
        workers: int = DEFAULT_WORKERS,
        policy: RetryPolicy = AMPLITUDE_SYNC_POLICY,
        timeout: float = DEFAULT_TIMEOUT,
        max_batch_size: int | None = None,
        on_done: OnDone | None = None,
        on_retry: OnRetry | None = None,
        on_progress: OnProgress | None = None,
        progress_every: float = 0.25,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.perf_counter,
        transport: Transport | None = None,
        proxy: str | None = None,
        user_agent: str | None = None,
        redactor: Redactor | None = None,
        success: Collection[int] = (),
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        if workers < 1:
            raise InputError("workers must be at least 1")
        self._success = frozenset(success)  # empty: any 2xx
        self._pacer = pacer_for(rate_limit)
        self._batches: Iterator[Batch] = iter(batches)
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._given_transport = transport
        self._proxy = proxy
        self._user_agent = user_agent
        self._redactor = redactor or Redactor.for_headers(self._headers)
        self._redact = self._redactor.text
        self._transport: Transport | None = None
        self._workers = workers
        self._policy = policy
        self._max = max_batch_size
        self._on_done = on_done
        self._on_retry = on_retry
        self._on_progress = on_progress
        self._progress_every = progress_every
        self._sleep = sleep
        self._clock = clock
        self.report = DeliveryReport()
        self._started = 0.0
        self._next_progress = 0.0
        self._stopping = False

    def progress(self) -> Progress:
        """Where the delivery stands now."""
        r = self.report
        return Progress(
            users_done=r.users_ok,
            users_failed=r.users_failed,
            batches_done=r.batches_ok + r.batches_failed,
            requests=r.requests,
            retries=r.retries,
            elapsed=self._clock() - self._started,
        )

    async def run(self) -> DeliveryReport:
        """Deliver every batch; on cancellation mark the report interrupted and re-raise.

        Builds the transport (closed at the end) unless one was passed:
        :class:`~cohortctl.http.fast.FastTransport`, through ``proxy`` when given, else
        through the environment's proxy for each URL.
        """
        transport = self._given_transport
        if transport is None:
            transport = FastTransport(
                workers=self._workers,
                headers=self._headers,
                timeout=self._timeout,
                proxy=self._proxy,
                user_agent=self._user_agent,
                redactor=self._redactor,
            )
        self._transport = transport
        self._started = self._clock()
        self._next_progress = self._started + self._progress_every
        self._stopping = False
        tasks = [asyncio.ensure_future(self._worker()) for _ in range(self._workers)]
        stop_on_sigterm = _cancel_on_sigterm()
        try:
            # asyncio.wait, not gather: a cancellation of this task reaches it at once, even
            # when a worker's own cancellation is lost in a library below.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        except BaseException as exc:
            self._stopping = True  # a worker that missed its cancellation stops at its next batch
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, asyncio.CancelledError):
                self.report.interrupted = True
            raise
        finally:
            stop_on_sigterm()
            self.report.duration = self._clock() - self._started
            if self._given_transport is None:
                await transport.close()
        if self._on_progress is not None:
            self._on_progress(self.progress())
        return self.report

    async def _worker(self) -> None:
        batches = self._batches
        report = self.report
        on_done = self._on_done
        on_progress = self._on_progress
        limit = self._max
        for batch in batches:
            if self._stopping:
                raise asyncio.CancelledError
            if limit is not None and len(batch.user_ids) > limit:
                raise InputError(
                    f"batch {batch.key} has {len(batch.user_ids)} users, over the batch size"
                    f" of {limit}"
                )
            result = await self._send(batch)
            users = len(batch.user_ids)
            if result.ok:
                report.batches_ok += 1
                report.users_ok += users
            else:
                report.batches_failed += 1
                report.users_failed += users
                report.failed_by[result.reason] += 1
                report.failures.append(_failure(batch, result, self._redact))
            if on_done is not None:
                done = on_done(batch, result)
                if inspect.isawaitable(done):
                    await done
            if on_progress is not None:
                now = self._clock()
                if now >= self._next_progress:
                    self._next_progress = now + self._progress_every
                    on_progress(self.progress())

    async def _send(self, batch: Batch) -> BatchResult:
        transport = self._transport
        assert transport is not None
        report = self.report
        clock = self._clock
        policy = self._policy
        attempt = 0
        while True:
            attempt += 1
            if self._pacer is not None:
                await self._sleep(self._pacer.reserve())
            started = clock()
            answer = await transport.send(batch.method, batch.url, batch.body)
            report.latencies.append(clock() - started)
            report.requests += 1
            status = answer.status
            if self._success and status in self._success:
                return BatchResult(status, None, attempt, answer.body, success=True)
            if not self._success and status is not None and 200 <= status < 300:
                return BatchResult(status, None, attempt, answer.body)
            reason = str(status) if status is not None else (answer.error or outcomes.NETWORK)
            report.attempt_failures[reason] += 1
            retryable = status is None or is_retryable_status(status)
            if not retryable or attempt > policy.retries:
                detail = answer.detail
                if status is not None and 300 <= status < 400:
                    detail = redirect_note(answer.location, batch.url)
                return BatchResult(
                    status, answer.error, attempt, answer.body, detail,
                    success=False if self._success else None,
                )  # fmt: skip
            delay = policy.delay(attempt, server_wait(answer.retry_after, answer.rate_reset))
            report.retries += 1
            report.retry_delays.append(delay)
            if self._on_retry is not None:
                self._on_retry(batch, attempt, delay, reason)
            await self._sleep(delay)


def _failure(batch: Batch, result: BatchResult, redact: Callable[[str], str]) -> BatchFailure:
    text = redact(result.body[: EXCERPT_CHARS * 8].decode("utf-8", "replace"))
    excerpt = text[:EXCERPT_CHARS]
    meaning = (
        outcomes.describe_status(result.status) if result.status is not None else result.reason
    )
    if result.detail:
        meaning = f"{meaning}: {redact(result.detail)}"
    return BatchFailure(
        key=batch.key,
        kind=batch.kind,
        reason=result.reason,
        meaning=meaning,
        attempts=result.attempts,
        body=excerpt,
        user_ids=batch.user_ids,
    )


async def deliver_async(batches: Iterable[Batch], **options: Any) -> DeliveryReport:
    """Deliver ``batches`` and return the report; ``options`` are :class:`Delivery`'s.

    ``headers`` are sent with every request (auth already built by the caller); a
    :class:`~cohortctl.http.fast.FastTransport` is built unless ``transport`` is passed.
    Cancellation propagates as usual; use :class:`Delivery` directly to read the partial
    report afterwards.
    """
    return await Delivery(batches, **options).run()


def _cancel_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM cancel the running task, as Ctrl-C does; returns the undo.

    So ``kill PID`` (a CI timeout, a container stop) ends a delivery the orderly way: batches in
    flight stay unconfirmed and the run is recorded as interrupted. Only possible on the main
    thread of a Unix event loop; elsewhere SIGTERM keeps its default action.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        return lambda: None
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGTERM)

    return undo


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (Linux, macOS), else on asyncio's loop.

    Measured on the hot path (``benchmarks/sync.py``): uvloop cuts the sender's per-request
    event-loop cost enough to raise batch requests/s by a quarter or more.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def deliver(batches: Iterable[Batch], **options: Any) -> DeliveryReport:
    """Run a :class:`Delivery` on a fresh event loop (for the CLI).

    Ctrl-C stops the workers; batches in flight stay unconfirmed and the partial report is
    raised inside :class:`DeliveryInterrupted` (exit code 130).
    """
    delivery = Delivery(batches, **options)
    try:
        return run_event_loop(delivery.run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        delivery.report.interrupted = True
        raise DeliveryInterrupted(delivery.report) from None


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


# -- building batches -------------------------------------------------------------------------


def chunked(user_ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Consecutive slices of at most ``size`` ids."""
    if size < 1:
        raise InputError("batch size must be at least 1")
    for start in range(0, len(user_ids), size):
        yield user_ids[start : start + size]


def iter_batches(
    user_ids: Sequence[str],
    *,
    kind: str,
    url: str,
    body: Callable[[Sequence[str]], Any],
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: str = "POST",
    key_prefix: str | None = None,
) -> Iterator[Batch]:
    """Lazily build one :class:`Batch` per ``batch_size`` ids; ``body`` makes the JSON object.

    Bodies are encoded only when a worker asks for the next batch, so millions of users
    never sit in memory as request bodies. Keys are ``{key_prefix or kind}:{index}`` (give a
    prefix such as ``enter`` / ``leave`` when both directions share one kind, as identify
    batches do).
    """
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for index, chunk in enumerate(chunked(user_ids, batch_size)):
        yield Batch(
            key=f"{key_prefix or kind}:{index}",
            method=method,
            url=url,
            body=dumps(body(chunk)).encode(),
            user_ids=chunk,
            kind=kind,
        )


# -- encoding bodies fast -----------------------------------------------------------------------
#
# A 1,000-id body through json.dumps costs ~60 us; at 10,000 requests/s that alone would fill
# a core. Ids without a quote, a backslash or a control character encode as themselves, so a
# body is a constant head, the ids joined by a constant separator, and a constant tail: one C
# join and one encode (~10 us). The output is byte-for-byte what
# ``json.dumps(payload, ensure_ascii=False, separators=(",", ":"))`` gives (tests check it).
# A list checked once with :func:`ids_are_plain` skips every per-batch check; otherwise each
# batch is scanned (one ``bytes.translate``) and one holding such an id takes json.dumps.

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SPECIAL = bytes(range(0x20)) + b'"\\'


def encode_json(data: Any) -> bytes:
    """Compact UTF-8 JSON, as every sync body is sent (non-ASCII kept as is)."""
    return _DUMPS(data).encode()


def ids_are_plain(user_ids: Sequence[str], block: int = 65536) -> bool:
    """True when no id holds a quote, a backslash or a control character (JSON-escaped ones).

    Such ids encode as themselves, so encoders built with ``plain=True`` skip every check.
    """
    for start in range(0, len(user_ids), block):
        raw = "".join(user_ids[start : start + block]).encode("utf-8", "surrogatepass")
        if len(raw.translate(None, _SPECIAL)) != len(raw):
            return False
    return True


class _JoinedBody:
    """``head + sep.join(ids) + tail``, falling back to ``fallback(ids)`` for unusual ids."""

    def __init__(
        self,
        head: str,
        sep: str,
        tail: str,
        fallback: Callable[[Sequence[str]], Any],
        *,
        plain: bool,
    ) -> None:
        self._head = head.encode()
        self._tail = tail.encode()
        self._sep = sep
        encoded_sep = sep.encode()
        self._special = len(encoded_sep) - len(encoded_sep.translate(None, _SPECIAL))
        self._fallback = fallback
        self._plain = plain

    def __call__(self, user_ids: Sequence[str]) -> bytes:
        n = len(user_ids)
        if n:
            raw = self._sep.join(user_ids).encode()
            if self._plain or len(raw) - len(raw.translate(None, _SPECIAL)) == self._special * (
                n - 1
            ):
                return self._head + raw + self._tail
        return encode_json(self._fallback(user_ids))


def list_members_encoder(*, plain: bool = False) -> Callable[[Sequence[str]], bytes]:
    """Bytes of :func:`cohortctl.partner.payloads.list_members` for a batch of ids.

    ``plain=True`` promises every id passed :func:`ids_are_plain` (no per-batch check).
    """
    context = _DUMPS(payloads.context())
    return _JoinedBody(
        '{"userIds":["', '","', '"],"context":' + context + "}", payloads.list_members, plain=plain
    )


def identify_encoder(
    cohort_name: str, cohort_id: str, *, member: bool, batch: bool = True, plain: bool = False
) -> Callable[[Sequence[str]], bytes]:
    """Bytes of :func:`cohortctl.partner.payloads.identify_batch` (or of a single ``identify``).

    ``batch=False`` encodes one user's identify call; ``plain`` as for
    :func:`list_members_encoder`.
    """
    label = _DUMPS(payloads.cohort_label(cohort_name, cohort_id))
    value = "true" if member else "false"
    context = _DUMPS(payloads.context())
    head = '{"type":"identify","traits":{' + label + ":" + value + '},"userId":"'
    tail = '","context":' + context + "}"
    if not batch:

        def single(ids: Sequence[str]) -> Any:
            return payloads.identify(ids[0], cohort_name, cohort_id, member=member)

        return _JoinedBody(head, "", tail, single, plain=plain)

    def many(ids: Sequence[str]) -> Any:
        return payloads.identify_batch(ids, cohort_name, cohort_id, member=member)

    return _JoinedBody('{"batch":[' + head, tail + "," + head, tail + "]}", many, plain=plain)

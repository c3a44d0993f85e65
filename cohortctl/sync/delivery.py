"""Send prepared batches the way Amplitude's cohort sync does: N workers, retries, Retry-After.

Defaults are Amplitude's (spec part B, "How Amplitude runs a sync"): 4 workers, 8 retries
backing off 1, 2, 4 … 128 s, ``Retry-After`` honoured (capped at the policy's ``max_delay``);
retried: 429, 5xx and requests with no answer (refused, reset, timeout). Other 4xx are
final and reported per batch with the start of the answer and the batch's user ids.

The hot path sends through :class:`cohortctl.http.fast.FastTransport` (asyncio protocols,
framed by ``httptools``) behind :class:`~cohortctl.sync.hooks.Transport` (a small interface);
it follows the rules of :mod:`cohortctl.http` (proxies, deadlines, body limits, redirects not
followed). Failure bodies kept in the report are redacted for every credential the requests
carried. Callbacks, the sleep between retries and an injected transport come in one
:class:`~cohortctl.sync.hooks.SyncHooks`.

``on_done(batch, result)`` runs in the worker right after the batch's final result and
before that worker takes another batch; a caller confirms its state there on a 2xx. A batch
whose request is in flight when the delivery is cancelled (Ctrl-C) gets no ``on_done``, so
it stays unconfirmed and the next run sends it again.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import (
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, TypeVar

from cohortctl.errors import InputError
from cohortctl.http import outcomes
from cohortctl.http.fast import FastTransport
from cohortctl.http.redact import Redactor
from cohortctl.http.redirects import redirect_note
from cohortctl.http.settings import Overrides
from cohortctl.partner.pacing import pacer_for
from cohortctl.retry import (
    AMPLITUDE_SYNC_POLICY,
    RetryPolicy,
    is_retryable_status,
    server_wait,
)
from cohortctl.sync.batches import (
    Batch,
    BatchFailure,
    BatchResult,
    DeliveryInterrupted,
    DeliveryProgress,
    DeliveryReport,
)
from cohortctl.sync.hooks import Sleep, SyncHooks, Transport

T = TypeVar("T")

DEFAULT_WORKERS = 4
DELIVERY_REQUEST_TIMEOUT = 30.0  # when the caller gives none (sync passes the destination's)
EXCERPT_CHARS = 300

Clock = Callable[[], float]


# -- the delivery -----------------------------------------------------------------------------

OnDone = Callable[[Batch, BatchResult], object]


class Delivery:
    """One delivery run: workers, retries, report. Most callers use :func:`deliver`."""

    def __init__(
        self,
        batches: Iterable[Batch],
        *,
        headers: Mapping[str, str] | None = None,
        workers: int = DEFAULT_WORKERS,
        policy: RetryPolicy = AMPLITUDE_SYNC_POLICY,
        timeout: float = DELIVERY_REQUEST_TIMEOUT,
        max_batch_size: int | None = None,
        on_done: OnDone | None = None,
        hooks: SyncHooks | None = None,
        clock: Clock = time.perf_counter,
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
        sent_headers = dict(headers or {})
        redactor = redactor or Redactor.for_headers(sent_headers)
        self._redact = redactor.text
        hooks = hooks or SyncHooks()
        self._owns_transport = hooks.transport is None
        self._transport: Transport = (
            hooks.transport
            if hooks.transport is not None
            else FastTransport(
                workers=workers,
                headers=sent_headers,
                timeout=timeout,
                user_agent=user_agent,
                overrides=Overrides(proxy=proxy, redactor=redactor),
            )
        )
        self._workers = workers
        self._policy = policy
        self._max = max_batch_size
        self._on_done = on_done
        self._hooks = hooks
        self._sleep: Sleep = hooks.sleep or asyncio.sleep
        self._clock = clock
        self.report = DeliveryReport()
        self._started = 0.0
        self._next_progress = 0.0
        self._stopping = False

    def progress(self) -> DeliveryProgress:
        """Where the delivery stands now."""
        r = self.report
        return DeliveryProgress(
            users_done=r.users_ok,
            users_failed=r.users_failed,
            batches_done=r.batches_ok + r.batches_failed,
            requests=r.requests,
            retries=r.retries,
            elapsed=self._clock() - self._started,
        )

    async def run(self) -> DeliveryReport:
        """Deliver every batch; on cancellation mark the report interrupted and re-raise.

        The transport is the hooks' one, else a :class:`~cohortctl.http.fast.FastTransport`
        (through ``proxy`` when given, else the environment's proxy for each URL) built with
        the delivery and closed at the end of the run.
        """
        self._started = self._clock()
        self._next_progress = self._started + self._hooks.progress_every
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
            if self._owns_transport:
                await self._transport.close()
        if self._hooks.on_progress is not None:
            self._hooks.on_progress(self.progress())
        return self.report

    async def _worker(self) -> None:
        batches = self._batches
        report = self.report
        on_done = self._on_done
        on_progress = self._hooks.on_progress
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
                    self._next_progress = now + self._hooks.progress_every
                    on_progress(self.progress())

    async def _send(self, batch: Batch) -> BatchResult:
        transport = self._transport
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
            if self._hooks.on_retry is not None:
                self._hooks.on_retry(batch, attempt, delay, reason)
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
    :class:`~cohortctl.http.fast.FastTransport` is built unless ``hooks`` carry a transport.
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

"""An httpx transport that reports every exchange to the observers (``--har``, ``-v``).

It wraps the real transport; with no observer registered it only forwards. With one, the
answer streams through to the caller as usual and, once closed, a redacted
:class:`~cohortctl.http.observe.Exchange` (at most
:data:`~cohortctl.http.settings.MAX_HELD` bytes of the answer) goes to every observer in
:func:`cohortctl.http.current`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx

from cohortctl.http.observe import Exchange, notify
from cohortctl.http.redact import Redactor
from cohortctl.http.settings import MAX_HELD, current


def _headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


def _version(response: httpx.Response) -> str:
    raw = response.extensions.get("http_version", b"HTTP/1.1")
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


class _ObservedStream(httpx.SyncByteStream):
    """The answer's body as it streams to the caller; reported once closed (first MiB held)."""

    def __init__(self, response: httpx.Response, finish: Callable[[bytes, int], None]) -> None:
        self._response = response
        self._finish: Callable[[bytes, int], None] | None = finish
        self._held = bytearray()
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._response.iter_raw():
            self._size += len(chunk)
            room = MAX_HELD - len(self._held)
            if room > 0:
                self._held += chunk[:room]
            yield chunk

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            finish, self._finish = self._finish, None
            if finish is not None:
                finish(bytes(self._held), self._size)


class ObservingTransport(httpx.BaseTransport):
    """Forwards to ``inner`` (default: httpx's own) and reports each exchange."""

    def __init__(
        self, inner: httpx.BaseTransport | None = None, *, secrets: tuple[str, ...] = ()
    ) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.secrets = secrets  # redacted too, whatever header carries them (webhook headers)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; report it (and what came back, or why nothing did)."""
        observers = current().observers
        if not observers:
            return self.inner.handle_request(request)
        headers = _headers(request.headers)
        redactor = Redactor.for_headers(headers)
        if self.secrets:
            redactor = redactor.merged(Redactor(self.secrets))
        base = Exchange(
            method=request.method,
            url=redactor.text(str(request.url)),
            request_headers=redactor.headers(headers),
            request_body=redactor.bytes(request.read()),
            started=time.time(),
        )
        started = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            error = redactor.text(f"{type(exc).__name__}: {exc}")
            notify(observers, replace(base, wait_ms=elapsed, error=error))
            raise
        answered = time.perf_counter()
        status, reason = response.status_code, response.reason_phrase
        response_headers = response.headers

        def finish(held: bytes, size: int) -> None:
            content = held
            if size <= MAX_HELD:  # the whole body: decode what Content-Encoding says
                try:
                    content = httpx.Response(status, headers=response_headers, content=held).read()
                except httpx.DecodingError:
                    content = held
            notify(
                observers,
                replace(
                    base,
                    status=status,
                    reason=reason,
                    response_headers=redactor.headers(_headers(response_headers)),
                    response_body=redactor.bytes(content[:MAX_HELD]),
                    response_cut=size > MAX_HELD or len(content) > MAX_HELD,
                    response_size=size,
                    http_version=_version(response),
                    wait_ms=(answered - started) * 1000,
                    receive_ms=(time.perf_counter() - answered) * 1000,
                ),
            )

        return httpx.Response(
            status,
            headers=response_headers,
            stream=_ObservedStream(response, finish),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        """Close the wrapped transport."""
        self.inner.close()


def observed(client: httpx.Client, *, secrets: tuple[str, ...] = ()) -> httpx.Client:
    """``client`` with its transports (proxy mounts included) reporting to the observers.

    Wrapping after construction keeps what httpx set up from the environment (proxies).
    ``secrets`` are redacted from every exchange besides the credential-looking headers.
    """
    client._transport = ObservingTransport(client._transport, secrets=secrets)
    client._mounts = {
        pattern: None if transport is None else ObservingTransport(transport, secrets=secrets)
        for pattern, transport in client._mounts.items()
    }
    return client

"""An httpx transport that reports every exchange to the observers (``--har``, ``-v``).

It wraps the real transport; with no observer registered it only forwards. With one, it
reads the answer whole and hands a redacted :class:`~cohortctl.http.observe.Exchange` (at
most :data:`~cohortctl.http.settings.MAX_HELD` bytes of the answer) to every observer in
:func:`cohortctl.http.current`.
"""

from __future__ import annotations

import time
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


class ObservingTransport(httpx.BaseTransport):
    """Forwards to ``inner`` (default: httpx's own) and reports each exchange."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; report it (and what came back, or why nothing did)."""
        observers = current().observers
        if not observers:
            return self.inner.handle_request(request)
        headers = _headers(request.headers)
        redactor = Redactor.for_headers(headers)
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
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        done = time.perf_counter()
        decoded = httpx.Response(response.status_code, headers=response.headers, content=raw)
        try:
            content = decoded.read()
        except httpx.DecodingError:
            content = raw
        notify(
            observers,
            replace(
                base,
                status=response.status_code,
                reason=response.reason_phrase,
                response_headers=redactor.headers(_headers(response.headers)),
                response_body=redactor.bytes(content[:MAX_HELD]),
                response_cut=len(content) > MAX_HELD,
                response_size=len(raw),
                http_version=_version(response),
                wait_ms=(answered - started) * 1000,
                receive_ms=(done - answered) * 1000,
            ),
        )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        """Close the wrapped transport."""
        self.inner.close()


def observed(client: httpx.Client) -> httpx.Client:
    """``client`` with its transports (proxy mounts included) reporting to the observers.

    Wrapping after construction keeps what httpx set up from the environment (proxies).
    """
    client._transport = ObservingTransport(client._transport)
    client._mounts = {
        pattern: None if transport is None else ObservingTransport(transport)
        for pattern, transport in client._mounts.items()
    }
    return client

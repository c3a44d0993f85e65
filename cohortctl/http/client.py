"""The httpx side of the layer, for the request/response commands (mock, check, upload...).

:func:`make_client` gives an ``httpx.Client`` whose transport applies the rules of
:mod:`cohortctl.http`: the environment's proxy for each URL (the same :func:`proxy_for` as the
sync path), a deadline from connect to the last byte (the request's timeout; a trickling server
is cut there), ``--ca-cert``/``SSL_CERT_FILE``/system trust, one User-Agent, no redirects
followed, and observers. :func:`read_held` reads at most :data:`MAX_HELD` bytes of an answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpcore
import httpx

from cohortctl.http.observe import Exchange, Observer, notify
from cohortctl.http.proxy import shown_proxy
from cohortctl.http.redact import Redactor
from cohortctl.http.settings import MAX_HELD, Overrides, current, ssl_context

_deadline = threading.local()


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    remaining = at - time.monotonic()
    if remaining <= 0:
        raise error("the request took longer than its timeout")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write ends by the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:  # pragma: no cover - not used
        return self._backend.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:  # pragma: no cover - not used
        self._backend.sleep(seconds)


class _Tracked(httpx.SyncByteStream):
    """The answer's body stream: keeps an excerpt for observers, ends the deadline on close."""

    def __init__(self, stream: Any, on_close: Any, keep: bool) -> None:
        self._stream = stream
        self._on_close = on_close
        self._keep = keep
        self.excerpt = bytearray()
        self.size = 0
        self.first_at = 0.0
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if not self.first_at:
                self.first_at = time.perf_counter()
            self.size += len(chunk)
            if self._keep and len(self.excerpt) < MAX_HELD:
                self.excerpt += chunk[: MAX_HELD - len(self.excerpt)]
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
        finally:
            self._on_close(self)


class HttpxTransport(httpx.BaseTransport):
    """Routes each request direct or through the environment's proxy (else the ``overrides``'
    one), under a deadline."""

    def __init__(self, overrides: Overrides | None = None) -> None:
        self._overrides = overrides = overrides or Overrides()
        self._verify = ssl_context(overrides.trust())
        # None: whoever is registered when each request is sent (``--har``, ``-v``).
        self._observers = overrides.observers
        self._redactor = overrides.redactor or Redactor()
        self._routes: dict[str | None, httpx.HTTPTransport] = {}

    def _route(self, proxy: str | None) -> httpx.HTTPTransport:
        route = self._routes.get(proxy)
        if route is None:
            route = httpx.HTTPTransport(verify=self._verify, proxy=self._proxy_of(proxy))
            pool = getattr(route, "_pool", None)
            backend = getattr(pool, "_network_backend", None)
            if backend is not None:
                pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
            self._routes[proxy] = route
        return route

    def _proxy_of(self, proxy: str | None) -> httpx.Proxy | None:
        if not proxy:
            return None
        if proxy.lower().startswith("https://"):  # verified as targets are (--ca-cert...)
            return httpx.Proxy(proxy, ssl_context=self._verify)
        return httpx.Proxy(proxy)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        proxy = self._overrides.proxy_for(url)
        timeout = request.extensions.get("timeout", {})
        total = timeout.get("read") or timeout.get("connect")
        _deadline.at = time.monotonic() + total if total else None
        observers = self._observers if self._observers is not None else current().observers
        observing = bool(observers)
        marks: dict[str, float] = {}
        started_wall, started = time.time(), time.perf_counter()
        if observing or proxy:

            def trace(name: str, _info: Any) -> None:
                marks[name] = time.perf_counter()

            request.extensions = {**request.extensions, "trace": trace}
        try:
            response = self._route(proxy).handle_request(request)
        except httpx.TransportError as exc:
            _deadline.at = None
            # Under a proxy, the connection's own TLS is the proxy's (a target's is the tunnel's).
            proxy_tls = "connection.start_tls.failed" in marks
            failure = _name_proxy(exc, proxy, request, proxy_tls=proxy_tls)
            if observing:
                self._observe(
                    observers, request, None, None, started_wall, started, marks, failure, proxy
                )
            raise failure from exc
        except BaseException:
            _deadline.at = None
            raise

        def closed(stream: _Tracked) -> None:
            _deadline.at = None
            if observing:
                self._observe(
                    observers, request, response, stream, started_wall, started, marks, None, proxy
                )

        response.stream = _Tracked(response.stream, closed, observing)
        return response

    def _observe(
        self,
        observers: Sequence[Observer],
        request: httpx.Request,
        response: httpx.Response | None,
        stream: _Tracked | None,
        started_wall: float,
        started: float,
        marks: Mapping[str, float],
        error: Exception | None,
        proxy: str | None,
    ) -> None:
        sent = _raw_headers(request.headers)
        redact = self._redactor.merged(Redactor.for_headers(sent))
        ended = time.perf_counter()
        connected = marks.get("connection.connect_tcp.complete", started)
        connected = marks.get("connection.start_tls.complete", connected)
        sent_at = marks.get("http11.send_request_body.complete", connected)
        headers_at = marks.get("http11.receive_response_headers.complete", ended)
        exchange = Exchange(
            method=request.method,
            url=redact.text(str(request.url)),
            request_headers=redact.headers(sent),
            request_body=redact.bytes(_request_body(request)),
            started=started_wall,
            connect_ms=(connected - started) * 1000,
            send_ms=max(0.0, sent_at - connected) * 1000,
            wait_ms=max(0.0, headers_at - sent_at) * 1000,
            receive_ms=max(0.0, ended - headers_at) * 1000,
            proxy=shown_proxy(proxy) if proxy else None,
        )
        if response is not None and stream is not None:
            exchange.status = response.status_code
            exchange.reason = response.reason_phrase
            exchange.http_version = response.http_version
            exchange.response_headers = redact.headers(_raw_headers(response.headers))
            body = _decoded(response, bytes(stream.excerpt), whole=stream.size <= MAX_HELD)
            exchange.response_body = redact.bytes(body[:MAX_HELD])
            exchange.response_cut = stream.size > MAX_HELD or len(body) > MAX_HELD
            exchange.response_size = stream.size
        if error is not None:
            exchange.error = redact.text(f"{type(error).__name__}: {error}")
        notify(observers, exchange)

    def close(self) -> None:
        for route in self._routes.values():
            route.close()
        self._routes.clear()


def _raw_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """Headers as they went over the wire (names in their own case)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


def _decoded(response: httpx.Response, raw: bytes, *, whole: bool) -> bytes:
    """The body as the caller reads it: a whole body decoded as its Content-Encoding says."""
    if not whole or "content-encoding" not in response.headers:
        return raw
    try:
        return httpx.Response(response.status_code, headers=response.headers, content=raw).read()
    except httpx.DecodingError:
        return raw


def _request_body(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return b""


def _name_proxy(
    exc: httpx.TransportError,
    proxy: str | None,
    request: httpx.Request,
    *,
    proxy_tls: bool = False,
) -> httpx.TransportError:
    """Through a proxy every connection goes to the proxy: a failure to connect is its.

    ``proxy_tls``: the TLS handshake with an ``https://`` proxy itself failed.
    """
    if not proxy:
        return exc
    shown = shown_proxy(proxy)
    if proxy_tls:
        return httpx.ProxyError(f"proxy {shown}: TLS handshake failed: {exc}", request=request)
    if isinstance(exc, httpx.ProxyError):
        return httpx.ProxyError(f"proxy {shown} answered {exc} to CONNECT", request=request)
    if isinstance(exc, httpx.ConnectError) and "SSL" not in str(exc):
        said = "refused the connection" if "refused" in str(exc).lower() else "is unreachable"
        return httpx.ProxyError(f"proxy {shown} {said}: {exc}", request=request)
    return exc


def make_client(
    *,
    base_url: str = "",
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    user_agent: str | None = None,
    ca_cert: str | None = None,
    proxy: str | None = None,
    observers: Sequence[Observer] | None = None,
    redactor: Redactor | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` under the layer's rules (see the module docstring).

    ``proxy`` overrides the environment (``""``: none); ``transport`` replaces the network
    (``httpx.MockTransport`` in unit tests). Redirects are never followed by default.
    """
    agent = user_agent if user_agent is not None else current().user_agent
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        timeout=timeout,
        headers={"User-Agent": agent, **(headers or {})},
        follow_redirects=False,
        trust_env=False,
        transport=transport
        or HttpxTransport(
            Overrides(
                proxy=proxy,
                ca_cert=ca_cert,
                observers=tuple(observers) if observers is not None else None,
                redactor=redactor,
            )
        ),
    )


def read_held(response: httpx.Response, limit: int = MAX_HELD) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of a streamed answer, and whether it was cut; closes it."""
    chunks: list[bytes] = []
    size = 0
    cut = False
    try:
        for chunk in response.iter_bytes():
            if size + len(chunk) > limit:
                chunks.append(chunk[: limit - size])
                cut = True
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        response.close()
    return b"".join(chunks), cut


def send_held(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    content: bytes,
    timeout: float,
) -> httpx.Response:
    """Send one request and hold at most :data:`MAX_HELD` bytes of its answer (:func:`held`)."""
    sent = client.build_request(method, url, headers=headers, content=content, timeout=timeout)
    return held(client.send(sent, stream=True))


def answer_excerpt(response: httpx.Response, scrub: Callable[[str], str], keep: int) -> str:
    """The first ``keep`` characters of a held answer, scrubbed, noting a cut body."""
    shown = scrub(response.text)[:keep]
    if response.extensions.get("cut"):
        shown += f" [answer cut: only the first {MAX_HELD} bytes were read]"
    return shown


def held(response: httpx.Response, limit: int = MAX_HELD) -> httpx.Response:
    """A read copy of a streamed answer holding at most ``limit`` bytes of its body.

    ``extensions["cut"]`` is True when the body was longer; the original is closed.
    """
    body, cut = read_held(response, limit)
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    copy = httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions={**response.extensions, "cut": cut},
    )
    copy.read()
    return copy

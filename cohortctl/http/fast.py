"""The sync hot path: keep-alive HTTP/1.1 on asyncio protocols, framed by ``httptools``.

One connection per worker per origin, reused while the server keeps it open. Each request is a
prebuilt head (method, target, ``Host``, ``User-Agent``, the caller's headers) plus the body,
written in one call; ``httptools`` (llhttp, the parser uvicorn uses) frames the answer:
Content-Length, chunked (with trailers), close-delimited (HTTP/1.0, ``Connection: close``),
204/304 without a body, 1xx interim answers skipped. Measured in ``benchmarks/transports.py``.

The rules of :mod:`cohortctl.http` hold here too: ``timeout`` bounds connect to last byte;
at most :data:`~cohortctl.http.settings.MAX_HELD` bytes of a body are held (the connection is
closed past that and the answer marked cut); proxies from the environment (``CONNECT`` for
https, absolute-form for http) with ``Proxy-Authorization`` only from the proxy URL; a failing
proxy is reported as ``proxy error`` naming the proxy. Observers get one
:class:`~cohortctl.http.observe.Exchange` per attempt; with none, nothing is recorded.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass

import httptools

from cohortctl.errors import InputError
from cohortctl.http import outcomes
from cohortctl.http.observe import Exchange, notify
from cohortctl.http.proxy import Proxy
from cohortctl.http.redact import Redactor
from cohortctl.http.settings import MAX_HELD, Overrides, current, ssl_context

PROXY = outcomes.PROXY


@dataclass(slots=True, repr=False, eq=False)
class Answer:
    """What a transport got back for one request attempt (never an exception).

    ``error`` is an :mod:`cohortctl.http.outcomes` kind when there was no answer, ``detail`` says
    more (which proxy failed); ``cut`` means the body held is the first
    :data:`MAX_HELD` bytes only.
    """

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str | None = None
    _: KW_ONLY
    rate_reset: str | None = None
    location: str | None = None
    detail: str | None = None
    cut: bool = False

    def __repr__(self) -> str:
        return f"Answer(status={self.status}, error={self.error}, body={len(self.body)} bytes)"


class _Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, let llhttp frame one answer at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.observing = False
        self._reset()
        self.tunnel: asyncio.Future[int] | None = None

    def _reset(self) -> None:
        self._status = 0
        self._body = bytearray()
        self._cut = False
        self._retry_after: str | None = None
        self._rate_reset: str | None = None
        self._location: str | None = None
        self._framed = False
        self._in_head = True
        self.received = 0
        self.first_at = 0.0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_result(0)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._status
        if (
            exc is None
            and not self._in_head
            and not self._framed
            and status >= 200
            and status not in (204, 304)
        ):
            self._finish(keep=False)  # close-delimited: the body ends here
        else:
            waiter.set_result(Answer(None, error=outcomes.RESET))

    def data_received(self, data: bytes) -> None:
        if self.observing and not self.first_at:
            self.first_at = time.perf_counter()
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(outcomes.MALFORMED)
        except httptools.HttpParserError:
            self._fail(outcomes.MALFORMED)

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        if self.observing:
            self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True
        elif lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered == b"x-ratelimit-reset":
            self._rate_reset = value.decode("latin-1")
        elif lowered == b"location":
            self._location = value.decode("latin-1")
        if self.observing:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._in_head = False
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_result(self._status)

    def on_body(self, body: bytes) -> None:
        if self._cut:
            return
        held = self._body
        room = MAX_HELD - len(held)
        if len(body) <= room:
            held += body
            return
        held += body[:room]
        self._cut = True
        self._finish(keep=False)  # stop reading a huge body: close the connection

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: wait for the final one
            observing = self.observing
            self._reset()
            self.observing = observing
            return
        if not self._cut:
            self._finish(keep=self._parser.should_keep_alive())

    # -- driving ---------------------------------------------------------------------------

    def _finish(self, *, keep: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        waiter.set_result(
            Answer(
                self._status,
                bytes(self._body),
                self._retry_after,
                rate_reset=self._rate_reset,
                location=self._location,
                cut=self._cut,
            )
        )
        if not keep:
            self.close()

    def _fail(self, kind: str) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(None, error=kind))
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_result(0)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def request(self, data: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        observing = self.observing
        self._reset()
        self.observing = observing
        self._waiter = self._loop.create_future()
        self.transport.write(data)
        return self._waiter

    def start_tunnel(self, data: bytes) -> asyncio.Future[int]:
        """Write a CONNECT; the future gets the proxy's status (0: it closed or was no HTTP)."""
        assert self.transport is not None
        self.tunnel = self._loop.create_future()
        self.transport.write(data)
        return self.tunnel

    def tunnel_ready(self, transport: asyncio.Transport) -> None:
        """The TLS transport over the tunnel is up: frame answers on it from a fresh parser."""
        self.transport = transport
        self.tunnel = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset()


_Target = tuple[tuple[str, int, bool, str | None], bytes, str, str, int, "Proxy | None"]


class FastTransport:
    """Keep-alive HTTP/1.1 client for the sync hot path (see the module docstring).

    ``headers`` go with every request (credentials included: only to the origin);
    ``user_agent`` defaults to the process setting (``--user-agent``) and may be set per
    client (webhooks send ``Amplitude/Webhook/1.0``). ``overrides``: the proxy (``""``: no
    proxy at all), trust, observers and redactor to use instead of the settings in force and
    the environment. ``send`` never raises for HTTP or network failures.
    """

    def __init__(
        self,
        *,
        workers: int,
        headers: Mapping[str, str],
        timeout: float = 30.0,
        user_agent: str | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        settings = current()
        merged = {"Content-Type": "application/json", **headers}
        merged = {k: v for k, v in merged.items() if k.lower() not in ("host", "user-agent")}
        agent = user_agent if user_agent is not None else settings.user_agent
        self._items = [("User-Agent", agent), *merged.items()]
        try:
            lines = "".join(f"{k}: {v}\r\n" for k, v in self._items).encode("latin-1")
        except UnicodeEncodeError:
            bad = next(k for k, v in self._items if not _latin1(f"{k}{v}"))
            raise InputError(
                f"header {bad!r}: the value has a character outside latin-1 (HTTP headers"
                " cannot carry it)"
            ) from None
        self._header_lines = lines
        self._timeout = timeout
        self._overrides = overrides = overrides or Overrides()
        self._ssl: ssl.SSLContext | None = None
        self._observers = (
            overrides.observers if overrides.observers is not None else settings.observers
        )
        self._redactor = overrides.redactor or Redactor.for_headers(merged)
        self._idle: dict[tuple[str, int, bool, str | None], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._targets: dict[tuple[str, str], _Target] = {}

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl_context(self._overrides.trust())
        return self._ssl

    def _target(self, method: str, url: str) -> _Target:
        cached = self._targets.get((method, url))
        if cached is not None:
            return cached
        from yarl import URL

        parsed = URL(url)
        secure = parsed.scheme == "https"
        host = parsed.raw_host or ""
        port = parsed.port or (443 if secure else 80)
        authority = parsed.raw_authority.rpartition("@")[2]
        proxy_url = self._overrides.proxy_for(url)
        proxy = Proxy.parse(proxy_url) if proxy_url else None
        target = parsed.raw_path_qs or "/"
        extra = b""
        if proxy is not None and not secure:
            target = f"http://{authority}{target}"  # absolute-form, relayed as it is
            if proxy.authorization:
                extra = f"Proxy-Authorization: {proxy.authorization}\r\n".encode("latin-1")
        head = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("latin-1")
        key = (host, port, secure, proxy.url if proxy else None)
        cached = (key, head + extra + self._header_lines, host, authority, port, proxy)
        if len(self._targets) < 1024:
            self._targets[(method, url)] = cached
        return cached

    async def _connect(
        self, host: str, authority: str, port: int, secure: bool, proxy: Proxy | None
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        if proxy is None:
            _, conn = await loop.create_connection(
                lambda: _Connection(loop),
                host,
                port,
                ssl=self._context() if secure else None,
                server_hostname=host if secure else None,
            )
        else:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    proxy.host,
                    proxy.port,
                    ssl=self._context() if proxy.scheme == "https" else None,
                    server_hostname=proxy.host if proxy.scheme == "https" else None,
                )
            except ConnectionRefusedError:
                raise _ProxyFailed(f"proxy {proxy.url} refused the connection") from None
            except ssl.SSLError:
                raise _ProxyFailed(f"proxy {proxy.url}: TLS handshake failed") from None
            except OSError as exc:
                raise _ProxyFailed(f"proxy {proxy.url} is unreachable: {exc}") from None
            if secure:
                await self._tunnel(loop, conn, host, port, proxy)
        self._all.add(conn)
        return conn

    async def _tunnel(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        host: str,
        port: int,
        proxy: Proxy,
    ) -> None:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # A CONNECT carries the proxy's own credential only: none of the target's headers.
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        lines.append(f"User-Agent: {self._items[0][1]}")
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        status = await conn.start_tunnel(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not 200 <= status < 300:
            conn.abort()
            said = f"answered {status}" if status else "closed the connection"
            raise _ProxyFailed(f"proxy {proxy.url} {said} to CONNECT {authority}")
        assert conn.transport is not None
        tls = await loop.start_tls(conn.transport, conn, self._context(), server_hostname=host)
        if tls is None:
            raise ConnectionResetError("the tunnel closed during the TLS handshake")
        conn.tunnel_ready(tls)

    async def send(self, method: str, url: str, body: bytes) -> Answer:
        """Send one request; every failure is an :class:`Answer`, never an exception."""
        if self._observers:
            return await self._send_observed(method, url, body)
        key, head, host, authority, port, proxy = self._target(method, url)
        data = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        conn = self._idle_connection(key)
        if conn is None:
            try:
                conn = await asyncio.wait_for(
                    self._connect(host, authority, port, key[2], proxy), self._timeout
                )
            except BaseException as exc:
                return _connect_failure(exc)
        return await self._exchange(conn, key, data, deadline - loop.time())

    def _idle_connection(self, key: tuple[str, int, bool, str | None]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        while idle and idle[-1].closed:  # closed by the server while idle
            self._all.discard(idle.pop())
        return idle.pop() if idle else None

    async def _exchange(
        self,
        conn: _Connection,
        key: tuple[str, int, bool, str | None],
        data: bytes,
        remaining: float,
    ) -> Answer:
        if remaining <= 0:
            conn.abort()
            self._all.discard(conn)
            return Answer(None, error=outcomes.TIMEOUT)
        waiter = conn.request(data)
        # A timer on the answer, not asyncio.wait_for: before Python 3.12 wait_for swallows a
        # cancellation that arrives together with the answer, and Ctrl-C would be lost.
        timer = asyncio.get_running_loop().call_later(remaining, _expire, waiter)
        try:
            answer = await waiter
        except BaseException:
            conn.abort()  # cancelled mid-answer: the connection's state is unknown
            self._all.discard(conn)
            raise
        finally:
            timer.cancel()
        if answer is _EXPIRED:
            conn.abort()
            self._all.discard(conn)
            return Answer(None, error=outcomes.TIMEOUT)
        if conn.closed:
            self._all.discard(conn)
        else:
            self._idle.setdefault(key, []).append(conn)
        return answer

    async def _send_observed(self, method: str, url: str, body: bytes) -> Answer:
        key, head, host, authority, port, proxy = self._target(method, url)
        data = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        started_wall = time.time()
        started = time.perf_counter()
        conn = self._idle_connection(key)
        connected = started
        answer: Answer | None = None
        if conn is None:
            try:
                conn = await asyncio.wait_for(
                    self._connect(host, authority, port, key[2], proxy), self._timeout
                )
            except BaseException as exc:
                answer = _connect_failure(exc)
            connected = time.perf_counter()
        if answer is None and conn is not None:
            conn.observing = True
            answer = await self._exchange(conn, key, data, self._timeout - (connected - started))
        assert answer is not None
        ended = time.perf_counter()
        first = conn.first_at if conn is not None and conn.first_at else ended
        redact = self._redactor
        request_headers = [
            ("Host", authority),
            *self._items,
            ("Content-Length", str(len(body))),
        ]
        exchange = Exchange(
            method=method,
            url=redact.text(url),
            request_headers=redact.headers(request_headers),
            request_body=redact.bytes(body),
            started=started_wall,
            status=answer.status,
            reason=(conn.reason.decode("latin-1") if conn is not None else ""),
            response_headers=[
                (n.decode("latin-1"), v.decode("latin-1"))
                for n, v in (conn.headers if conn is not None else [])
            ],
            response_body=redact.bytes(answer.body),
            response_cut=answer.cut,
            response_size=len(answer.body) if not answer.cut else None,
            connect_ms=(connected - started) * 1000,
            send_ms=0.0,
            wait_ms=max(0.0, first - connected) * 1000,
            receive_ms=max(0.0, ended - first) * 1000,
            error=answer.detail or answer.error,
            proxy=proxy.url if proxy is not None else None,
        )
        if exchange.response_headers:
            exchange.response_headers = redact.headers(exchange.response_headers)
        notify(self._observers, exchange)
        if conn is not None:
            conn.observing = False
        return answer

    async def close(self) -> None:
        """Close every connection (abruptly: a TLS close would need the loop to run on)."""
        for conn in self._all:
            conn.abort()
        self._all.clear()
        self._idle.clear()


class _ProxyFailed(Exception):
    """The proxy itself failed (refused, unreachable, or would not CONNECT)."""


_EXPIRED = Answer(None, error=outcomes.TIMEOUT)


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


def _connect_failure(exc: BaseException) -> Answer:
    if isinstance(exc, _ProxyFailed):
        return Answer(None, error=PROXY, detail=str(exc))
    if isinstance(exc, asyncio.TimeoutError):
        return Answer(None, error=outcomes.TIMEOUT)
    if isinstance(exc, ConnectionRefusedError):
        return Answer(None, error=outcomes.REFUSED)
    if isinstance(exc, ssl.SSLError):
        return Answer(None, error=outcomes.TLS, detail=str(exc))
    if isinstance(exc, ConnectionError):
        return Answer(None, error=outcomes.RESET)
    if isinstance(exc, OSError):
        return Answer(None, error=outcomes.NETWORK, detail=str(exc))
    raise exc


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


__all__ = ["Answer", "FastTransport"]

"""Raw-socket HTTP servers and a recording proxy on 127.0.0.1, for the wire tests.

- :class:`ScriptServer` answers each request with scripted pieces (bytes, pauses between them,
  a close), so every framing case (chunks split across reads, close-delimited bodies, 1xx,
  trickling) is written out byte for byte; it records every request it got.
- :class:`RecordingProxy` is a small forward proxy: ``CONNECT host:port`` tunnels to the
  upstream it maps that host to, absolute-form requests are relayed to it. It records every
  byte it received from clients before a tunnel (the CONNECT heads, the relayed requests), so a
  test can assert what a proxy did and did not see.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

Piece = bytes | float  # bytes to send, or seconds to pause
CLOSE = b""  # as a piece: close the connection here
_Server = TypeVar("_Server", bound="LoopbackServer")


@dataclass
class Received:
    """One request as the server read it."""

    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def read_request(conn: socket.socket, buffer: bytes) -> tuple[Received, bytes] | None:
    """One request from ``conn`` (Content-Length bodies only); None when it closed."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return Received(head, rest[:length]), rest[length:]


class Requests:
    """The requests arriving on one connection, in order, until it closes; ``pending`` holds
    what came after the last one (the first bytes of a tunnel, say)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.pending = b""

    def __iter__(self) -> Iterator[Received]:
        while (got := read_request(self.conn, self.pending)) is not None:
            request, self.pending = got
            yield request


class LoopbackServer:
    """A listening socket on 127.0.0.1 (port 0, or ``sock``, bound already) that hands each
    connection to ``handle`` on its own thread; counts connections. Subclasses write
    ``handle``; closing stops accepting. With ``tls`` every connection is TLS first (an
    ``https://`` URL; a failed handshake is dropped before ``handle``)."""

    def __init__(
        self, *, tls: ssl.SSLContext | None = None, sock: socket.socket | None = None
    ) -> None:
        self.tls = tls
        self.connections = 0
        self._lock = threading.Lock()
        if sock is None:
            sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        else:  # a port the test holds already (bound, refusing connections until now)
            sock.listen(64)
        self.sock = sock
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        """Serve one connection (on its own thread); closing it is the caller's job."""
        raise NotImplementedError

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listening socket was closed
            while True:
                conn, _ = self.sock.accept()
                with self._lock:
                    self.connections += 1
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handle(conn)
        except (OSError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ScriptServer(LoopbackServer):
    """Answers request ``n`` (1-based, over all connections) with ``script(n)`` pieces."""

    def __init__(
        self,
        script: Callable[[int], Sequence[Piece]],
        *,
        tls: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.script = script
        self.received: list[Received] = []
        super().__init__(tls=tls, sock=sock)

    def handle(self, conn: socket.socket) -> None:
        for request in Requests(conn):
            with self._lock:
                self.received.append(request)
                number = len(self.received)
            for piece in self.script(number):
                if isinstance(piece, float):
                    time.sleep(piece)  # the trickle the client's own deadlines are tested on
                elif piece == CLOSE:
                    return
                else:
                    conn.sendall(piece)


@contextlib.contextmanager
def handler_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stdlib ``ThreadingHTTPServer`` running ``handler`` on 127.0.0.1; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def answer(
    status: int = 200, body: bytes = b"ok", headers: str = "", version: str = "1.1"
) -> bytes:
    """A complete answer with a Content-Length."""
    reason = {200: "OK", 204: "No Content", 307: "Temporary Redirect"}.get(status, "X")
    return (
        f"HTTP/{version} {status} {reason}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


class RecordingProxy(LoopbackServer):
    """A forward proxy on 127.0.0.1 that records what clients sent it (see module docstring).

    ``upstreams`` maps ``host:port`` as the client named it to the loopback port to reach;
    unmapped targets go to 127.0.0.1 at the named port. ``refuse_connect`` answers every
    CONNECT with that status instead of tunnelling. ``tls`` makes it an ``https://`` proxy.
    """

    def __init__(
        self,
        upstreams: dict[str, int] | None = None,
        refuse_connect: int | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstreams = dict(upstreams or {})
        self.refuse_connect = refuse_connect
        self.heads: list[bytes] = []
        self.raw = bytearray()
        super().__init__(tls=tls)

    def seen(self) -> bytes:
        """Every byte clients sent before any tunnel was up (heads and relayed requests)."""
        with self._lock:
            return bytes(self.raw)

    def _upstream(self, authority: str) -> socket.socket:
        port = self.upstreams.get(authority)
        if port is None:
            port = int(authority.rpartition(":")[2] or 80)
        return socket.create_connection(("127.0.0.1", port), timeout=10)

    def handle(self, conn: socket.socket) -> None:
        requests = Requests(conn)
        for request in requests:
            with self._lock:
                self.heads.append(request.head)
                self.raw += request.head + b"\r\n\r\n" + request.body
            method, target, _ = request.request_line.split(" ", 2)
            if method == "CONNECT":
                if self.refuse_connect is not None:
                    conn.sendall(answer(self.refuse_connect, b"no"))
                    return
                try:
                    upstream = self._upstream(target)
                except OSError:
                    conn.sendall(answer(502, b"bad gateway"))
                    return
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._pipe(conn, upstream, requests.pending)
                return
            match = re.match(r"https?://([^/]+)(/.*)?$", target)
            if not match:
                conn.sendall(answer(400, b"not a proxy request"))
                return
            authority, path = match.group(1), match.group(2) or "/"
            if ":" not in authority:
                authority += ":80"
            try:
                upstream = self._upstream(authority)
            except OSError:
                conn.sendall(answer(502, b"bad gateway"))
                return
            with upstream:
                _first, _, rest = request.head.partition(b"\r\n")
                line = f"{method} {path} HTTP/1.1".encode()
                upstream.sendall(line + b"\r\n" + rest + b"\r\n\r\n" + request.body)
                self._relay_answer(upstream, conn)

    @staticmethod
    def _relay_answer(upstream: socket.socket, conn: socket.socket) -> None:
        # Enough for the tests' answers: a head with a Content-Length, or read until close.
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = upstream.recv(65536)
            if not chunk:
                conn.sendall(data)
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if match:
            length = int(match.group(1))
            while len(rest) < length:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                rest += chunk
        conn.sendall(head + b"\r\n\r\n" + rest)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket, pending: bytes) -> None:
        with b:
            if pending:
                b.sendall(pending)
            sockets = [a, b]
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if isinstance(sock, ssl.SSLSocket):  # records decrypted, not yet read
                        while sock.pending():
                            data += sock.recv(sock.pending())
                    (b if sock is a else a).sendall(data)

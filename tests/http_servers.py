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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Piece = bytes | float  # bytes to send, or seconds to pause
CLOSE = b""  # as a piece: close the connection here


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


class ScriptServer:
    """Answers request ``n`` (1-based, over all connections) with ``script(n)`` pieces."""

    def __init__(
        self,
        script: Callable[[int], Sequence[Piece]],
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.script = script
        self.tls = tls
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            thread.start()

    def _handle(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            buffer = b""
            while True:
                got = read_request(conn, buffer)
                if got is None:
                    return
                request, buffer = got
                with self._lock:
                    self.received.append(request)
                    number = len(self.received)
                for piece in self.script(number):
                    if isinstance(piece, float):
                        time.sleep(piece)
                    elif piece == CLOSE:
                        return
                    else:
                        conn.sendall(piece)
        except (OSError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ScriptServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def answer(
    status: int = 200, body: bytes = b"ok", headers: str = "", version: str = "1.1"
) -> bytes:
    """A complete answer with a Content-Length."""
    reason = {200: "OK", 204: "No Content", 307: "Temporary Redirect"}.get(status, "X")
    return (
        f"HTTP/{version} {status} {reason}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


@dataclass
class RecordingProxy:
    """A forward proxy on 127.0.0.1 that records what clients sent it (see module docstring).

    ``upstreams`` maps ``host:port`` as the client named it to the loopback port to reach;
    unmapped targets go to 127.0.0.1 at the named port. ``refuse_connect`` answers every
    CONNECT with that status instead of tunnelling.
    """

    upstreams: dict[str, int] = field(default_factory=dict)
    refuse_connect: int | None = None
    heads: list[bytes] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> bytes:
        """Every byte clients sent before any tunnel was up (heads and relayed requests)."""
        with self._lock:
            return bytes(self.raw)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _upstream(self, authority: str) -> socket.socket:
        port = self.upstreams.get(authority)
        if port is None:
            port = int(authority.rpartition(":")[2] or 80)
        return socket.create_connection(("127.0.0.1", port), timeout=10)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                got = read_request(conn, buffer)
                if got is None:
                    return
                request, buffer = got
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
                    self._pipe(conn, upstream, buffer)
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
                    (b if sock is a else a).sendall(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

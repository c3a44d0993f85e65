"""Requests and exchanges in curl's shape: ``-v`` (stderr) and ``--dry-run`` (stdout).

    > POST /lists HTTP/1.1
    > Host: partner.example
    > Authorization: Basic ***
    >
    {
      "name": "[Amplitude] Power Users: 7y6y3ij"
    }
    < HTTP/1.1 200 OK
    < Content-Type: application/json
    <
    {"listId": "42"}

Bodies are JSON pretty-printed when they parse, shown as text otherwise, control characters
escaped, and cut at :data:`BODY_LIMIT` bytes with a line saying how much was cut. Headers
arrive here already redacted (the HTTP layer's observers get redacted exchanges; dry runs pass
redacted headers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from cohortctl.http.observe import Exchange
from cohortctl.http.text import terminal_text

BODY_LIMIT = 64 * 1024
_LINES_PER_WRITE = 2000

_GREEN, _YELLOW, _RED, _RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[0m"


def colour_enabled(stream: IO[str]) -> bool:
    """Colour only on a terminal, never with ``NO_COLOR`` set or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def status_style(status: int | None) -> str:
    """The colour name of a status: 2xx green, 429 and redirects yellow, others red."""
    if status is not None and 200 <= status < 300:
        return "green"
    if status is not None and (status == 429 or 300 <= status < 400):
        return "yellow"
    return "red"


def paint(text: str, status: int | None, *, colour: bool) -> str:
    """``text`` in the colour of ``status`` when ``colour`` is on."""
    if not colour:
        return text
    code = {"green": _GREEN, "yellow": _YELLOW, "red": _RED}[status_style(status)]
    return f"{code}{text}{_RESET}"


def body_lines(
    body: bytes | str | Any, *, limit: int | None = BODY_LIMIT, more: int = 0
) -> list[str]:
    """A body as lines: JSON pretty-printed, cut at ``limit`` bytes (None: never) with a marker.

    ``body`` may be bytes, text or already-parsed JSON data. ``more`` counts bytes that never
    reached us (an answer the HTTP layer already cut); the marker includes them.
    """
    if isinstance(body, bytes | bytearray):
        if not body:
            return []
        text = bytes(body).decode("utf-8", errors="replace")
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    elif isinstance(body, str):
        if not body:
            return []
        text = body
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    else:
        text = json.dumps(body, indent=2, ensure_ascii=False)
    cut = more
    if limit is not None:
        encoded = text.encode("utf-8")
        if len(encoded) > limit:
            cut += len(encoded) - limit
            text = encoded[:limit].decode("utf-8", errors="ignore")
    lines = terminal_text(text).split("\n")
    if cut:
        shown = f"{limit:,}" if limit is not None else "what arrived"
        lines.append(f"[… {cut:,} more bytes not shown; the body is cut at {shown} bytes]")
    return lines


def _target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target, parts.netloc


def request_lines(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: Any,
    *,
    http: str = "HTTP/1.1",
    limit: int | None = BODY_LIMIT,
) -> list[str]:
    """``> `` lines for the request line and headers (a Host first), then the body."""
    target, host = _target(url)
    pairs = list(headers)
    lines = [f"> {method} {target} {http}"]
    if not any(name.lower() == "host" for name, _ in pairs):
        lines.append(f"> Host: {host}")
    lines += [f"> {name}: {terminal_text(value, keep_newlines=False)}" for name, value in pairs]
    lines.append(">")
    return lines + body_lines(body, limit=limit)


def response_lines(exchange: Exchange, *, colour: bool = False) -> list[str]:
    """``< `` lines for the status line and headers, then the body; or why there was none."""
    if exchange.status is None:
        why = terminal_text(exchange.error or "no answer", keep_newlines=False)
        return [paint(f"* no answer: {why}", None, colour=colour)]
    status_line = f"< {exchange.http_version} {exchange.status} {exchange.reason}".rstrip()
    lines = [paint(status_line, exchange.status, colour=colour)]
    lines += [
        f"< {name}: {terminal_text(value, keep_newlines=False)}"
        for name, value in exchange.response_headers
    ]
    lines.append("<")
    more = 0
    if exchange.response_cut and exchange.response_size is not None:
        more = max(0, exchange.response_size - len(exchange.response_body))
    lines += body_lines(exchange.response_body, more=more)
    if exchange.response_cut and not more:
        lines.append("[… the rest of the body was not read]")
    return lines


def exchange_lines(exchange: Exchange, *, colour: bool = False) -> list[str]:
    """One whole exchange: where it went, the request, the answer, how long it took."""
    lines: list[str] = []
    if exchange.proxy:
        lines.append(f"* via proxy {exchange.proxy}")
    lines += request_lines(
        exchange.method,
        exchange.url,
        exchange.request_headers,
        exchange.request_body,
        http=exchange.http_version or "HTTP/1.1",
    )
    lines += response_lines(exchange, colour=colour)
    lines.append(f"* {exchange.total_ms:,.0f} ms")
    return lines


class ExchangePrinter:
    """An observer writing every exchange to a stream (stderr), whole, one at a time."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, exchange: Exchange) -> None:
        stream = self._stream or sys.stderr
        text = "\n".join(exchange_lines(exchange, colour=colour_enabled(stream))) + "\n\n"
        with self._lock:
            stream.write(text)
            stream.flush()


def dry_run_block(
    number: int,
    total: int,
    title: str,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: Any,
) -> list[str]:
    """One request of a dry run: a ``#`` title line, then the request as ``-v`` shows it,
    its body whole."""
    return [
        f"# {number}/{total} {title}",
        *request_lines(method, url, headers, body, limit=None),
        "",
    ]


def write_lines(lines: Sequence[str], stream: IO[str] | None = None) -> None:
    """Write ``lines`` to ``stream`` (default stdout) and flush."""
    target = stream or sys.stdout
    # In pieces: one huge write to a pipe its reader closed does not raise, so a `| head`
    # would not stop the command; a piece-wise write does.
    for start in range(0, len(lines), _LINES_PER_WRITE):
        target.write("\n".join(lines[start : start + _LINES_PER_WRITE]) + "\n")
        target.flush()


@dataclass(frozen=True)
class EnvRef:
    """A header value (or ``-u`` user) the shell fills in from environment variables.

    ``text`` holds only ``$NAME`` references and literal text without ``"``, ``\\`` or
    backquotes, so it is safe inside double quotes.
    """

    text: str


def curl_command(
    method: str,
    url: str,
    headers: Sequence[tuple[str, str | EnvRef]],
    body: bytes,
    *,
    user: EnvRef | None = None,
) -> str:
    """A runnable ``curl`` command for one request; credentials only as ``$ENV`` references."""
    parts = ["curl", "--silent", "--show-error", "--request", method, shlex.quote(url)]
    if user is not None:
        parts += ["--user", f'"{user.text}"']
    for name, value in headers:
        if name.lower() in ("host", "content-length"):
            continue
        if isinstance(value, EnvRef):
            parts += ["--header", f'"{name}: {value.text}"']
        else:
            parts += ["--header", shlex.quote(f"{name}: {value}")]
    if body:
        parts += ["--data-binary", shlex.quote(body.decode("utf-8", errors="replace"))]
    return " \\\n  ".join(_pairs(parts))


def _pairs(parts: list[str]) -> list[str]:
    # one option and its value per line: "curl … URL", then "--header 'X: y'", …
    lines = [" ".join(parts[:6])]
    rest = parts[6:]
    lines += [f"{rest[i]} {rest[i + 1]}" for i in range(0, len(rest), 2)]
    return lines


def env_name_for_header(name: str) -> str:
    """The variable a dry run's curl command reads an extra credential header from."""
    return "COHORTCTL_HEADER_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()

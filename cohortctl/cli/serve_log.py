"""The embedded servers' request log: one line per request on stderr, never a traceback.

    10:04:31 POST /lists 200 3ms
    10:04:31 POST /lists/9/add 400 1ms: userIds: expected a list of strings
    10:04:32 client went away (ConnectionResetError) during POST /batch

Installed by ``cohortctl serve``; ``--quiet`` leaves it out. Colours follow the status on a
terminal (never with ``NO_COLOR``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from cohortctl.cli.exchanges import colour_enabled, paint
from cohortctl.http.har import redact_url
from cohortctl.http.text import terminal_text

_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, asyncio.CancelledError)


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def _write(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def rejection_reason(body: bytes | str | None, limit: int = 120) -> str:
    """Why a request was turned away, from the answer's body: its error message if JSON."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = []
        for key in ("error", "message", "field", "reason", "detail", "errors"):
            value = data.get(key)
            if value:
                parts.append(value if isinstance(value, str) else json.dumps(value))
        if parts:
            text = ": ".join(parts[:1]) + (" (" + ", ".join(parts[1:]) + ")" if parts[1:] else "")
    flat = terminal_text(" ".join(text.split()), keep_newlines=False)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def request_line(method: str, path: str, status: int, ms: float, why: str = "") -> str:
    """One log line: time, method, path, status, milliseconds, and why for a rejection.

    A key sent in the query (``?api_key=...``) is hidden as the recordings hide it."""
    shown_path = terminal_text(redact_url(path), keep_newlines=False)
    line = f"{_now()} {method} {shown_path} {status} {ms:.0f}ms"
    return f"{line}: {why}" if why else line


def install(app: Any) -> None:
    """Log every request ``app`` answers (an aiohttp Application, before it starts)."""
    from aiohttp import web

    colour = colour_enabled(sys.stderr)

    @web.middleware
    async def log_requests(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            ms = (time.perf_counter() - started) * 1000
            why = rejection_reason(exc.text) if exc.status >= 400 else ""
            _write(paint(request_line(request.method, request.path_qs, exc.status, ms, why),
                         exc.status, colour=colour))  # fmt: skip
            raise
        except _GONE as exc:
            path = terminal_text(request.path, keep_newlines=False)
            exc.cohortctl_logged = True  # type: ignore[union-attr]
            _write(f"{_now()} client went away ({type(exc).__name__}) during "
                   f"{request.method} {path}")  # fmt: skip
            raise
        ms = (time.perf_counter() - started) * 1000
        why = ""
        if response.status >= 400 and isinstance(response, web.Response):
            why = rejection_reason(response.body if isinstance(response.body, bytes) else None)
        _write(paint(request_line(request.method, request.path_qs, response.status, ms, why),
                     response.status, colour=colour))  # fmt: skip
        return response

    app.middlewares.insert(0, log_requests)


class OneLineErrors(logging.Handler):
    """aiohttp's and asyncio's error logs as one line each: a client going away, or the
    error's type and message; never a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if getattr(exc, "cohortctl_logged", False):
            return  # the request log already said so, with the request
        if isinstance(exc, _GONE) or "Connection reset" in record.getMessage():
            name = type(exc).__name__ if exc is not None else "connection reset"
            _write(f"{_now()} client went away ({name})")
            return
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        _write(f"{_now()} server error: {terminal_text(record.getMessage())}{detail}")


def quiet_tracebacks() -> Callable[[], None]:
    """Route aiohttp's and asyncio's error logging through :class:`OneLineErrors`; returns
    the undo."""
    handler = OneLineErrors(level=logging.ERROR)
    changed = []
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "asyncio"):
        logger = logging.getLogger(name)
        changed.append((logger, logger.propagate))
        logger.addHandler(handler)
        logger.propagate = False

    def undo() -> None:
        for logger, propagate in changed:
            logger.removeHandler(handler)
            logger.propagate = propagate

    return undo

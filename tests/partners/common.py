"""Pieces the reconstructions share: body parsing, Basic credentials, request counting."""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from typing import Any

from aiohttp import web


async def json_body(request: web.Request) -> Any:
    """The parsed JSON body, or :data:`MALFORMED` when it is not JSON."""
    raw = await request.read()
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        raw = b""  # gunicorn hands a chunked body to the app empty (partners.md, Flagsmith)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return MALFORMED


MALFORMED = object()


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """(username, password) of a Basic ``Authorization`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme != "Basic" or not token:
        return None
    try:
        user, _, password = base64.b64decode(token).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


class Window:
    """At most ``limit`` requests per ``seconds`` (sliding window); None: unlimited."""

    def __init__(self, limit: int | None, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.times: deque[float] = deque()

    def take(self) -> float | None:
        """None when the request may go on, else the seconds until the window frees."""
        if self.limit is None:
            return None
        now = time.monotonic()
        while self.times and now - self.times[0] >= self.seconds:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return self.seconds - (now - self.times[0])
        self.times.append(now)
        return None

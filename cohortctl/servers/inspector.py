"""What the inspector page shows: recent requests, lists seen, requests/s and latency series.

Both faces of ``serve partner`` (the receiver and the ``--forward`` proxy) feed one
:class:`Inspector` per request; the page (``/_cohortctl/ui``) polls
``/_cohortctl/inspect?since=ID`` for what is new. Bodies kept are cut at :data:`BODY_KEEP`
bytes and hold no credential (the caller scrubs them); at most ``keep`` requests are held,
and one counter per second for the last :data:`SERIES_SECONDS` seconds.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from cohortctl.http.har import redact_url
from cohortctl.http.redact import Redactor, is_sensitive_header
from cohortctl.partner.calls import default_call

ADMIN_PREFIX = "/_cohortctl/"
"""Where the servers' own pages and routes live (never a partner's path)."""
BODY_KEEP = 16 * 1024
SERIES_SECONDS = 120
DEFAULT_KEEP = 500
UI_FILE = "inspector.html"


def _cut(body: bytes) -> bytes:
    return body if len(body) <= BODY_KEEP else body[:BODY_KEEP]


def _text(body: bytes, full_size: int, redactor: Redactor | None) -> str:
    text = body.decode("utf-8", "replace")
    if redactor:
        text = redactor.text(text)
    return text + ("…" if full_size > len(body) else "")


@dataclass
class Seen:
    """One request as the inspector shows it."""

    id: int
    at: float
    method: str
    path: str
    call: str | None
    status: int | None
    latency_ms: float
    problem: str | None
    request_body: bytes
    response_body: bytes
    sizes: tuple[int, int] = (0, 0)
    error: str | None = None
    users: int = 0
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``ok`` (a valid request that got a 2xx); credentials scrubbed."""
        redactor = Redactor.for_headers(self.credentials) if self.credentials else None
        return {
            "id": self.id,
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "call": self.call,
            "status": self.status,
            "ok": self.problem is None and self.status is not None and 200 <= self.status < 300,
            "latency_ms": round(self.latency_ms, 2),
            "problem": self.problem,
            "error": self.error,
            "users": self.users,
            "request_body": _text(self.request_body, self.sizes[0], redactor),
            "response_body": _text(self.response_body, self.sizes[1], redactor),
        }


@dataclass
class _Second:
    requests: int = 0
    latency_total: float = 0.0
    latency_max: float = 0.0


@dataclass
class SeenList:
    """A list id seen in forwarded traffic: its name (from the create) and users sent."""

    list_id: str
    name: str | None = None
    added: int = 0
    removed: int = 0


@dataclass
class Inspector:
    """Recent requests and per-second counters, fed by the server, read by the page."""

    keep: int = DEFAULT_KEEP
    clock: Callable[[], float] = time.time
    total: int = 0
    _recent: deque[Seen] = field(init=False)
    _seconds: dict[int, _Second] = field(default_factory=dict)
    lists: dict[str, SeenList] = field(default_factory=dict)
    traits: dict[str, list[int]] = field(default_factory=dict)  # key -> [true, false] sent

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.keep)

    def add(
        self,
        *,
        method: str,
        path: str,
        call: str | None,
        status: int | None,
        latency_ms: float,
        problem: str | None = None,
        request_body: bytes = b"",
        response_body: bytes = b"",
        error: str | None = None,
        users: int = 0,
        at: float | None = None,
        credentials: tuple[tuple[str, str], ...] = (),
    ) -> Seen:
        """Record one request; ``credentials`` (its credential headers) are scrubbed from the
        bodies when they are shown."""
        when = self.clock() if at is None else at
        self.total += 1
        seen = Seen(
            self.total,
            when,
            method,
            path,
            call,
            status,
            latency_ms,
            problem,
            _cut(request_body),
            _cut(response_body),
            (len(request_body), len(response_body)),
            error,
            users,
            credentials,
        )
        self._recent.append(seen)
        second = int(when)
        bucket = self._seconds.get(second)
        if bucket is None:
            bucket = self._seconds[second] = _Second()
            for old in [s for s in self._seconds if s <= second - SERIES_SECONDS]:
                del self._seconds[old]
        bucket.requests += 1
        bucket.latency_total += latency_ms
        bucket.latency_max = max(bucket.latency_max, latency_ms)
        return seen

    def saw_list(
        self, list_id: str, *, name: str | None = None, added: int = 0, removed: int = 0
    ) -> None:
        """Count what forwarded traffic did to ``list_id`` (forward mode)."""
        seen = self.lists.setdefault(list_id, SeenList(list_id))
        if name is not None:
            seen.name = name
        seen.added += added
        seen.removed += removed

    def saw_trait(self, key: str, value: bool) -> None:
        """Count one user's trait ``key`` set to ``value`` in forwarded traffic."""
        counts = self.traits.setdefault(key, [0, 0])
        counts[0 if value else 1] += 1

    def seen_traits(self) -> list[dict[str, Any]]:
        """The traits of forwarded traffic: how many times each was sent true and false."""
        return [
            {"key": key, "true": counts[0], "false": counts[1]}
            for key, counts in sorted(self.traits.items())
        ]

    def since(self, after: int, limit: int = 200) -> list[dict[str, Any]]:
        """Requests with an id above ``after``, oldest first, at most the last ``limit``."""
        fresh = [s for s in self._recent if s.id > after]
        return [s.to_dict() for s in fresh[-limit:]]

    def series(self, seconds: int = 60) -> list[dict[str, Any]]:
        """One point per second for the last ``seconds``: requests, mean and max latency."""
        now = int(self.clock())
        points = []
        for second in range(now - seconds + 1, now + 1):
            bucket = self._seconds.get(second)
            count = bucket.requests if bucket else 0
            points.append(
                {
                    "t": second,
                    "requests": count,
                    "latency_ms": round(bucket.latency_total / count, 2)
                    if bucket and count
                    else None,
                    "latency_max_ms": round(bucket.latency_max, 2) if bucket and count else None,
                }
            )
        return points

    def snapshot(
        self,
        after: int,
        *,
        mode: str,
        lists: Iterable[dict[str, Any]],
        traits: Iterable[dict[str, Any]],
        upstream: str | None = None,
    ) -> dict[str, Any]:
        """Everything the page needs after having seen request ``after``."""
        return {
            "mode": mode,
            "upstream": upstream,
            "total": self.total,
            "requests": self.since(after),
            "lists": list(lists),
            "traits": list(traits),
            "series": self.series(),
        }

    def seen_lists(self) -> list[dict[str, Any]]:
        """The lists of forwarded traffic, for the page (forward mode)."""
        return [
            {"listId": s.list_id, "name": s.name, "added": s.added, "removed": s.removed}
            for s in sorted(self.lists.values(), key=lambda s: (len(s.list_id), s.list_id))
        ]


def page() -> bytes:
    """The inspector page (one self-contained HTML file shipped with the package)."""
    return resources.files("cohortctl.servers").joinpath("static").joinpath(UI_FILE).read_bytes()


def dumps(data: Any) -> str:
    """Compact JSON for the poll answers."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def record_request(
    inspector: Inspector,
    request: web.Request,
    response: web.StreamResponse,
    reason: str | None,
    *,
    at: float,
    started: float,
) -> None:
    """Show one request the receiver answered (``reason``: why, for anything but success;
    a 599 with a reason is a connection it dropped on purpose)."""
    reset = response.status == 599 and reason is not None
    body = b""
    if not reset:
        with contextlib.suppress(Exception):
            body = await request.read()
    answer = response.body if isinstance(response, web.Response) else None
    inspector.add(
        method=request.method,
        path=redact_url(request.path_qs),
        call=default_call(request.method, request.path)[0],
        status=None if reset else response.status,
        latency_ms=(time.perf_counter() - started) * 1000,
        problem=None if reset or response.status < 400 else reason,
        request_body=body,
        response_body=answer if isinstance(answer, bytes) else b"",
        error=reason if reset else None,
        at=at,
        credentials=tuple((k, v) for k, v in request.headers.items() if is_sensitive_header(k)),
    )


def since(request: web.Request) -> int:
    """The ``since`` query parameter of a poll (0 when absent or not a number)."""
    text = request.query.get("since", "0")
    return int(text) if text.isdigit() else 0


async def ui(request: web.Request) -> web.StreamResponse:
    """``GET /_cohortctl/ui``: the inspector page (live, by polling ``inspect``)."""
    return web.Response(body=page(), content_type="text/html", charset="utf-8")

"""Statsig's console API for ID-list segments (partners.md).

``PATCH /console/v1/segments/{id}/id_list`` ``{"ids": [...]}`` (at most 100,000) adds,
``DELETE`` on the same path with the same body removes; header ``STATSIG-API-KEY``; about 12
requests per 10 s (429 above); 409 while a reset is in progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from tests.partners.common import MALFORMED, Window, json_body

MAX_IDS = 100_000


@dataclass
class Statsig:
    """Settings and memory: each ID-list segment's ids."""

    key: str
    segments: dict[str, set[str]] = field(default_factory=dict)
    accept_any_key: bool = False  # broken
    ids_field: str = "ids"  # broken when not ids
    rate_limit: int | None = 12
    window_s: float = 10.0
    resetting: set[str] = field(default_factory=set)
    requests: int = 0
    throttled: int = 0

    def __post_init__(self) -> None:
        self._window = Window(self.rate_limit, self.window_s)

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"status": status, "message": message}, status=status)

    async def id_list(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        key = request.headers.get("STATSIG-API-KEY")
        if not key or (key != self.key and not self.accept_any_key):
            return self._error(401, "Invalid or missing STATSIG-API-KEY")
        if self._window.take() is not None:
            self.throttled += 1
            return self._error(429, "Rate limit exceeded")
        segment = request.match_info["segment"]
        if segment not in self.segments:
            return self._error(404, "Segment not found")
        if segment in self.resetting:
            return self._error(409, "A reset of this segment is in progress")
        body = await json_body(request)
        if body is MALFORMED or not isinstance(body, dict):
            return self._error(400, "body is not JSON")
        ids = body.get(self.ids_field)
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return self._error(400, f"{self.ids_field} must be a non-empty list of strings")
        if len(ids) > MAX_IDS:
            return self._error(400, f"at most {MAX_IDS} ids")
        if request.method == "PATCH":
            self.segments[segment].update(ids)
        else:
            self.segments[segment].difference_update(ids)
        return web.json_response({"message": "ID list updated", "data": {"count": len(ids)}})

    def app(self) -> web.Application:
        """The aiohttp app of this receiver."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        path = "/console/v1/segments/{segment}/id_list"
        app.router.add_route("PATCH", path, self.id_list)
        app.router.add_route("DELETE", path, self.id_list)
        return app

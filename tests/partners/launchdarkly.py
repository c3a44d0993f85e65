"""LaunchDarkly's synced-segment endpoint for Amplitude, as partners.md describes it.

One endpoint per environment; ``Authorization: TOKEN``; body ``{"environmentId", "batch":
[{"userId", "cohortName", "cohortId", "cohortUrl", "value"}]}``; 204 success, 400, 403 (not
401), 429 with ``X-Ratelimit-Reset`` (epoch ms, no ``Retry-After``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.partners.common import MALFORMED, Window, json_body

PATH = "/api/v2/segment-targets/amplitude"
ITEM_KEYS = {"userId", "cohortName", "cohortId", "cohortUrl", "value"}


@dataclass
class LaunchDarkly:
    """Settings and memory: who is in each synced segment (by cohort id)."""

    token: str
    environment_id: str
    accept_any_key: bool = False  # broken
    batch_field: str = "batch"  # broken when not batch
    rate_limit: int | None = None  # requests per window; None: unlimited
    window_s: float = 10.0
    segments: dict[str, set[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    throttled: int = 0

    def __post_init__(self) -> None:
        self._window = Window(self.rate_limit, self.window_s)

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message}, status=status)

    async def sync(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization")
        if not token or (token != self.token and not self.accept_any_key):
            return self._error(403, "unauthorized", "Invalid access token")
        wait = self._window.take()
        if wait is not None:
            self.throttled += 1
            reset = int((time.time() + wait) * 1000)
            return web.json_response(
                {"code": "rate_limited", "message": "Rate limited"},
                status=429,
                headers={"X-Ratelimit-Reset": str(reset)},
            )
        body = await json_body(request)
        if body is MALFORMED or not isinstance(body, dict):
            return self._error(400, "invalid_request", "body is not JSON")
        if body.get("environmentId") != self.environment_id:
            return self._error(400, "invalid_request", "unknown environmentId")
        batch = body.get(self.batch_field)
        if not isinstance(batch, list) or not batch:
            return self._error(400, "invalid_request", f"{self.batch_field} is required")
        for item in batch:
            if not isinstance(item, dict) or set(item) != ITEM_KEYS:
                return self._error(400, "invalid_request", f"each item has exactly {ITEM_KEYS}")
            if not isinstance(item["value"], bool) or not isinstance(item["userId"], str):
                return self._error(400, "invalid_request", "value is a boolean, userId a string")
            if not str(item["cohortUrl"]).startswith("https://"):
                return self._error(400, "invalid_request", "cohortUrl is a URL")
        for item in batch:
            members = self.segments.setdefault(str(item["cohortId"]), set())
            self.names[str(item["cohortId"])] = str(item["cohortName"])
            if item["value"]:
                members.add(item["userId"])
            else:
                members.discard(item["userId"])
        return web.Response(status=204)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error(404, "not_found", "Not found")

    def app(self) -> web.Application:
        """The aiohttp app of this receiver."""
        app = web.Application()
        app.router.add_post(PATH, self.sync)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

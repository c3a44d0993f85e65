"""Segment's tracking API as Amplitude's property-based sync uses it (partners.md).

``POST /v1/identify`` and ``/v1/batch``; Basic with the write key as username, empty
password; trait key ``[Amplitude] <cohort_name> (<cohort_id>)``; 32 KB per call, 500 KB per
batch (400 above); 429 with ``Retry-After``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.partners.common import MALFORMED, Window, basic_credentials, json_body

CALL_LIMIT = 32_000
BATCH_LIMIT = 500_000
TRAIT = re.compile(r"^\[Amplitude\] .+ \([^()]+\)$")


def _fail(message: str, status: int = 400) -> web.Response:
    """Segment's answer to a call it refuses."""
    return web.json_response({"success": False, "message": message}, status=status)


@dataclass
class Segment:
    """Settings and memory: each user's traits."""

    write_key: str
    accept_any_key: bool = False  # broken
    user_field: str = "userId"  # broken when not userId
    rate_limit: int | None = None
    window_s: float = 10.0
    traits: dict[str, dict[str, bool]] = field(default_factory=dict)
    largest_batch: int = 0

    def __post_init__(self) -> None:
        self._window = Window(self.rate_limit, self.window_s)

    def members(self, trait: str) -> set[str]:
        """The users whose ``trait`` is true."""
        return {user for user, held in self.traits.items() if held.get(trait)}

    def _check(self, request: web.Request) -> web.Response | None:
        credentials = basic_credentials(request)
        if credentials is None or not credentials[0]:
            return _fail("no write key", status=401)
        if credentials[0] != self.write_key and not self.accept_any_key:
            return _fail("invalid write key", status=401)
        wait = self._window.take()
        if wait is not None:
            return web.json_response(
                {"success": False}, status=429, headers={"Retry-After": str(int(wait) + 1)}
            )
        return None

    def _identify(self, event: Any) -> str | None:
        if not isinstance(event, dict) or event.get("type") != "identify":
            return "type must be identify"
        user = event.get(self.user_field)
        traits = event.get("traits")
        if not isinstance(user, str) or not user:
            return f"{self.user_field} is required"
        if not isinstance(traits, dict) or not traits:
            return "traits are required"
        if not all(TRAIT.match(k) and isinstance(v, bool) for k, v in traits.items()):
            return "trait keys are '[Amplitude] <cohort_name> (<cohort_id>)' with a boolean"
        context = event.get("context")
        if not isinstance(context, dict) or "integration" not in context:
            return "context.integration is required"
        return None

    def _apply(self, event: dict[str, Any]) -> None:
        self.traits.setdefault(event[self.user_field], {}).update(event["traits"])

    async def _admit(self, request: web.Request, limit: int) -> bytes | web.Response:
        """The body of an authorized call within ``limit`` bytes, or the answer refusing it."""
        if (denied := self._check(request)) is not None:
            return denied
        raw = await request.read()
        return _fail(f"over {limit // 1000} KB") if len(raw) > limit else raw

    async def identify(self, request: web.Request) -> web.StreamResponse:
        if isinstance(raw := await self._admit(request, CALL_LIMIT), web.Response):
            return raw
        event = await json_body(request)
        problem = "body is not JSON" if event is MALFORMED else self._identify(event)
        if problem:
            return _fail(problem)
        self._apply(event)
        return web.json_response({"success": True})

    async def batch(self, request: web.Request) -> web.StreamResponse:
        if isinstance(raw := await self._admit(request, BATCH_LIMIT), web.Response):
            return raw
        self.largest_batch = max(self.largest_batch, len(raw))
        body = await json_body(request)
        events = body.get("batch") if isinstance(body, dict) else None
        if body is MALFORMED or not isinstance(events, list) or not events:
            return _fail("batch required")
        for event in events:
            if (problem := self._identify(event)) is not None:
                return _fail(problem)
        for event in events:
            self._apply(event)
        return web.json_response({"success": True})

    def app(self) -> web.Application:
        """The aiohttp app of this receiver."""
        app = web.Application(client_max_size=4 * BATCH_LIMIT)
        app.router.add_post("/v1/identify", self.identify)
        app.router.add_post("/v1/batch", self.batch)
        return app

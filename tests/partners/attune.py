"""A receiver whose create answers no list id (attune, open source; partners.md).

``POST {base}/create|add|remove``; body ``{"cohort_id", "cohort_name", "operation",
"user_ids", "user_id_type"}``; Basic with the key as username; every call answers ``200``
with an empty body, the cohort id naming the list; bodies over 32 MB get ``413``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from tests.partners.common import MALFORMED, basic_credentials, json_body

BASE = "/sources/src1/amplitude"
KEYS = {"cohort_id", "cohort_name", "operation", "user_ids", "user_id_type"}


@dataclass
class Attune:
    """Settings and memory: each cohort's members, by cohort id."""

    key: str
    cohorts: dict[str, set[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        credentials = basic_credentials(request)
        if credentials is None or credentials[0] != self.key:
            return web.json_response({"error": "unauthorized"}, status=401)
        operation = request.match_info["op"]
        body = await json_body(request)
        if body is MALFORMED or not isinstance(body, dict) or not set(body) >= KEYS:
            return web.json_response({"error": f"body needs {sorted(KEYS)}"}, status=400)
        ids = body["user_ids"]
        if body["operation"] != operation or not isinstance(ids, list):
            return web.json_response({"error": "bad operation or user_ids"}, status=400)
        cohort = str(body["cohort_id"])
        if operation == "create":
            self.cohorts.setdefault(cohort, set())
            self.names[cohort] = str(body["cohort_name"])
        elif cohort not in self.cohorts:
            return web.json_response({"error": "unknown cohort"}, status=400)
        elif not ids:
            return web.json_response({"error": "user_ids is empty"}, status=400)
        elif operation == "add":
            self.cohorts[cohort].update(ids)
        else:
            self.cohorts[cohort].difference_update(ids)
        return web.Response(status=200)

    def app(self) -> web.Application:
        """The aiohttp app of this receiver."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(f"{BASE}/{{op:create|add|remove}}", self.handle)
        return app

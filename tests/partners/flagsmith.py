"""Flagsmith's Amplitude cohort-sync receiver (Django + DRF), as partners.md describes it.

Base ``/api/v1/cohort-sync/amplitude``; ``POST /lists/``, ``/lists/{id}/add/``,
``/lists/{id}/remove/``; without the slash 301; Bearer key or Basic with the key as password;
create answers ``{"list_id": uuid}`` (``newer=True``: also ``listId`` and ``response``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from aiohttp import web

from tests.partners.common import MALFORMED, basic_credentials, json_body

BASE = "/api/v1/cohort-sync/amplitude"
NOT_FOUND_PAGE = (
    '<!doctype html>\n<html lang="en"><head><title>Not Found</title></head>'
    "<body><h1>Not Found</h1><p>The requested resource was not found on this server.</p>"
    "</body></html>"
)


@dataclass
class Flagsmith:
    """The receiver's settings and memory (lists by id: name and members)."""

    key: str
    newer: bool = False
    accept_any_key: bool = False  # broken: any key passes
    users_field: str = "user_ids"  # broken when not user_ids
    names: dict[str, str] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    requests: int = 0

    def delete_list(self, list_id: str) -> None:
        """Delete a list on the Flagsmith side: later add/remove answer 404 for good."""
        self.names.pop(list_id, None)
        self.members.pop(list_id, None)

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        key: str | None = None
        if header.startswith("Bearer "):
            key = header[len("Bearer ") :]
        elif (basic := basic_credentials(request)) is not None:
            key = basic[1]
        if not key:
            return web.json_response(
                {"detail": "Authentication credentials were not provided."},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if key != self.key and not self.accept_any_key:
            return web.json_response({"detail": "Valid cohort sync key not found."}, status=401)
        return None

    async def create(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (denied := self._auth(request)) is not None:
            return denied
        body = await json_body(request)
        if body is MALFORMED or not isinstance(body, dict):
            return web.json_response({"detail": "JSON parse error"}, status=400)
        if not isinstance(body.get("name"), str) or not body["name"]:
            return web.json_response({"name": ["This field is required."]}, status=400)
        list_id = str(uuid.uuid4())
        self.names[list_id] = body["name"]
        self.members[list_id] = set()
        answer: dict[str, object] = {"list_id": list_id}
        if self.newer:
            answer.update({"listId": list_id, "response": {"listId": list_id}})
        return web.json_response(answer)

    async def change(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (denied := self._auth(request)) is not None:
            return denied
        list_id = request.match_info["list_id"]
        try:
            uuid.UUID(list_id)
        except ValueError:
            return web.json_response({"detail": "List not found."}, status=404)
        if list_id not in self.members:
            return web.json_response({"detail": "List not found."}, status=404)
        body = await json_body(request)
        if body is MALFORMED:
            return web.json_response({"detail": "JSON parse error"}, status=400)
        ids = body.get(self.users_field) if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return web.json_response({self.users_field: ["This field is required."]}, status=400)
        if not all(isinstance(i, str) and 0 < len(i) <= 2000 for i in ids):
            return web.json_response(
                {self.users_field: ["Ensure this field has no more than 2000 characters."]},
                status=400,
            )
        if request.match_info["op"] == "add":
            self.members[list_id].update(ids)
        else:
            self.members[list_id].difference_update(ids)
        return web.Response(status=200)

    async def slash(self, request: web.Request) -> web.StreamResponse:
        # Django's CommonMiddleware answers before any view (and so before auth).
        self.requests += 1
        raise web.HTTPMovedPermanently(location=request.path + "/")

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return web.Response(status=404, text=NOT_FOUND_PAGE, content_type="text/html")

    def app(self) -> web.Application:
        """The aiohttp app of this receiver."""
        app = web.Application()
        app.router.add_post(f"{BASE}/lists/", self.create)
        app.router.add_post(f"{BASE}/lists/{{list_id}}/{{op:add|remove}}/", self.change)
        app.router.add_post(f"{BASE}/lists", self.slash)
        app.router.add_post(f"{BASE}/lists/{{list_id}}/{{op:add|remove}}", self.slash)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

"""The reference partner endpoint: receives Amplitude's cohort sync (spec part B), strictly.

Routes (the default paths of both sync modes)::

    POST /lists                  {"name", "context"}       -> 200 {"listId", "response": {"listId"}}
    POST /lists/{listId}/add     {"userIds", "context"}    -> 200 {"listId", "added", "size"}
    POST /lists/{listId}/remove  {"userIds", "context"}    -> 200 {"listId", "removed", "size"}
    POST /identify, POST /batch  identify or {"batch": []} -> 200 {"updated"}
    POST /webhook                Amplitude's Cohort Webhook body (``--webhook-path``; see
                                 ``partner_webhooks``) -> 200 {"ok", "message_id", ...}

Creating a list whose name already exists returns the existing list (a repeated first sync
leaves no orphan). Every request goes through, in this order: injected delay, injected
reset (the connection is dropped without an answer), injected failure (``fail_status``),
the rate limit (429 with ``Retry-After``), auth (401), JSON and payload validation (400
naming the field), unknown list or unknown users (404, nothing applied), then the state
change, committed before the 2xx is sent (a change that cannot be committed answers 500 and
is undone). The state is held in memory and logged to SQLite (see ``partner_store``).

Read-only views for tests and people, without auth (this is a local test receiver)::

    GET  /_cohortctl/health             {"ok": true}
    GET  /_cohortctl/state              lists with sizes, trait users and keys, counters
    GET  /_cohortctl/lists/{listId}     {"listId", "name", "members": [sorted]}
    GET  /_cohortctl/traits?key=K       {"key", "true": [...], "false": [...]}
    GET  /_cohortctl/journal?limit=N    {"requests": [...]}, newest last, no credentials
    GET  /_cohortctl/ui                 the inspector page, polling /_cohortctl/inspect?since=ID
    GET  /_cohortctl/webhooks           webhook cohorts with sizes, messages, counters
    GET  /_cohortctl/webhooks/cohorts/{cohortId}   {"members": [sorted], "properties": {...}}
    GET  /_cohortctl/webhooks/journal?limit=N      {"messages": [...]}: message_id, sha256
    POST /_cohortctl/reset              forget all state
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from cohortctl.servers.inspector import ADMIN_PREFIX, Inspector, dumps, record_request, since, ui
from cohortctl.servers.partner.store import (
    DEFAULT_JOURNAL_LIMIT,
    WEBHOOK_LOG,
    JournalEntry,
    PartnerStore,
    StoreError,
)
from cohortctl.servers.partner.validation import (
    InvalidPayload,
    plain_json,
    validate_identify,
    validate_list_create,
    validate_list_members,
)
from cohortctl.servers.partner.webhooks import DEFAULT_PATH as DEFAULT_WEBHOOK_PATH
from cohortctl.servers.partner.webhooks import (
    EXPECTED_USER_AGENT,
    WebhookState,
    handle_webhook,
    loose_message_id,
    webhook_views,
)
from cohortctl.servers.runner import CLIENT_MAX_SIZE, Handler

AuthMode = Literal["basic", "header", "bearer", "any", "none"]
AUTH_MODES: tuple[str, ...] = ("basic", "header", "bearer", "any", "none")

UNKNOWN_USERS_SHOWN = 5
_NOT_FOUND = ("unknown list", "unknown users")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Strict JSON: NaN and Infinity are Python extensions that SQLite (and most senders) reject.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


@dataclass(frozen=True)
class ReceiverSettings:
    """How the receiver behaves: credentials, storage, limits and injected faults.

    ``api_key=None`` accepts any credentials (and none). ``auth`` is what the receiver
    accepts: ``basic`` (``Authorization: Basic base64(api_key:secret-or-empty)``),
    ``header`` (an ``api_key: KEY`` header), ``bearer`` (``Authorization: Bearer KEY``),
    ``any`` of those three, or ``none``. ``rate_limit`` is requests per second (token bucket,
    bursts up to one second's worth). ``fail_rate`` and ``reset_rate`` are probabilities,
    drawn from a generator seeded with ``seed``. The last three switches break the contract
    on purpose, for testing a conformance checker.
    """

    api_key: str | None = None
    secret: str | None = None
    auth: AuthMode = "basic"
    db: str = ":memory:"
    known_users: frozenset[str] | None = None
    rate_limit: float | None = None
    fail_rate: float = 0.0
    fail_status: int = 503
    delay_ms: int = 0
    reset_rate: float = 0.0
    seed: int | None = None
    journal_limit: int = DEFAULT_JOURNAL_LIMIT
    accept_any_key: bool = False
    accept_bad_bodies: bool = False
    never_404: bool = False
    webhook_path: str = DEFAULT_WEBHOOK_PATH
    webhook_user_agent: str | None = EXPECTED_USER_AGENT
    webhook_headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.webhook_path.startswith("/") or self.webhook_path.startswith(ADMIN_PREFIX):
            raise ValueError(f"webhook_path must start with / (not {ADMIN_PREFIX})")
        if self.known_users is not None and not isinstance(self.known_users, frozenset):
            users: Iterable[str] = self.known_users
            object.__setattr__(self, "known_users", frozenset(users))
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}, got {self.auth!r}")
        for name in ("fail_rate", "reset_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError(f"rate_limit must be positive, got {self.rate_limit}")
        if not 100 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be an HTTP status, got {self.fail_status}")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must not be negative, got {self.delay_ms}")
        if self.journal_limit < 1:
            raise ValueError(f"journal_limit must be at least 1, got {self.journal_limit}")

    @property
    def checks_auth(self) -> bool:
        """False when any request is accepted whatever credentials it carries."""
        return self.api_key is not None and self.auth != "none" and not self.accept_any_key

    def describe(self) -> str:
        """One line for people: auth and db, never a secret."""
        auth = self.auth if self.api_key is not None else "any credentials accepted"
        return f"auth: {auth}, db: {self.db}"


class TokenBucket:
    """``rate`` tokens a second, holding at most ``max(1, rate)``; one token per request."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> float | None:
        """None when a token was taken, else the seconds until the next one is available."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class _Answer(Exception):
    """An early answer (401, 400, 404, 429, injected failure), journaled with ``reason``."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        reason: str,
        *,
        headers: dict[str, str] | None = None,
        users: int = 0,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body
        self.reason = reason
        self.headers = headers
        self.users = users


class _NotedAnswer(_Answer):
    """An answer of the webhook handler, already in the webhook journal."""


def _invalid(field_name: str, reason: str) -> _Answer:
    body = {"error": "invalid request", "field": field_name, "reason": reason}
    return _Answer(400, body, f"invalid request: {field_name} {reason}")


def _auth_problem(request: web.Request, settings: ReceiverSettings) -> str | None:
    """Why the request's credentials are not accepted, or None when they are."""
    assert settings.api_key is not None
    key = settings.api_key
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    mode = settings.auth
    seen = False
    if mode in ("basic", "any") and scheme == "basic":
        seen = True
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "malformed Basic credentials"
        user, _, password = decoded.partition(":")
        user_ok = hmac.compare_digest(user.encode(), key.encode())
        password_ok = hmac.compare_digest(password.encode(), (settings.secret or "").encode())
        if user_ok and password_ok:
            return None
    if mode in ("bearer", "any") and scheme == "bearer":
        seen = True
        if hmac.compare_digest(value.strip().encode(), key.encode()):
            return None
    if mode in ("header", "any") and "api_key" in request.headers:
        seen = True
        if hmac.compare_digest(request.headers["api_key"].encode(), key.encode()):
            return None
    if not seen:
        return f"missing credentials ({mode} auth expected)"
    return "wrong credentials"


def _storage_failure(exc: StoreError) -> _Answer:
    return _Answer(500, {"error": "storage failure", "reason": str(exc)}, f"storage failure: {exc}")


def _reset_connection(request: web.Request) -> None:
    """Drop the connection without an answer; SO_LINGER 0 makes the client see a reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _body_size(request: web.Request, text: str) -> int:
    """Bytes of the body as sent (its length in characters when it came chunked)."""
    length = request.content_length
    return length if length is not None else len(text)


def _list_id(request: web.Request) -> int | None:
    text = request.match_info["list_id"]
    return int(text) if text.isdigit() and len(text) < 19 else None


@dataclass
class Receiver:
    """The receiver's handlers and its store (state in memory, logged by a writer thread)."""

    settings: ReceiverSettings
    store: PartnerStore | None = None
    bucket: TokenBucket | None = None
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(init=False)
    inspector: Inspector = field(default_factory=Inspector)
    webhooks: WebhookState = field(default_factory=WebhookState)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.seed)
        if self.settings.rate_limit is not None:
            self.bucket = TokenBucket(self.settings.rate_limit, clock=self.clock)

    async def open(self, app: web.Application) -> None:
        """Open the database and load its state (aiohttp ``on_startup``)."""
        settings = self.settings
        self.store = await PartnerStore.open(settings.db, journal_limit=settings.journal_limit)
        for raw in await self.store.webhook_bodies():
            self.webhooks.replay(raw, _DECODER.decode)
        self.webhooks.take_unsaved()  # replaying counts nothing new
        self.webhooks.restore(*await self.store.webhook_history())

    async def close(self, app: web.Application) -> None:
        """Finish the commits under way and close the database (aiohttp ``on_cleanup``)."""
        if self.store is not None:
            await self.store.close()

    def _store(self) -> PartnerStore:
        assert self.store is not None, "receiver used before startup"
        return self.store

    # --- the checks every partner call goes through -----------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every partner call through :meth:`_checked`, then shown to the inspector page."""
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        at = time.time()
        started = time.perf_counter()
        response, reason = await self._checked(request, handler)
        await record_request(self.inspector, request, response, reason, at=at, started=started)
        return response

    async def _checked(
        self, request: web.Request, handler: Handler
    ) -> tuple[web.StreamResponse, str | None]:
        """Faults, rate limit and auth before any handler; every early answer is journaled.

        Handlers raise :class:`_Answer` (or ``InvalidPayload``, a 400) for anything but
        success; the answer is written here, after the journal entry is committed. Returns
        the response and, for anything but a handler's success, why.
        """
        settings = self.settings
        entry = JournalEntry(request.method, request.path, at=time.time())
        try:
            if settings.delay_ms:
                await asyncio.sleep(settings.delay_ms / 1000)
            if settings.reset_rate and self.rng.random() < settings.reset_rate:
                await self._note_webhook(request, None, "connection reset (injected)")
                await self._store().record(
                    entry, None, "connection reset (injected)", self.webhooks.take_unsaved()
                )
                _reset_connection(request)
                # never sent: the transport is gone
                return web.Response(status=599), "connection reset (injected)"
            if settings.fail_rate and self.rng.random() < settings.fail_rate:
                raise _Answer(
                    settings.fail_status,
                    {"error": "injected failure", "status": settings.fail_status},
                    f"injected failure {settings.fail_status}",
                )
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait is not None:
                    retry_after = max(1, math.ceil(wait))
                    raise _Answer(
                        429,
                        {"error": "rate limited", "retryAfter": retry_after},
                        "rate limited",
                        headers={"Retry-After": str(retry_after)},
                    )
            if settings.checks_auth and request.path != settings.webhook_path:
                problem = _auth_problem(request, settings)
                if problem is not None:
                    headers = None
                    if settings.auth == "basic":
                        headers = {"WWW-Authenticate": 'Basic realm="cohortctl partner"'}
                    raise _Answer(
                        401, {"error": "unauthorized", "reason": problem}, problem, headers=headers
                    )
            return await handler(request), None
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            body = {"error": exc.reason.lower(), "path": request.path}
            headers = {k: v for k, v in exc.headers.items() if k == "Allow"}
            answer = _Answer(exc.status, body, exc.reason.lower(), headers=headers)
        except InvalidPayload as exc:
            answer = _invalid(exc.field, exc.reason)
        except _Answer as early:
            answer = early
        except StoreError as exc:
            answer = _storage_failure(exc)
        accepted = self._accepted_anyway(answer)
        if accepted is not None:
            answer = accepted
        if not isinstance(answer, _NotedAnswer):
            await self._note_webhook(request, answer.status, answer.reason)
        entry = JournalEntry(
            entry.method, entry.path, answer.users, request.content_length or 0, entry.at
        )
        try:
            await self._store().record(
                entry, answer.status, answer.reason, self.webhooks.take_unsaved()
            )
        except StoreError as exc:
            answer = _storage_failure(exc)
        response = web.json_response(answer.body, status=answer.status, headers=answer.headers)
        return response, answer.reason

    async def _note_webhook(self, request: web.Request, status: int | None, reason: str) -> None:
        """Journal a webhook attempt answered before its handler (faults, rate limit)."""
        if request.path != self.settings.webhook_path:
            return
        raw = await request.read()
        self.webhooks.note(status, reason, raw, loose_message_id(raw))

    def _accepted_anyway(self, answer: _Answer) -> _Answer | None:
        """With a contract-breaking switch, the 200 that replaces a 400 or 404 answer."""
        settings = self.settings
        if answer.status == 400 and settings.accept_bad_bodies:
            return _Answer(200, {"ok": True}, f"accepted anyway: {answer.reason}")
        if answer.status == 404 and settings.never_404 and answer.body.get("error") in _NOT_FOUND:
            return _Answer(200, {"ok": True}, f"accepted anyway: {answer.reason}")
        return None

    async def _json_body(self, request: web.Request) -> tuple[Any, str]:
        content_type = request.content_type
        if content_type != "application/json":
            raise _invalid("Content-Type", f"must be application/json, got {content_type!r}")
        raw = await request.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid("(body)", "not valid UTF-8") from None
        try:
            return _DECODER.decode(text), text
        except (json.JSONDecodeError, ValueError) as exc:
            raise _invalid("(body)", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise _invalid("(body)", "not valid JSON: nested too deeply") from None

    def _unknown_users(self, user_ids: list[str], count: int) -> _Answer | None:
        """The 404 naming the first few users not in ``known_users``, if there are any."""
        known = self.settings.known_users
        if known is None or known.issuperset(user_ids):
            return None
        unknown = [u for u in user_ids if u not in known]
        shown = unknown[:UNKNOWN_USERS_SHOWN]
        body = {"error": "unknown users", "count": len(unknown), "userIds": shown}
        return _Answer(404, body, f"{len(unknown)} unknown user(s)", users=count)

    # --- partner calls --------------------------------------------------------------------------

    async def create_list(self, request: web.Request) -> web.StreamResponse:
        """``POST /lists``: the id of a new list (or of the existing list of that name)."""
        body, raw = await self._json_body(request)
        name = validate_list_create(body)
        entry = JournalEntry(request.method, request.path, 0, _body_size(request, raw), time.time())
        list_id, _ = await self._store().create_list(name, entry)
        # Both of Amplitude's readers: the body as sent and the body under "response" (spec B).
        return web.json_response({"listId": str(list_id), "response": {"listId": str(list_id)}})

    async def add_members(self, request: web.Request) -> web.StreamResponse:
        """``POST /lists/{listId}/add``."""
        return await self._change_members(request, add=True)

    async def remove_members(self, request: web.Request) -> web.StreamResponse:
        """``POST /lists/{listId}/remove``."""
        return await self._change_members(request, add=False)

    async def _change_members(self, request: web.Request, *, add: bool) -> web.StreamResponse:
        body, raw = await self._json_body(request)
        user_ids = validate_list_members(body, plain=plain_json(raw))
        raw_id = request.match_info["list_id"]
        unknown_list = _Answer(
            404, {"error": "unknown list", "listId": raw_id}, "unknown list", users=len(user_ids)
        )
        list_id = _list_id(request)
        if list_id is None:
            raise unknown_list
        store = self._store()
        unknown_users = self._unknown_users(user_ids, len(user_ids))
        if unknown_users is not None:
            await store.committed()
            raise unknown_users if store.list_exists(list_id) else unknown_list
        size = _body_size(request, raw)
        entry = JournalEntry(request.method, request.path, len(user_ids), size, time.time())
        result = await store.change_members(list_id, user_ids, entry, add=add)
        if result is None:
            raise unknown_list
        changed, list_size = result
        verb = "added" if add else "removed"
        return web.json_response({"listId": raw_id, verb: changed, "size": list_size})

    async def identify(self, request: web.Request) -> web.StreamResponse:
        """``POST /identify`` and ``POST /batch``: a single identify or a batch of them."""
        body, raw = await self._json_body(request)
        updates = validate_identify(body)
        users = len({u.user_id for u in updates})
        unknown_users = self._unknown_users([u.user_id for u in updates], users)
        if unknown_users is not None:
            raise unknown_users
        entry = JournalEntry(
            request.method, request.path, users, _body_size(request, raw), time.time()
        )
        count = await self._store().set_traits(updates, entry)
        return web.json_response({"updated": count})

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        """``POST /webhook``: one Cohort Webhook message, applied once per ``message_id``."""
        raw = await request.read()
        settings = self.settings
        answer = handle_webhook(
            self.webhooks,
            request.headers,
            raw,
            user_agent=settings.webhook_user_agent,
            required=settings.webhook_headers,
            decode=_DECODER.decode,
        )
        if answer.status != 200:
            raise _NotedAnswer(answer.status, answer.body, answer.reason, users=answer.users)
        entry = JournalEntry(request.method, request.path, answer.users, len(raw), time.time())
        applied = (
            []
            if answer.body.get("duplicate")
            else [(WEBHOOK_LOG, (answer.body["message_id"], raw))]
        )
        applied += self.webhooks.take_unsaved()
        await self._store().record(entry, answer.status, answer.reason, applied)
        return web.json_response(answer.body)

    # --- read-only views (no auth: a local test receiver) ---------------------------------------

    async def health(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/health``."""
        return web.json_response({"ok": True})

    async def state(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/state``."""
        store = self._store()
        await store.committed()
        return web.json_response(store.state())

    async def list_view(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/lists/{listId}``."""
        list_id = _list_id(request)
        store = self._store()
        await store.committed()
        data = None if list_id is None else store.members(list_id)
        if data is None:
            body = {"error": "unknown list", "listId": request.match_info["list_id"]}
            return web.json_response(body, status=404)
        return web.json_response(data)

    async def traits(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/traits?key=K``."""
        key = request.query.get("key")
        if not key:
            return web.json_response({"error": "the key query parameter is required"}, status=400)
        store = self._store()
        await store.committed()
        return web.json_response(store.traits(key))

    async def journal(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/journal?limit=N``: the last N requests, newest last."""
        text = request.query.get("limit", "100")
        if not text.isdigit():
            return web.json_response({"error": "limit must be a whole number"}, status=400)
        store = self._store()
        await store.committed()
        rows = store.journal(int(text))
        return web.json_response({"requests": rows})

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/inspect?since=ID``: what the inspector page shows."""
        store = self._store()
        await store.committed()
        snapshot = self.inspector.snapshot(
            since(request), mode="receiver", lists=store.state()["lists"],
            traits=store.trait_counts(),
        )  # fmt: skip
        return web.json_response(snapshot, dumps=dumps)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """``POST /_cohortctl/reset``: forget every list, trait, journal entry and counter."""
        self.webhooks.clear()
        await self._store().clear()
        return web.json_response({"ok": True})


RECEIVER_KEY: web.AppKey[Receiver] = web.AppKey("partner_receiver", Receiver)


def create_app(
    settings: ReceiverSettings, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The partner receiver as an aiohttp application (run it with ``servers.runner``).

    ``clock`` (monotonic seconds) refills the rate limit's bucket; tests pass their own.
    """
    receiver = Receiver(settings, clock=clock)
    app = web.Application(middlewares=[receiver.middleware], client_max_size=CLIENT_MAX_SIZE)
    app.router.add_post("/lists", receiver.create_list)
    app.router.add_post("/lists/{list_id}/add", receiver.add_members)
    app.router.add_post("/lists/{list_id}/remove", receiver.remove_members)
    app.router.add_post("/identify", receiver.identify)
    app.router.add_post("/batch", receiver.identify)
    app.router.add_post(settings.webhook_path, receiver.webhook)
    app.router.add_get("/_cohortctl/health", receiver.health)
    app.router.add_get("/_cohortctl/state", receiver.state)
    app.router.add_get("/_cohortctl/lists/{list_id}", receiver.list_view)
    app.router.add_get("/_cohortctl/traits", receiver.traits)
    app.router.add_get("/_cohortctl/journal", receiver.journal)
    app.router.add_get("/_cohortctl/inspect", receiver.inspect)
    app.router.add_get("/_cohortctl/ui", ui)
    app.router.add_routes(webhook_views(receiver.webhooks))
    app.router.add_post("/_cohortctl/reset", receiver.reset)
    app[RECEIVER_KEY] = receiver
    app.on_startup.append(receiver.open)
    app.on_cleanup.append(receiver.close)
    return app

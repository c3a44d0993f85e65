"""``serve partner --forward URL``: a recording, validating proxy in front of a real endpoint.

Every request that is not under ``/_cohortctl/`` goes to ``URL`` + its path and query, with
its headers (credentials included: the partner's endpoint is where Amplitude sends them)
and body unchanged, and the answer comes back unchanged: status, headers, body (still
encoded: nothing is decompressed), no redirect followed. Meanwhile each request is checked
as the reference receiver checks it (content type, strict JSON, the payload of each call on
its default path: ``POST /lists``, ``/lists/{id}/add|remove``, ``/identify``, ``/batch``),
and both sides go to the journal with the verdict (``GET /_cohortctl/journal``), to the
inspector page, and with ``record`` to a HAR file, credentials redacted as ``--har`` does.
No answer from the endpoint is a 502 naming why.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from cohortctl.http.har import HarWriter, har_entry, redact_url
from cohortctl.http.observe import Exchange
from cohortctl.http.redact import Redactor
from cohortctl.partner import payloads
from cohortctl.partner.calls import default_call
from cohortctl.servers.inspector import ADMIN_PREFIX, Inspector, dumps, since, ui
from cohortctl.servers.partner.validation import (
    InvalidPayload,
    plain_json,
    validate_identify,
    validate_list_create,
    validate_list_members,
)
from cohortctl.servers.runner import CLIENT_MAX_SIZE

FORWARD_TIMEOUT = 30.0
# Connection-level headers (RFC 9110 7.6.1): the proxy's own business, never passed on.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


# Headers any HTTP sender sets; every other one is a destination's custom header, whose value
# (a credential as often as not) is hidden as ``--har`` hides every custom --header value.
_ORDINARY = frozenset(
    [
        "host",
        "user-agent",
        "content-type",
        "content-length",
        "accept",
        "accept-encoding",
        "accept-language",
        "connection",
        "keep-alive",
        "content-encoding",
        "transfer-encoding",
        "te",
        "expect",
        "date",
        "via",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
    ]
)


def _custom_values(headers: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in headers if k.lower() not in _ORDINARY]


@dataclass(frozen=True)
class Verdict:
    """What the receiver's checks say about one request."""

    call: str | None
    problem: str | None = None
    users: int = 0
    list_id: str | None = None
    list_name: str | None = None
    traits: tuple[tuple[str, bool], ...] = ()


def judge(method: str, path: str, content_type: str, body: bytes) -> Verdict:
    """Check a request as the reference receiver would (spec part B), without applying it.

    A request that is none of the calls on its default path gets ``problem`` saying so.
    """
    call, list_id = default_call(method, path)
    if call is None:
        return Verdict(None, f"not a call of Amplitude's cohort sync: {method} {path}")
    try:
        if content_type != "application/json":
            raise InvalidPayload("Content-Type", f"must be application/json, got {content_type!r}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPayload("(body)", "not valid UTF-8") from None
        try:
            data = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidPayload("(body)", f"not valid JSON: {exc}") from None
        if call == payloads.LIST_CREATE:
            return Verdict(call, list_name=validate_list_create(data))
        if call in (payloads.LIST_ADD, payloads.LIST_REMOVE):
            users = validate_list_members(data, plain=plain_json(text))
            return Verdict(call, users=len(users), list_id=list_id)
        updates = validate_identify(data)
        traits = tuple((u.key, u.value) for u in updates)
        return Verdict(call, users=len({u.user_id for u in updates}), traits=traits)
    except InvalidPayload as exc:
        return Verdict(call, f"invalid request: {exc.field} {exc.reason}", list_id=list_id)


def _list_id_in(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    for path in (("listId",), ("id",), ("list_id",), ("data", "id")):
        value: Any = data
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


@dataclass(frozen=True)
class ForwardSettings:
    """Where to forward, how long to wait for it, and where to record."""

    forward_url: str
    record: str | None = None
    timeout: float = FORWARD_TIMEOUT
    keep: int = 500  # requests held for the journal and the inspector


class Forwarder:
    """The proxy's handlers, its upstream session, journal, inspector and recorder."""

    def __init__(self, settings: ForwardSettings) -> None:
        self.settings = settings
        self.upstream = settings.forward_url.rstrip("/")
        self.inspector = Inspector(keep=settings.keep)
        self.har: HarWriter | None = None
        self._session: aiohttp.ClientSession | None = None

    async def open(self, app: web.Application) -> None:
        """Start the upstream session and the recording (aiohttp ``on_startup``)."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )
        if self.settings.record is not None:
            self.har = HarWriter(self.settings.record, base_url=self.upstream, option="--record")

    async def close(self, app: web.Application) -> None:
        """Close the session and finish the HAR file (aiohttp ``on_cleanup``)."""
        if self._session is not None:
            await self._session.close()
        if self.har is not None:
            self.har.close()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        """Pass ``request`` on, its answer back, and journal both with the verdict."""
        assert self._session is not None
        if request.path.startswith(ADMIN_PREFIX):
            return web.json_response({"error": "not found", "path": request.path}, status=404)
        body = await request.read()
        raw_headers = [(k, v) for k, v in request.headers.items()]
        sent = [(k, v) for k, v in raw_headers if k.lower() not in _HOP]
        verdict = judge(request.method, request.path, request.content_type, body)
        url = self.upstream + request.path_qs
        redactor = Redactor.for_headers(raw_headers).merged(Redactor(_custom_values(raw_headers)))
        started_at = time.time()
        started = time.perf_counter()
        status: int | None = None
        reason = ""
        answer_headers: list[tuple[str, str]] = []
        data = b""
        error: str | None = None
        answered = started
        version = "HTTP/1.1"
        try:
            async with self._session.request(
                request.method, url, headers=sent, data=body, allow_redirects=False
            ) as upstream:
                answered = time.perf_counter()
                data = await upstream.read()
                status, reason = upstream.status, upstream.reason or ""
                answer_headers = [(k, v) for k, v in upstream.headers.items()]
                if upstream.version is not None:
                    version = f"HTTP/{upstream.version.major}.{upstream.version.minor}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            answered = time.perf_counter()
            kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            error = redactor.text(f"{kind}: {exc}" if str(exc) else kind)
        done = time.perf_counter()
        latency = (done - started) * 1000
        clean_request = redactor.bytes(body)
        clean_answer = redactor.bytes(data)
        self._learn(verdict, status, data)
        self.inspector.add(
            method=request.method,
            path=redactor.text(redact_url(request.path_qs)),
            call=verdict.call,
            status=status,
            latency_ms=latency,
            problem=verdict.problem,
            request_body=clean_request,
            response_body=clean_answer,
            error=error,
            users=verdict.users,
            at=started_at,
        )
        if self.har is not None:
            exchange = Exchange(
                method=request.method,
                url=redactor.text(url),
                request_headers=redactor.headers(raw_headers),
                request_body=clean_request,
                started=started_at,
                status=status,
                reason=reason,
                http_version=version,
                response_headers=redactor.headers(answer_headers),
                response_body=clean_answer,
                wait_ms=(answered - started) * 1000,
                receive_ms=(done - answered) * 1000,
                error=error,
            )
            entry = har_entry(exchange, call_of=lambda _m, _u: verdict.call)
            entry["_verdict"] = verdict.problem or "valid"
            self.har.write(entry)
        if status is None:
            problem = {"error": "bad gateway", "upstream": redactor.text(self.upstream)}
            problem["reason"] = error or "no answer"
            return web.json_response(problem, status=502)
        kept = [(k, v) for k, v in answer_headers if k.lower() not in _HOP]
        response = web.Response(status=status, reason=reason or None, body=data)
        for name, value in kept:
            response.headers.add(name, value)
        return response

    def _learn(self, verdict: Verdict, status: int | None, answer: bytes) -> None:
        ok = status is not None and 200 <= status < 300
        if not ok:
            return
        if verdict.call == payloads.LIST_CREATE and verdict.problem is None:
            list_id = _list_id_in(answer)
            if list_id is not None:
                self.inspector.saw_list(list_id, name=verdict.list_name)
        elif verdict.traits:
            for key, value in verdict.traits:
                self.inspector.saw_trait(key, value)
        elif verdict.list_id is not None and verdict.problem is None:
            added = verdict.users if verdict.call == payloads.LIST_ADD else 0
            removed = verdict.users if verdict.call == payloads.LIST_REMOVE else 0
            self.inspector.saw_list(verdict.list_id, added=added, removed=removed)

    # --- the proxy's own views ----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/health``."""
        return web.json_response({"ok": True, "forward": self.upstream})

    async def journal(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/journal?limit=N``: both sides of the last N requests, verdicts."""
        text = request.query.get("limit", "100")
        if not text.isdigit():
            return web.json_response({"error": "limit must be a whole number"}, status=400)
        rows = self.inspector.since(0, limit=int(text))
        return web.json_response({"requests": rows, "forward": self.upstream})

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        """``GET /_cohortctl/inspect?since=ID``: what the inspector page shows."""
        snapshot = self.inspector.snapshot(
            since(request),
            mode="forward",
            lists=self.inspector.seen_lists(),
            traits=self.inspector.seen_traits(),
            upstream=self.upstream,
        )
        return web.json_response(snapshot, dumps=dumps)


FORWARDER_KEY: web.AppKey[Forwarder] = web.AppKey("partner_forwarder", Forwarder)


def create_forward_app(settings: ForwardSettings) -> web.Application:
    """The proxy as an aiohttp application (run it with ``servers.runner``)."""
    forwarder = Forwarder(settings)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app.router.add_get("/_cohortctl/health", forwarder.health)
    app.router.add_get("/_cohortctl/journal", forwarder.journal)
    app.router.add_get("/_cohortctl/inspect", forwarder.inspect)
    app.router.add_get("/_cohortctl/ui", ui)
    app.router.add_route("*", "/{tail:.*}", forwarder.forward)
    app[FORWARDER_KEY] = forwarder
    app.on_startup.append(forwarder.open)
    app.on_cleanup.append(forwarder.close)
    return app

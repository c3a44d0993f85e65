"""Send the requests of a HAR recording again, rebased on another endpoint.

The requests go out in recorded order (or from several workers: a list-create is a barrier,
so every request after it sees the id it created). Credentials come from the destination
(environment or profile), never from the recording, which holds none. The list id a
list-create answered during the replay replaces the recorded one in every later path
segment and in every body value under a key naming a list (``listId``, ``list_id``, ``id``,
``segmentListId``...). Each answer is judged against the recording: ``recorded`` (the same
status, the default) or ``2xx``; bodies are shown, never compared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from cohortctl.durations import json_seconds
from cohortctl.errors import CheckFailed, InputError
from cohortctl.http.har import request_body, response_text
from cohortctl.http.once import BODY_KEEP
from cohortctl.http.outcomes import classify_transport_error
from cohortctl.http.redact import REDACTED, is_sensitive_header
from cohortctl.partner import payloads
from cohortctl.partner.calls import default_call
from cohortctl.partner.destination import AuthMode, Destination, with_headers

# Never resent as recorded: the transport sets them for the new connection and body.
_HOP_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "accept-encoding",
    }
)


class Expect(str, Enum):
    """``--expect``: what a replayed answer must be to match."""

    recorded = "recorded"
    ok = "2xx"


@dataclass(frozen=True)
class RecordedRequest:
    """One request of the recording, its credentials dropped."""

    index: int
    method: str
    url: str
    relative: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    call: str | None
    recorded_status: int | None
    recorded_body: str
    auth: AuthMode
    hidden: tuple[str, ...] = ()  # headers the recording redacted (not sent: give them with -H)


@dataclass
class ReplayResult:
    """What one replayed request got, next to what was recorded (``request``)."""

    request: RecordedRequest
    url: str  # as sent (list ids substituted, rebased), scrubbed
    status: int | None
    matched: bool
    latency_ms: float
    body: str = ""
    error: str | None = None
    list_id: str | None = None

    @property
    def recorded_body(self) -> str:
        """The start of the answer the recording got."""
        return self.request.recorded_body[:BODY_KEEP]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (one vocabulary: ``ok``, ``status``, ``error``)."""
        request = self.request
        return {
            "index": request.index,
            "call": request.call,
            "method": request.method,
            "url": self.url,
            "recorded_status": request.recorded_status,
            "status": self.status,
            "body": self.body,
            "recorded_body": self.recorded_body,
            "error": self.error,
            "list_id": self.list_id,
            "ok": self.matched,
            "latency_s": json_seconds(self.latency_ms / 1000),
        }


@dataclass
class ReplayRun:
    """Every result in recorded order and the list ids substituted."""

    results: list[ReplayResult]
    list_ids: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every answer matched."""
        return all(r.matched for r in self.results)

    @property
    def mismatched(self) -> int:
        """How many answers did not match."""
        return sum(not r.matched for r in self.results)


def _auth_of(headers: Sequence[tuple[str, str]]) -> AuthMode:
    for name, value in headers:
        lowered = name.lower()
        if lowered == "authorization":
            scheme = value.partition(" ")[0].lower()
            if scheme == "bearer":
                return AuthMode.bearer
            return AuthMode.basic
        if lowered == "api_key":
            return AuthMode.header
    return AuthMode.none


def _relative(url: str, base: str | None) -> str:
    """The part of ``url`` below ``base`` (else its path and query)."""
    if base:
        trimmed = base.rstrip("/")
        if url.startswith(trimmed) and url[len(trimmed) : len(trimmed) + 1] in ("", "/", "?"):
            return url[len(trimmed) :]
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path or "/", parts.query, ""))


def rebase(relative: str, base: str) -> str:
    """``relative`` (a path and query below the recording's base) joined onto ``base``."""
    parts = urlsplit(base)
    rel = urlsplit(relative)
    path = parts.path.rstrip("/") + (
        rel.path if rel.path.startswith("/") or not rel.path else "/" + rel.path
    )
    query = "&".join(q for q in (parts.query, rel.query) if q)
    return urlunsplit((parts.scheme, parts.netloc, path or "/", query, ""))


def _is_list_create(call: str | None, method: str, body: bytes) -> bool:
    if call is not None:
        return call == payloads.LIST_CREATE
    if method != "POST":
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(data, dict) and "name" in data and not {"userIds", "batch", "userId"} & set(data)
    )


def recorded_requests(
    log: Mapping[str, Any], *, source: str = "recording", start: int = 0
) -> list[RecordedRequest]:
    """The requests of a HAR log (see :func:`cohortctl.http.har.read_har`), in order."""
    base = log.get("_baseUrl")
    found = []
    for index, entry in enumerate(log["entries"]):
        request = entry["request"]
        raw_headers = request.get("headers") or []
        try:
            headers = tuple((str(h["name"]), str(h["value"])) for h in raw_headers)
        except (KeyError, TypeError):
            raise InputError(f"{source}: entry {index}: request.headers malformed") from None
        response = entry.get("response") or {}
        status = response.get("status")
        recorded_status = status if isinstance(status, int) and status > 0 else None
        kept = tuple(
            (k, v)
            for k, v in headers
            if k.lower() not in _HOP_HEADERS
            and not k.startswith(":")
            and not is_sensitive_header(k)
            and REDACTED not in v
        )
        hidden = tuple(k for k, v in headers if REDACTED in v and not is_sensitive_header(k))
        body = request_body(entry)
        relative = _relative(request["url"], base if isinstance(base, str) else None)
        call = entry.get("_call") if isinstance(entry.get("_call"), str) else None
        if call is None:
            call = default_call(request["method"], urlsplit(relative).path)[0]
        found.append(
            RecordedRequest(
                index=start + index,
                method=request["method"].upper(),
                url=request["url"],
                relative=relative,
                headers=kept,
                body=body,
                call=call,
                recorded_status=recorded_status,
                recorded_body=response_text(entry),
                auth=_auth_of(headers),
                hidden=hidden,
            )
        )
    return found


def hidden_headers(
    requests: Sequence[RecordedRequest], given: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """Headers the recording redacted that ``given`` (the -H headers) does not supply."""
    have = {name.lower() for name, _ in given}
    names: dict[str, str] = {}
    for request in requests:
        for name in request.hidden:
            if name.lower() not in have:
                names.setdefault(name.lower(), name)
    return list(names.values())


def recorded_auth(requests: Sequence[RecordedRequest]) -> AuthMode:
    """The auth mode the recording used (the first request carrying credentials)."""
    for request in requests:
        if request.auth is not AuthMode.none:
            return request.auth
    return AuthMode.none


_LIST_KEYS = ("list", "segment", "audience")


def _list_key(key: str) -> bool:
    lowered = key.lower()
    return lowered == "id" or any(word in lowered for word in _LIST_KEYS)


def _substitute_json(data: Any, ids: Mapping[str, str], key: str | None = None) -> Any:
    if isinstance(data, dict):
        return {k: _substitute_json(v, ids, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_json(v, ids, key) for v in data]
    if key is not None and _list_key(key) and not isinstance(data, bool):
        if isinstance(data, str) and data in ids:
            return ids[data]
        if isinstance(data, int) and str(data) in ids:
            new = ids[str(data)]
            return int(new) if new.isdigit() else new
    return data


def _touched(body: bytes) -> frozenset[str] | None:
    """What a request may change, as values to order by: every scalar of its JSON body but
    the list ids (a list-create already orders those), ``context`` and ``type``. None: it may
    change anything (no body, or not JSON), so it waits for all before it and all after wait."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    found: set[str] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if name not in ("context", "type"):
                    walk(item, name)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif not isinstance(value, bool | None) and not _list_key(key):  # a string or number
            found.add(str(value))

    walk(data)
    return frozenset(found)


def substitute(request: RecordedRequest, ids: Mapping[str, str], base: str) -> tuple[str, bytes]:
    """The URL (rebased on ``base``) and body of ``request``, replayed list ids put in."""
    relative = request.relative
    body = request.body
    if ids:
        parts = urlsplit(relative)
        segments = [
            quote(ids[unquote(s)], safe="") if unquote(s) in ids else s
            for s in parts.path.split("/")
        ]
        relative = urlunsplit(("", "", "/".join(segments), parts.query, ""))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if data is not None:
            replaced = _substitute_json(data, ids)
            if replaced != data:
                body = json.dumps(replaced, ensure_ascii=False, separators=(",", ":")).encode()
    return rebase(relative, base), body


@dataclass
class Replayer:
    """Replays recorded requests at ``destination`` (its base URL, auth and headers)."""

    client: httpx.Client
    destination: Destination
    expect: Expect = Expect.recorded
    workers: int = 1
    clock: Callable[[], float] = time.perf_counter
    list_ids: dict[str, str] = field(default_factory=dict)

    def _headers(self, request: RecordedRequest) -> dict[str, str]:
        extra = {**self.destination.auth_headers(), **dict(self.destination.headers)}
        return with_headers(dict(request.headers), extra.items())

    def _matched(self, request: RecordedRequest, status: int | None) -> bool:
        if self.expect is Expect.ok:
            return status is not None and 200 <= status < 300
        return status == request.recorded_status

    def send(self, request: RecordedRequest) -> ReplayResult:
        """Send one recorded request (list ids substituted) and judge its answer."""
        destination = self.destination
        url, body = substitute(request, self.list_ids, destination.base_url)
        shown_url = destination.scrub(url)
        started = self.clock()
        response: httpx.Response | None = None
        error: str | None = None
        try:
            response = self.client.request(
                request.method,
                url,
                headers=self._headers(request),
                content=body,
                timeout=destination.timeout,
            )
        except httpx.TransportError as exc:
            error = classify_transport_error(exc)
        status = response.status_code if response is not None else None
        text = response.text if response is not None else ""
        result = ReplayResult(
            request,
            url=shown_url,
            status=status,
            matched=self._matched(request, status),
            latency_ms=round((self.clock() - started) * 1000, 1),
            body=destination.scrub(text[:BODY_KEEP]),
            error=error,
        )
        if response is None:
            return result
        if _is_list_create(request.call, request.method, request.body) and response.is_success:
            self._learn_list_id(request, text, result)
        return result

    def _learn_list_id(self, request: RecordedRequest, text: str, result: ReplayResult) -> None:
        try:
            new = self.destination.find_list_id(text)
        except CheckFailed:
            return
        result.list_id = new
        try:
            old = self.destination.find_list_id(request.recorded_body)
        except CheckFailed:
            return
        if old != new:
            self.list_ids[old] = new

    def run(self, requests: Sequence[RecordedRequest]) -> ReplayRun:
        """Replay ``requests``: in order, or from ``workers`` threads with list-creates alone."""
        started = self.clock()
        if self.workers <= 1:
            results = [self.send(r) for r in requests]
        else:
            results = self._run_parallel(requests)
        return ReplayRun(results, dict(self.list_ids), round(self.clock() - started, 3))

    def _run_parallel(self, requests: Sequence[RecordedRequest]) -> list[ReplayResult]:
        results: list[ReplayResult] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="cohortctl-replay") as pool:
            wave: list[RecordedRequest] = []
            for request in requests:
                if _is_list_create(request.call, request.method, request.body):
                    results += self._send_wave(pool, wave)
                    wave = []
                    results.append(self.send(request))
                else:
                    wave.append(request)
            results += self._send_wave(pool, wave)
        return results

    def _send_wave(
        self, pool: ThreadPoolExecutor, wave: Sequence[RecordedRequest]
    ) -> list[ReplayResult]:
        """Send ``wave`` from the pool; a request that shares a value with an earlier one (the
        same user, say: an add then a remove) waits for it, so their order is the recorded one.
        Waiting never deadlocks: what a request waits for was queued before it."""
        last: dict[str, Future[ReplayResult]] = {}  # a value -> the latest request holding it
        futures: list[Future[ReplayResult]] = []
        barrier: list[Future[ReplayResult]] = []  # the latest request touching everything
        for request in wave:
            values = _touched(request.body)
            if values is None:
                before = list(futures)
            else:
                held = {id(f): f for f in (last.get(v) for v in values) if f is not None}
                before = barrier + list(held.values())
            future = pool.submit(self._send_after, request, before)
            futures.append(future)
            if values is None:
                barrier, last = [future], {}
            else:
                last.update(dict.fromkeys(values, future))
        return [future.result() for future in futures]

    def _send_after(
        self, request: RecordedRequest, before: Sequence[Future[ReplayResult]]
    ) -> ReplayResult:
        for earlier in before:
            earlier.result()
        return self.send(request)

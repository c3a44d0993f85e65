"""Cohort Webhooks in the embedded partner receiver (``serve partner --webhook-path``).

``POST /webhook`` takes Amplitude's default webhook body (spec part C) and checks every field
and header strictly:

- headers: ``Content-Type: application/json``, ``User-Agent: Amplitude/Webhook/1.0`` (or the
  one the receiver was told to expect), every required ``--webhook-header NAME:VALUE``
  (missing: 401, wrong value: 403);
- body: exactly ``cohort_name``, ``cohort_id``, ``in_cohort``, ``computed_time`` (Unix
  seconds as a string), ``message_id`` (``{uuid}::enter|exit::{n}``, its direction matching
  ``in_cohort``) and ``users`` (``user_id``, optional ``user_properties`` of at most 50
  scalar values; no user twice). Anything else is a 400 naming the field.

Membership and properties are kept per cohort. A ``message_id`` seen before with the same
body is acknowledged (200, ``"duplicate": true``) and not applied again; with a different
body it is a 409, recorded in the webhook journal. The state is held in memory; each applied
message is also logged, as received, to the partner store's SQLite database (``--db``) and
replayed at startup (:meth:`WebhookState.replay`), so a restart keeps membership, properties
and the message_ids seen. The webhook journal and its counters are written to the same
database with each request's journal entry (:meth:`WebhookState.take_unsaved`) and read
back at startup (:meth:`WebhookState.restore`), as the receiver's journal is.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from cohortctl.errors import InputError
from cohortctl.partner.destination import build_headers
from cohortctl.partner.webhooks.payload import MAX_PROPERTIES, MESSAGE_ID
from cohortctl.servers.partner.store import (
    COUNT,
    WEBHOOK_COUNTER,
    WEBHOOK_JOURNAL,
    WEBHOOK_JOURNAL_LIMIT,
)
from cohortctl.servers.partner.validation import InvalidPayload

DEFAULT_PATH = "/webhook"
EXPECTED_USER_AGENT = "Amplitude/Webhook/1.0"
FIELDS = ("cohort_name", "cohort_id", "in_cohort", "computed_time", "message_id", "users")
JOURNAL_LIMIT = WEBHOOK_JOURNAL_LIMIT
_JOURNAL_KEYS = ("at", "message_id", "sha256", "bytes", "status", "reason")
Statement = tuple[str, tuple[Any, ...]]


def required_headers(given: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The ``--webhook-header NAME:VALUE`` pairs; a value must not be empty (an empty one is
    most often an unset shell variable, and would have the receiver demand an empty header)."""
    pairs = build_headers(given)
    for name, value in pairs:
        if not value:
            raise InputError(
                f"--webhook-header {name}: no value (is the shell variable behind it set?)"
            )
    return pairs


class WebhookRefused(Exception):
    """A webhook request refused before validation (401/403 for its headers)."""

    def __init__(self, status: int, body: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body
        self.reason = reason


@dataclass(frozen=True)
class WebhookUser:
    """One user of a message."""

    user_id: str
    properties: dict[str, Any] | None


@dataclass(frozen=True)
class WebhookMessage:
    """A validated webhook body."""

    cohort_name: str
    cohort_id: str
    in_cohort: bool
    computed_time: str
    message_id: str
    users: tuple[WebhookUser, ...]


def check_headers(
    headers: Mapping[str, str],
    *,
    user_agent: str | None,
    required: tuple[tuple[str, str], ...],
) -> None:
    """Refuse a request whose required headers are missing (401) or wrong (403); a wrong
    Content-Type or User-Agent is a 400 naming the header."""
    for name, value in required:
        given = headers.get(name)
        if given is None:
            raise WebhookRefused(
                401, {"error": "unauthorized", "header": name}, f"missing required header {name}"
            )
        if given != value:
            raise WebhookRefused(
                403,
                {"error": "forbidden", "header": name},
                f"wrong value of required header {name}",
            )
    content_type = headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise InvalidPayload("Content-Type", f"must be application/json, got {content_type!r}")
    if user_agent is not None and headers.get("User-Agent") != user_agent:
        got = headers.get("User-Agent")
        raise InvalidPayload("User-Agent", f"must be {user_agent!r}, got {got!r}")


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(name, "must be a non-empty string")
    return value


def _user(index: int, item: Any) -> WebhookUser:
    where = f"users[{index}]"
    if not isinstance(item, dict):
        raise InvalidPayload(where, "must be an object")
    unknown = sorted(set(item) - {"user_id", "user_properties"})
    if unknown:
        raise InvalidPayload(f"{where}.{unknown[0]}", "is not a field of a webhook user")
    if "user_id" not in item:
        raise InvalidPayload(f"{where}.user_id", "is required")
    user_id = item["user_id"]
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidPayload(f"{where}.user_id", "must be a non-empty string")
    props = item.get("user_properties")
    if "user_properties" in item:
        if not isinstance(props, dict):
            raise InvalidPayload(f"{where}.user_properties", "must be an object")
        if len(props) > MAX_PROPERTIES:
            raise InvalidPayload(
                f"{where}.user_properties", f"has {len(props)} properties, over {MAX_PROPERTIES}"
            )
        for key, value in props.items():
            if not key or (value is not None and not isinstance(value, (str, int, float, bool))):
                raise InvalidPayload(f"{where}.user_properties.{key}", "must be a scalar value")
    return WebhookUser(user_id, props)


def validate_webhook(body: Any) -> WebhookMessage:
    """The message of a default webhook body; InvalidPayload names the first wrong field."""
    if not isinstance(body, dict):
        raise InvalidPayload("(body)", "must be a JSON object")
    for name in FIELDS:
        if name not in body:
            raise InvalidPayload(name, "is required")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidPayload(unknown[0], "is not a field of Amplitude's webhook body")
    cohort_name, cohort_id = _text(body, "cohort_name"), _text(body, "cohort_id")
    in_cohort = body["in_cohort"]
    if not isinstance(in_cohort, bool):
        raise InvalidPayload("in_cohort", "must be true or false")
    computed = body["computed_time"]
    if not isinstance(computed, str) or not computed.isdigit() or len(computed) > 12:
        raise InvalidPayload("computed_time", "must be Unix seconds as a string")
    mid = body["message_id"]
    match = MESSAGE_ID.match(mid) if isinstance(mid, str) else None
    if match is None:
        raise InvalidPayload("message_id", "must be {uuid}::enter|exit::{batch number}")
    if (match["direction"] == "enter") != in_cohort:
        raise InvalidPayload(
            "message_id", f"says {match['direction']} but in_cohort is {str(in_cohort).lower()}"
        )
    users = body["users"]
    if not isinstance(users, list) or not users:
        raise InvalidPayload("users", "must be a non-empty array")
    parsed = tuple(_user(i, item) for i, item in enumerate(users))
    seen: set[str] = set()
    for index, user in enumerate(parsed):
        if user.user_id in seen:
            raise InvalidPayload(f"users[{index}].user_id", f"{user.user_id!r} appears twice")
        seen.add(user.user_id)
    return WebhookMessage(cohort_name, cohort_id, in_cohort, computed, mid, parsed)


@dataclass
class _Cohort:
    name: str
    members: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class WebhookState:
    """Membership and properties per cohort, the messages seen, and the webhook journal."""

    cohorts: dict[str, _Cohort] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)  # message_id -> body sha256
    journal: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # journal entries and counts not yet handed to the store (see take_unsaved)
    _unsaved: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _unsaved_counts: Counter[str] = field(default_factory=Counter, repr=False)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
        self._unsaved_counts[name] += 1

    def take_unsaved(self) -> list[Statement]:
        """The SQL statements that keep the journal entries and counts since the last call
        (the receiver commits them with the request's journal entry)."""
        statements: list[Statement] = [
            (WEBHOOK_JOURNAL, tuple(row[key] for key in _JOURNAL_KEYS)) for row in self._unsaved
        ]
        statements += [
            (COUNT, (f"{WEBHOOK_COUNTER}{name}", n)) for name, n in self._unsaved_counts.items()
        ]
        self._unsaved.clear()
        self._unsaved_counts.clear()
        return statements

    def restore(self, rows: Iterable[tuple[Any, ...]], counters: Mapping[str, int]) -> None:
        """Take back the journal and counters the database kept (at startup)."""
        self.journal[:0] = [dict(zip(_JOURNAL_KEYS, row, strict=True)) for row in rows]
        del self.journal[: max(0, len(self.journal) - JOURNAL_LIMIT)]
        self.counters.update(counters)

    def note(
        self, status: int | None, reason: str, raw: bytes, message_id: str | None = None
    ) -> None:
        """Journal a request (any outcome): message id, body digest, status and reason."""
        self._count(str(status) if status is not None else "reset")
        entry = {
            "at": datetime.fromtimestamp(time.time(), tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "message_id": message_id,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw),
            "status": status,
            "reason": reason,
        }
        self.journal.append(entry)
        self._unsaved.append(entry)
        if len(self.journal) > JOURNAL_LIMIT:
            del self.journal[: len(self.journal) - JOURNAL_LIMIT]

    def apply(self, message: WebhookMessage, raw: bytes) -> tuple[int, dict[str, Any], str]:
        """Apply a message once: (status, answer body, journal reason)."""
        digest = hashlib.sha256(raw).hexdigest()
        seen = self.messages.get(message.message_id)
        if seen is not None:
            if seen == digest:
                self._count("duplicates")
                body = {"ok": True, "duplicate": True, "message_id": message.message_id}
                return 200, body, "duplicate message_id, same body: not applied again"
            self._count("conflicts")
            body = {
                "error": "conflict",
                "message_id": message.message_id,
                "reason": "this message_id was received before with a different body",
            }
            return 409, body, "duplicate message_id with a different body"
        self.messages[message.message_id] = digest
        cohort = self.cohorts.setdefault(message.cohort_id, _Cohort(message.cohort_name))
        cohort.name = message.cohort_name
        members = cohort.members
        changed = 0
        for user in message.users:
            if message.in_cohort:
                if user.user_id not in members:
                    changed += 1
                    members[user.user_id] = {}
                if user.properties is not None:
                    members[user.user_id] = dict(user.properties)
            elif members.pop(user.user_id, None) is not None:
                changed += 1
        verb = "entered" if message.in_cohort else "left"
        body = {"ok": True, "message_id": message.message_id, verb: changed, "size": len(members)}
        return 200, body, f"{len(message.users)} user(s) {verb}"

    def replay(self, raw: bytes, decode: Callable[[str], Any]) -> None:
        """Apply again a message logged when it was first applied (at startup)."""
        self.apply(validate_webhook(decode(raw.decode("utf-8"))), raw)

    def view(self) -> dict[str, Any]:
        """Every cohort with its size, and the counters."""
        return {
            "cohorts": [
                {"cohort_id": cid, "cohort_name": c.name, "size": len(c.members)}
                for cid, c in sorted(self.cohorts.items())
            ],
            "messages": len(self.messages),
            "counters": dict(sorted(self.counters.items())),
        }

    def cohort(self, cohort_id: str) -> dict[str, Any] | None:
        """One cohort's members (sorted) and their properties, or None when unknown."""
        cohort = self.cohorts.get(cohort_id)
        if cohort is None:
            return None
        members = sorted(cohort.members)
        return {
            "cohort_id": cohort_id,
            "cohort_name": cohort.name,
            "size": len(members),
            "members": members,
            "properties": {uid: cohort.members[uid] for uid in members if cohort.members[uid]},
        }

    def last(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` journal entries, oldest first."""
        return self.journal[-limit:] if limit > 0 else []

    def clear(self) -> None:
        """Forget everything."""
        self.cohorts.clear()
        self.messages.clear()
        self.journal.clear()
        self.counters.clear()
        self._unsaved.clear()
        self._unsaved_counts.clear()


_LOOSE_MESSAGE_ID = re.compile(rb'"message_id"\s*:\s*"([^"\\]{1,200})"')


def loose_message_id(raw: bytes) -> str | None:
    """The message_id of a body that may not be valid (for the webhook journal)."""
    found = _LOOSE_MESSAGE_ID.search(raw[:65536])
    return found.group(1).decode("utf-8", "replace") if found else None


@dataclass(frozen=True)
class WebhookAnswer:
    """What the receiver answers one webhook request (already in the webhook journal)."""

    status: int
    body: dict[str, Any]
    reason: str
    users: int = 0


def handle_webhook(
    state: WebhookState,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    user_agent: str | None,
    required: tuple[tuple[str, str], ...],
    decode: Callable[[str], Any],
) -> WebhookAnswer:
    """Check, validate and apply one webhook request, journaling it whatever the outcome."""
    try:
        check_headers(headers, user_agent=user_agent, required=required)
        try:
            body = decode(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidPayload("(body)", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidPayload("(body)", "not valid JSON: nested too deeply") from None
        message = validate_webhook(body)
    except WebhookRefused as refused:
        state.note(refused.status, refused.reason, raw, loose_message_id(raw))
        return WebhookAnswer(refused.status, refused.body, refused.reason)
    except InvalidPayload as exc:
        reason = f"invalid request: {exc.field} {exc.reason}"
        state.note(400, reason, raw, loose_message_id(raw))
        body = {"error": "invalid request", "field": exc.field, "reason": exc.reason}
        return WebhookAnswer(400, body, reason)
    status, answer, reason = state.apply(message, raw)
    state.note(status, reason, raw, message.message_id)
    return WebhookAnswer(status, answer, reason, len(message.users))


def webhook_views(state: WebhookState) -> list[web.RouteDef]:
    """The read-only views of the webhook state under ``/_cohortctl/webhooks``."""

    async def overview(request: web.Request) -> web.StreamResponse:
        return web.json_response(state.view())

    async def cohort(request: web.Request) -> web.StreamResponse:
        cohort_id = request.match_info["cohort_id"]
        data = state.cohort(cohort_id)
        if data is None:
            return web.json_response(
                {"error": "unknown cohort", "cohort_id": cohort_id}, status=404
            )
        return web.json_response(data)

    async def journal(request: web.Request) -> web.StreamResponse:
        text = request.query.get("limit", "100")
        if not text.isdigit():
            return web.json_response({"error": "limit must be a whole number"}, status=400)
        return web.json_response({"messages": state.last(int(text))})

    return [
        web.get("/_cohortctl/webhooks", overview),
        web.get("/_cohortctl/webhooks/cohorts/{cohort_id}", cohort),
        web.get("/_cohortctl/webhooks/journal", journal),
    ]

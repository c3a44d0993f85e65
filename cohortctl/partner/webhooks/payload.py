"""Amplitude's Cohort Webhook requests: the default body, the headers, the destination (part C).

Every request is a ``POST`` of one batch of users entering or leaving one cohort::

    {"cohort_name": "My Test Cohort", "cohort_id": "7khm89cz", "in_cohort": true,
     "computed_time": "1692206763",
     "message_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0",
     "users": [{"user_id": "user_one@example.com", "user_properties": {"plan": "pro"}}]}

``computed_time`` (Unix seconds as a string) and the uuid of ``message_id`` are one value per
sync run; the number after ``enter``/``exit`` counts the batches of that direction from 0. A
retry sends the same bytes. Headers: ``Content-Type: application/json``, ``User-Agent:
Amplitude/Webhook/1.0`` and at most five custom headers, which are the only "auth" a webhook
has: their values are treated as secrets (never shown, stored or reported).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cohortctl.config import ensure_safe_url, redact
from cohortctl.errors import InputError
from cohortctl.http.har import redact_url
from cohortctl.http.settings import WEBHOOK_USER_AGENT
from cohortctl.partner.destination import (
    PARTNER_REQUEST_TIMEOUT,
    build_headers,
    with_headers,
)
from cohortctl.partner.webhooks.freemarker import WebhookTemplate

if TYPE_CHECKING:
    from cohortctl.partner.destination_files import DestinationFile

ENTER = "enter"
EXIT = "exit"
MAX_HEADERS = 5  # Amplitude's Cohort Webhook destination takes at most five custom headers
MAX_PROPERTIES = 50  # user properties Amplitude sends per user, at most
DEFAULT_BATCH_SIZE = 1000
CALL = "webhook"
MESSAGE_ID = re.compile(
    r"^(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"::(?P<direction>enter|exit)::(?P<batch>0|[1-9][0-9]*)$"
)
_SCRUB_MIN = 4

User = tuple[str, Mapping[str, Any] | None]
"""One user of a message: the user id and the selected user properties (None: none)."""


def message_id(run_uuid: str, *, entering: bool, batch: int) -> str:
    """``{uuid}::enter|exit::{batch}``: the id a receiver de-duplicates retries by."""
    return f"{run_uuid}::{ENTER if entering else EXIT}::{batch}"


@dataclass(frozen=True)
class WebhookRun:
    """The values shared by every message of one sync run: the uuid and the computed time."""

    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    computed_time: str = field(default_factory=lambda: str(int(time.time())))

    def message_id(self, *, entering: bool, batch: int) -> str:
        """The message id of batch ``batch`` of one direction."""
        return message_id(self.uuid, entering=entering, batch=batch)


def webhook_body(
    cohort_name: str,
    cohort_id: str,
    *,
    in_cohort: bool,
    computed_time: str,
    message_id: str,
    users: Sequence[User],
) -> dict[str, Any]:
    """The default body of one message (``user_properties`` only for users that have some)."""
    listed: list[dict[str, Any]] = []
    for user_id, properties in users:
        entry: dict[str, Any] = {"user_id": user_id}
        if properties:
            entry["user_properties"] = dict(properties)
        listed.append(entry)
    return {
        "cohort_name": cohort_name,
        "cohort_id": cohort_id,
        "in_cohort": in_cohort,
        "computed_time": computed_time,
        "message_id": message_id,
        "users": listed,
    }


def encode(body: Any) -> bytes:
    """The bytes of a body as sent: compact JSON, UTF-8."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_message(
    cohort_name: str,
    cohort_id: str,
    *,
    in_cohort: bool,
    computed_time: str,
    message_id: str,
    user_ids: Sequence[str],
    properties: Mapping[str, Mapping[str, Any]] | None = None,
    plain: bool = False,
) -> bytes:
    """``encode(webhook_body(...))`` without building the body (the sync hot path).

    ``plain``: no id holds a quote, a backslash or a control character
    (:func:`cohortctl.sync.encoders.ids_are_plain`), so ids are written as they are.
    """
    head = _dumps(
        {
            "cohort_name": cohort_name,
            "cohort_id": cohort_id,
            "in_cohort": in_cohort,
            "computed_time": computed_time,
            "message_id": message_id,
        }
    )
    if plain and not properties:
        users = '{"user_id":"' + '"},{"user_id":"'.join(user_ids) + '"}'
    else:
        parts = []
        found = properties or {}
        for uid in user_ids:
            quoted = f'"{uid}"' if plain else _dumps(uid)
            props = found.get(uid)
            if props:
                parts.append(f'{{"user_id":{quoted},"user_properties":{_dumps(dict(props))}}}')
            else:
                parts.append(f'{{"user_id":{quoted}}}')
        users = ",".join(parts)
    return f'{head[:-1]},"users":[{users}]}}'.encode()


def webhook_url(url: str, path: str | None = None) -> str:
    """The webhook URL itself, ``path`` (when given) appended to its path."""
    if not path:
        return url
    if "://" in path:
        return path
    parts = urlsplit(url)
    extra, _, query = path.partition("?")
    joined = parts.path.rstrip("/") + "/" + extra.lstrip("/")
    query = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, joined, query, ""))


@dataclass(frozen=True)
class WebhookDestination:
    """A Cohort Webhook endpoint: its URL, custom headers, User-Agent, template and timeout."""

    url: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    user_agent: str = WEBHOOK_USER_AGENT
    timeout: float = PARTNER_REQUEST_TIMEOUT
    template: WebhookTemplate | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise InputError(f"--timeout must be more than 0 seconds, got {self.timeout}")
        if len(self.headers) > MAX_HEADERS:
            raise InputError(
                f"{len(self.headers)} --header values: Amplitude's Cohort Webhooks send at most "
                f"{MAX_HEADERS} custom headers"
            )
        if not self.user_agent.strip() or any(c in self.user_agent for c in "\r\n\0"):
            raise InputError("--user-agent must be one line of text")

    @classmethod
    def from_options(
        cls,
        url: str,
        *,
        path: str | None = None,
        headers: Sequence[str] = (),
        user_agent: str | None = None,
        timeout: float = PARTNER_REQUEST_TIMEOUT,
        template: WebhookTemplate | None = None,
        allow_insecure_http: bool = False,
    ) -> WebhookDestination:
        """Parse ``--header`` values and check the URL (custom headers count as credentials)."""
        parsed = build_headers(headers)
        destination = cls(
            webhook_url(url.strip(), path),
            parsed,
            user_agent or WEBHOOK_USER_AGENT,
            timeout,
            template,
        )
        ensure_safe_url(
            redact_url(destination.url),
            allow_insecure_http=allow_insecure_http or not parsed,
            what="webhook headers",
        )
        return destination

    def request_headers(self) -> dict[str, str]:
        """Every header of a request: JSON content type, User-Agent, then the custom ones."""
        base = {"Content-Type": "application/json", "User-Agent": self.user_agent}
        return with_headers(base, self.headers)

    def redacted_headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The request headers as they may be shown: every custom header's value hidden."""
        custom = {name.lower() for name, _ in self.headers}
        return {
            name: redact(value) if name.lower() in custom else value
            for name, value in (headers or self.request_headers()).items()
        }

    def is_success(self, status: int) -> bool:
        """A webhook message is accepted by any 2xx."""
        return 200 <= status < 300

    def secrets(self) -> list[str]:
        """The custom header values: a webhook's only credentials."""
        return [value for _, value in self.headers if value]

    def scrub(self, text: str) -> str:
        """``text`` with every custom header value replaced by a redaction marker."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if len(secret) >= _SCRUB_MIN:
                text = text.replace(secret, redact(secret))
        return text

    def render(self, body: Mapping[str, Any]) -> tuple[bytes, Any]:
        """The bytes and JSON of a request for the default ``body`` (through the template).

        In a template's ``input`` every user has ``user_properties`` (``{}`` when none), so
        a template that prints them (Amplitude's example does) works for every user.
        """
        if self.template is None:
            return encode(body), body
        text, rendered = self.template.render(template_input(body))
        return text.encode("utf-8"), rendered


def template_input(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``input`` of a template: the default body, ``user_properties`` always there."""
    users = [
        {**user, "user_properties": user.get("user_properties", {})}
        for user in body.get("users", [])
    ]
    return {**body, "users": users}


def describe_file(file: DestinationFile) -> dict[str, Any]:
    """What a ``mode: webhook`` destination file resolves to (``destination show``): the
    webhook URL (its ``calls.webhook.path`` added), the headers of every message with the
    custom values hidden, the batch size and the template (None: the default body)."""
    base = {"Content-Type": "application/json", "User-Agent": WEBHOOK_USER_AGENT}
    shown = with_headers(base, ((name, redact(value)) for name, value in file.headers))
    return {
        "name": file.name,
        "source": file.source,
        "mode": file.mode,
        "url": webhook_url(file.url, file.webhook_path) if file.url else None,
        "path": file.webhook_path,
        "headers": shown,
        "batch_size": file.batch_size or DEFAULT_BATCH_SIZE,
        "payload": file.webhook_payload,
        "ok": True,
    }

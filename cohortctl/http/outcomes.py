"""What a partner endpoint answered, in words a person who never read the spec understands.

Used by ``mock``, ``sync`` and ``check`` alike, so one status reads the same everywhere.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from cohortctl.durations import json_seconds

# Spec part B, "What the partner answers".
PARTNER_STATUS_MEANINGS: dict[int, str] = {
    200: "success",
    400: "invalid request",
    401: "unauthorized: bad api_key",
    404: "invalid user id (or unknown list)",
    429: "throttled: rate limited",
}

# Kinds of "no HTTP answer at all".
REFUSED = "connection refused"
TIMEOUT = "timeout"
RESET = "connection reset"
TLS = "TLS error"
NETWORK = "network error"
MALFORMED = "malformed HTTP answer"
PROXY = "proxy error"  # the proxy itself failed: refused, unreachable, would not CONNECT


def classify_transport_error(exc: httpx.TransportError) -> str:
    """What kind of "no answer" an httpx error is: refused, timeout, reset, TLS, network."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if isinstance(exc, httpx.ProxyError):  # the proxy's own failure, its TLS included
        return PROXY
    if any(isinstance(e, ssl.SSLError) for e in chain) or any(
        "SSL" in str(e) or "CERTIFICATE" in str(e) for e in chain
    ):
        return TLS
    if isinstance(exc, httpx.TimeoutException):
        return TIMEOUT
    if isinstance(exc, httpx.ConnectError):
        if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(exc):
            return REFUSED
        return NETWORK
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return RESET
    return NETWORK


def describe_status(
    status: int, retry_after: str | None = None, ratelimit_reset: str | None = None
) -> str:
    """A short meaning for an HTTP status, as Amplitude's partner docs define it."""
    meaning = PARTNER_STATUS_MEANINGS.get(status)
    if meaning is None:
        if 200 <= status < 300:
            meaning = "success"
        elif 300 <= status < 400:
            meaning = f"redirect ({status}): not followed; Amplitude reports it as unclassified"
        elif 500 <= status < 600:
            meaning = (
                f"server error ({status}): Amplitude reports it as unclassified "
                "and its sync retries it"
            )
        else:
            meaning = f"unexpected status {status}: Amplitude reports it as unclassified"
    if status == 429:
        if retry_after:
            meaning += f", Retry-After: {retry_after}"
        elif ratelimit_reset:
            meaning += f", X-Ratelimit-Reset: {ratelimit_reset}"
        else:
            meaning += ", no Retry-After header"
    return meaning


@dataclass
class Outcome:
    """One request and what came back (or why nothing came back)."""

    call: str
    method: str
    url: str
    status: int | None
    meaning: str
    latency_ms: float
    body: str = ""
    retry_after: str | None = None
    error: str | None = None  # REFUSED, TIMEOUT, RESET, TLS, NETWORK when status is None
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unanswered(
        cls,
        exc: httpx.TransportError,
        *,
        call: str,
        method: str,
        url: str,
        latency_ms: float,
        scrub: Callable[[str], str],
        extra: dict[str, Any],
    ) -> Outcome:
        """A request nothing came back for (refused, timed out, reset...): a failed row whose
        meaning names the kind and the (scrubbed) detail."""
        kind = classify_transport_error(exc)
        detail = scrub(str(exc) or type(exc).__name__)
        meaning = f"{kind}: {detail}" if detail and detail != kind else kind
        extra["passed"] = False
        return cls(call, method, url, None, meaning, round(latency_ms, 1), error=kind, extra=extra)

    @property
    def ok(self) -> bool:
        """True for a success: the destination's success statuses (``extra["success"]``),
        else any 2xx."""
        if self.status is None:
            return False
        if "success" in self.extra:
            return bool(self.extra["success"])
        return 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, the same facts as the table row (README: the JSON vocabulary).

        ``ok`` is the row's verdict: a 2xx, or what ``extra["passed"]`` judged (``--expect``;
        null for a request that was skipped); ``latency_s`` is seconds.
        """
        data = asdict(self)
        data["latency_s"] = json_seconds(data.pop("latency_ms") / 1000)
        extra = data["extra"]
        data["ok"] = extra.pop("passed") if "passed" in extra else self.ok
        extra.pop("success", None)  # what ok says without --expect: one success word
        return data


_LIST_WORDS = re.compile(
    r"\b(?:unknown|no such|missing|invalid|deleted|nonexistent|non-existent)\s+(?:id\s+)?list\b"
    r"|\blist\b[^.;\n]{0,60}?\b(?:not found|does ?n[o']t exist|not exist|unknown|deleted|gone)\b"
    r"|\blist_?not_?found\b",
    re.IGNORECASE,
)
_MESSAGE_KEYS = ("error", "detail", "message", "title", "reason", "code", "description")


def _message_texts(body: str) -> list[str]:
    """The human-readable parts of an answer body: its message fields, or the text itself.

    Arrays of ids (a 404 naming unknown users) are left out, so a user id that happens to
    read ``list-not-found`` is never taken for the message.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return [body[:2000]]
    texts: list[str] = []

    def walk(value: Any, depth: int) -> None:
        if depth > 3:
            return
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if str(key).lower() in _MESSAGE_KEYS or isinstance(item, dict):
                    walk(item, depth + 1)

    walk(data, 0)
    return texts


def names_unknown_list(status: int | None, body: str) -> bool:
    """True when a list-add / list-remove answer says the partner does not know the list.

    Spec part B gives 404 one meaning, "invalid user id"; real receivers also answer 404 when
    the list itself is gone (``{"error": "unknown list"}``, Flagsmith's ``{"detail": "List
    not found."}``). Only a 404 whose message names the list counts; a 404 naming users, or
    with no message, stays "invalid user id".
    """
    if status != 404 or not body:
        return False
    return any(_LIST_WORDS.search(text) for text in _message_texts(body))

"""What a partner endpoint answered, in words a person who never read the spec understands.

Used by ``mock``, ``sync`` and ``check`` alike, so one status reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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


def describe_status(status: int, retry_after: str | None = None) -> str:
    """A short meaning for an HTTP status, as Amplitude's partner docs define it."""
    meaning = PARTNER_STATUS_MEANINGS.get(status)
    if meaning is None:
        if 200 <= status < 300:
            meaning = "success"
        elif 300 <= status < 400:
            meaning = f"redirect ({status}): not followed, unclassified by Amplitude"
        elif 500 <= status < 600:
            meaning = f"server error ({status}): unclassified by Amplitude, retried"
        else:
            meaning = f"unexpected status {status}: unclassified by Amplitude"
    if status == 429:
        meaning += f", Retry-After: {retry_after}" if retry_after else ", no Retry-After header"
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

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, the same facts as the table row."""
        data = asdict(self)
        data["ok"] = self.ok
        return data

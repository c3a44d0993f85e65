"""What a partner's non-2xx answer means: a few named shapes, its own error classifications,
then the spec's status table.

A destination file lists the Integration Portal's error classifications (``errors:``); an
answer matching one is labelled with its reason (and message). Before them, a few shapes that
are no answer of the partner's API at all are named for what they are:

- a 301/302/307/308 whose ``Location`` is the request path plus a slash: add the slash;
- a 404 with an HTML body, or any 404 to list-create: no such route (check the base URL and
  paths), not "invalid user id".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from cohortctl.http.redirects import TRAILING_SLASH_HINT, adds_trailing_slash

NO_SUCH_ROUTE = "no such route (check the base URL and paths)"
UNCLASSIFIED = "unclassified"
REDIRECTS = (301, 302, 307, 308)
_SUB_CODE_KEYS = ("sub_code", "subCode", "code", "error_code", "errorCode")


@dataclass(frozen=True)
class ErrorClass:
    """One error classification of the Integration Portal: status, optional sub code, reason."""

    status: int
    reason: str
    sub_code: str | None = None
    message: str | None = None

    def label(self) -> str:
        """``reason`` or ``reason: message``."""
        return f"{self.reason}: {self.message}" if self.message else self.reason

    def to_dict(self) -> dict[str, Any]:
        """The entry as a destination file writes it."""
        data: dict[str, Any] = {"status": self.status}
        if self.sub_code is not None:
            data["sub_code"] = self.sub_code
        data["reason"] = self.reason
        if self.message is not None:
            data["message"] = self.message
        return data


def _sub_codes(body: str) -> set[str]:
    try:
        data = json.loads(body)
    except ValueError:
        return set()
    found: set[str] = set()
    for holder in (data, data.get("error") if isinstance(data, dict) else None):
        if isinstance(holder, dict):
            found |= {str(holder[k]) for k in _SUB_CODE_KEYS if k in holder}
    return found


def classify(errors: Sequence[ErrorClass], status: int, body: str = "") -> ErrorClass | None:
    """The classification of an answer: a matching sub code first, then the status alone.

    A sub code matches a ``sub_code``/``code``/``error_code`` field of a JSON body (top level
    or under ``error``), or appears anywhere in a body that is not JSON.
    """
    candidates = [e for e in errors if e.status == status]
    coded = [e for e in candidates if e.sub_code is not None]
    if coded:
        codes = _sub_codes(body)
        for entry in coded:
            if entry.sub_code in codes or (not codes and entry.sub_code and entry.sub_code in body):
                return entry
    return next((e for e in candidates if e.sub_code is None), None)


def looks_like_html(body: str, content_type: str | None = None) -> bool:
    """True for an HTML page (a framework's error page rather than an API answer)."""
    if content_type and "html" in content_type.lower():
        return True
    head = body.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body", "<h1", "<title"))


@dataclass(frozen=True)
class Reply:
    """A partner's non-success answer, as much of it as labelling needs."""

    status: int
    call: str
    url: str  # the request's URL (a redirect's Location is read against it)
    body: str = ""
    location: str | None = None
    content_type: str | None = None


def special_meaning(reply: Reply) -> str | None:
    """A label for the shapes named in the module docstring, or None."""
    status, location = reply.status, reply.location
    if status in REDIRECTS and location and adds_trailing_slash(location, reply.url):
        slashed = urlsplit(urljoin(reply.url, location)).path
        return (
            f"redirect ({status}) to {slashed}: {TRAILING_SLASH_HINT}; "
            "Amplitude does not follow redirects"
        )
    if status == 404 and (
        reply.call == "list-create" or looks_like_html(reply.body, reply.content_type)
    ):
        return NO_SUCH_ROUTE
    return None

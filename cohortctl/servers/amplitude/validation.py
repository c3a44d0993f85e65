"""Request checks of the fake Amplitude: JSON bodies, fields, ids, and the error shape.

Every error answers ``{"error": {"http_code", "type", "message", "metadata"}}`` through
:class:`ApiError`; :class:`Fields` collects all field errors of a body before answering.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from aiohttp import web

from cohortctl.servers.amplitude.store import MAX_AMPLITUDE_ID, amplitude_id_for
from cohortctl.servers.runner import CLIENT_MAX_SIZE

INVALID_SAMPLE = 10

_DIGITS = re.compile(r"[0-9]+")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

_ERROR_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
}


class ApiError(Exception):
    """An error answer in Amplitude's documented shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.metadata = dict(metadata or {})
        self.headers = dict(headers or {})

    @classmethod
    def throttled(cls, message: str, *, retry_after: int = 1, **metadata: Any) -> ApiError:
        """A 429 over one of Amplitude's limits, saying when to try again (``Retry-After``)."""
        return cls(429, message, metadata=metadata, headers={"Retry-After": str(retry_after)})

    def response(self) -> web.Response:
        """The JSON error response."""
        body = {
            "error": {
                "http_code": self.status,
                "type": _ERROR_TYPES.get(self.status, "error"),
                "message": self.message,
                "metadata": self.metadata,
            }
        }
        return web.json_response(body, status=self.status, headers=self.headers)


def bad(message: str, **metadata: Any) -> NoReturn:
    """Answer 400 with ``message`` and ``metadata``."""
    raise ApiError(400, message, metadata=metadata)


# -- traffic: concurrency accounting, request log -----------------------------------------


# -- request parsing and validation ------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body: a JSON object sent as application/json, keys unique."""
    if request.content_type != "application/json":
        raise ApiError(
            415,
            f"Content-Type must be application/json, got {request.content_type or 'none'}",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, f"request body is larger than {CLIENT_MAX_SIZE} bytes", metadata={}
        ) from None
    try:
        body = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        bad(f"request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        bad(f"request body must be a JSON object, got {json_type(body)}")
    return body


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Fields:
    """Collects every field error of one JSON object, then raises them together."""

    def __init__(self, body: Mapping[str, Any], where: str = "") -> None:
        self.body = body
        self.where = where
        self.errors: list[str] = []

    def error(self, name: str, problem: str) -> None:
        self.errors.append(f"{self.where}{name}: {problem}")

    def unknown(self, allowed: set[str]) -> None:
        for name in sorted(set(self.body) - allowed):
            self.error(name, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def raw(self, name: str, required: bool) -> tuple[bool, Any]:
        if name not in self.body:
            if required:
                self.error(name, "is required")
            return False, None
        return True, self.body[name]

    def typed(self, name: str, required: bool, kind: type, what: str) -> Any:
        """The field's value when present and a ``kind``; else None (a wrong type noted)."""
        present, value = self.raw(name, required)
        if present and not isinstance(value, kind):
            self.error(name, f"must be {what}, got {json_type(value)}")
            return None
        return value

    def string(self, name: str, *, required: bool, choices: tuple[str, ...] = ()) -> str | None:
        value = self.typed(name, required, str, "a string")
        if value is None:
            return None
        if choices and value not in choices:
            self.error(name, f"must be one of {', '.join(choices)}, got {value[:50]!r}")
        elif not value.strip():
            self.error(name, "must be a non-empty string")
        else:
            return value
        return None

    def boolean(self, name: str, *, required: bool, default: bool = False) -> bool:
        value = self.typed(name, required, bool, "a boolean")
        return default if value is None else bool(value)

    def project_id(self, name: str, *, required: bool) -> int | None:
        """An integer, or a string of ASCII digits: Segment's production destination sends
        ``app_id`` as a string and Amplitude accepts it."""
        present, value = self.raw(name, required)
        if not present:
            return None
        if isinstance(value, str) and value.isascii() and value.isdigit():
            if len(value) > len(str(MAX_AMPLITUDE_ID)):
                self.error(name, "must be a positive integer")
                return None
            value = int(value)
        elif isinstance(value, str):
            self.error(name, f"must be an integer or a string of digits, got {value[:50]!r}")
            return None
        return self._positive(name, value)

    def _positive(self, name: str, value: Any) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"must be an integer, got {json_type(value)}")
        elif not 0 < value <= MAX_AMPLITUDE_ID:
            self.error(name, "must be a positive integer")
        else:
            return value
        return None

    def ids(self, name: str, *, limit: int) -> list[str] | None:
        value = self.typed(name, True, list, "an array of strings")
        if value is None:
            return None
        if not value:
            self.error(name, "must hold at least one id")
            return None
        if len(value) > limit:
            self.error(name, f"has {len(value)} ids: at most {limit} ids per request")
            return None
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.error(f"{name}[{index}]", f"must be a string, got {json_type(item)}")
                return None
        return value

    def check(self) -> None:
        if self.errors:
            bad("; ".join(self.errors), errors=self.errors)


async def request_fields(request: web.Request, allowed: Iterable[str]) -> Fields:
    """The request's JSON object, ready to read field by field; unknown fields noted."""
    fields = Fields(await json_object(request))
    fields.unknown(set(allowed))
    return fields


def sample(ids: list[str]) -> list[str]:
    """The first invalid ids, each cut to 200 characters, as Amplitude samples them."""
    return [i if len(i) <= 200 else i[:200] + "…" for i in ids[:INVALID_SAMPLE]]


def _by_amplitude_id(ids: list[str]) -> tuple[list[tuple[int, str]], list[str]]:
    """Valid members and invalid ids for ids that must be Amplitude ids (ASCII digits)."""
    valid: list[tuple[int, str]] = []
    invalid: list[str] = []
    for raw in ids:
        if _DIGITS.fullmatch(raw) and int(raw) <= MAX_AMPLITUDE_ID:
            valid.append((int(raw), ""))
        else:
            invalid.append(raw)
    return valid, invalid


def _by_user_id(ids: list[str]) -> tuple[list[tuple[int, str]], list[str]]:
    """Valid members and invalid ids for ids that are user ids (not blank)."""
    valid: list[tuple[int, str]] = []
    invalid: list[str] = []
    for raw in ids:
        if raw.strip():
            valid.append((amplitude_id_for(raw), raw))
        else:
            invalid.append(raw)
    return valid, invalid


def classify_ids(id_type: str, ids: list[str]) -> tuple[list[tuple[int, str]], list[str]]:
    """Distinct valid members and the invalid ids, for any of the four id types."""
    split = _by_amplitude_id if id_type in ("BY_AMP_ID", "BY_ID") else _by_user_id
    valid, invalid = split(ids)
    return list(dict.fromkeys(valid)), invalid


def invalid_ids(invalid: list[str], id_type: str) -> NoReturn:
    """Answer 400 for invalid ids under ``skip_invalid_ids: false``."""
    what = "Amplitude ids (digits only)" if id_type in ("BY_AMP_ID", "BY_ID") else "user ids"
    bad(
        f"{len(invalid)} invalid {what} and skip_invalid_ids is false: nothing was saved",
        invalid_ids_sample=sample(invalid),
        invalid_ids_count=len(invalid),
    )


# -- the application ---------------------------------------------------------------------

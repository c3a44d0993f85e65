"""Amplitude's Behavioral Cohorts API (spec part A) as data: paths, limits, bodies, answers.

Pure: builds request bodies, reads answers and error bodies, and names the hints a failed
call carries. The client that sends them is :mod:`cohortctl.customer.client`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cohortctl.errors import InputError, RequestFailed
from cohortctl.http.redact import Redactor
from cohortctl.http.text import body_excerpt
from cohortctl.retry import RetryPolicy

UPLOAD_PATH = "/api/3/cohorts/upload"
MEMBERSHIP_PATH = "/api/3/cohorts/membership"
COHORTS_PATH = "/api/3/cohorts"
EXPORT_REQUEST_PATH = "/api/5/cohorts/request/{cohort_id}"
EXPORT_STATUS_PATH = "/api/5/cohorts/request-status/{request_id}"
EXPORT_FILE_PATH = "/api/5/cohorts/request/{request_id}/file"

# The id types of cohortctl (cohortctl.ids.IdType values): user ids or Amplitude ids.
USER = "user"
AMPLITUDE = "amplitude"

MAX_IDS_PER_REQUEST = 100_000
MAX_COHORT_SIZE = 2_000_000

# Upload ``id_type`` values, and membership ``id_type`` values (BY_ID = Amplitude id,
# BY_NAME = user id).
BY_USER_ID = "BY_USER_ID"
BY_AMP_ID = "BY_AMP_ID"
BY_NAME = "BY_NAME"
BY_ID = "BY_ID"
ADD = "ADD"
REMOVE = "REMOVE"
UPLOAD_ID_TYPES = (BY_USER_ID, BY_AMP_ID)
MEMBERSHIP_ID_TYPES = (BY_NAME, BY_ID)
OPERATIONS = (ADD, REMOVE)

EXPORT_DONE = "JOB COMPLETED"
DEFAULT_RETRY = RetryPolicy(retries=5, base_delay=1.0, max_delay=60.0)
AMPLITUDE_REQUEST_TIMEOUT = 120.0

CREDENTIALS_HINT = (
    "check AMPLITUDE_API_KEY and AMPLITUDE_SECRET_KEY (or api_key / secret_key in your config "
    "profile): they must be the API key and secret key of the project that owns the app id"
)
RATE_LIMIT_HINT = (
    "Amplitude allows at most 5 concurrent requests per project across its REST API; "
    "wait a little, or check what else is calling it"
)
EXPORT_RATE_LIMIT_HINT = (
    "Amplitude allows at most 60 cohort export requests per 10 minutes and 4 in parallel per "
    "project (and 500 a month on paid plans): wait, or resume an export already requested "
    "with `cohortctl cohorts download ID --request-id RID`"
)
EXPORT_CALLS = frozenset({"request export", "export status", "download export"})


# -- pure body builders -------------------------------------------------------------------


def upload_body(
    *,
    name: str,
    app_id: int,
    id_type: str,
    ids: Sequence[str],
    owner: str,
    published: bool,
    existing_cohort_id: str | None = None,
    strict_ids: bool = False,
    validate_only: bool = False,
    group_type: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /api/3/cohorts/upload``; optional fields only when they apply.

    ``strict_ids`` sends ``skip_invalid_ids: false`` (one invalid id fails the whole upload),
    ``validate_only`` sends ``skip_save: true`` (Amplitude validates and saves nothing) and
    ``group_type`` sends ``cg`` (a group cohort instead of a user cohort).
    """
    if id_type not in UPLOAD_ID_TYPES:
        raise InputError(f"id_type must be one of {', '.join(UPLOAD_ID_TYPES)}, got {id_type!r}")
    if isinstance(app_id, bool) or not isinstance(app_id, int):
        raise InputError(f"app_id must be an integer (the project id), got {app_id!r}")
    body: dict[str, Any] = {
        "name": name,
        "app_id": app_id,
        "id_type": id_type,
        "ids": [str(i) for i in ids],
        "owner": owner,
        "published": bool(published),
    }
    if existing_cohort_id:
        body["existing_cohort_id"] = str(existing_cohort_id)
    if strict_ids:
        body["skip_invalid_ids"] = False
    if validate_only:
        body["skip_save"] = True
    if group_type:
        body["cg"] = group_type
    return body


def membership_body(
    cohort_id: str,
    ids: Sequence[str],
    *,
    id_type: str,
    operation: str,
    strict_ids: bool = False,
    group_type: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /api/3/cohorts/membership``: one ADD or REMOVE of ``ids``.

    ``id_type`` is ``BY_NAME`` (user ids) or ``BY_ID`` (Amplitude ids); ``group_type`` sends
    ``count_group``; ``strict_ids`` sends ``skip_invalid_ids: false``.
    """
    if id_type not in MEMBERSHIP_ID_TYPES:
        raise InputError(
            f"id_type must be one of {', '.join(MEMBERSHIP_ID_TYPES)}, got {id_type!r}"
        )
    if operation not in OPERATIONS:
        raise InputError(f"operation must be ADD or REMOVE, got {operation!r}")
    body: dict[str, Any] = {
        "cohort_id": str(cohort_id),
        "memberships": [{"ids": [str(i) for i in ids], "id_type": id_type, "operation": operation}],
    }
    if group_type:
        body["count_group"] = group_type
    if strict_ids:
        body["skip_invalid_ids"] = False
    return body


# -- answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadAnswer:
    """What Amplitude answered to one upload request."""

    cohort_id: str | None
    matched: int | None
    totals: int | None
    invalid_ids_sample: list[str]
    cohort: dict[str, Any]  # ``cohortsById[cohort_id]`` when present (name, size, owners ...)
    raw: dict[str, Any]

    @property
    def size(self) -> int | None:
        """The cohort's size as Amplitude reports it, if it did."""
        size = self.cohort.get("size")
        return size if isinstance(size, int) else None


@dataclass(frozen=True)
class MembershipAnswer:
    """What Amplitude answered to one membership request."""

    cohort_id: str | None
    skipped_ids: list[str]
    raw: dict[str, Any]


@dataclass(frozen=True)
class ExportRequest:
    """An asynchronous cohort export Amplitude accepted."""

    request_id: str
    cohort_id: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class ExportStatus:
    """One poll of an export's status."""

    request_id: str
    async_status: str
    raw: dict[str, Any]

    @property
    def done(self) -> bool:
        """True once the export file can be downloaded."""
        return self.async_status.upper() == EXPORT_DONE


@dataclass(frozen=True)
class ExportPoll:
    """Reported to a progress callback after each status poll."""

    polls: int
    async_status: str
    elapsed: float
    next_delay: float | None


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt the client made, kept for reports and tests (no headers, no bodies)."""

    call: str
    method: str
    path: str
    status: int | None
    error: str | None = None
    waited: float = 0.0


def cohort_id_of(data: Mapping[str, Any]) -> str | None:
    value = data.get("cohortId", data.get("cohort_id"))
    return None if value is None else str(value)


def parse_upload_answer(data: Mapping[str, Any]) -> UploadAnswer:
    """Read an upload answer: ``cohortId`` (or the older ``cohort_id``) and ``metadata``."""
    cohort_id = cohort_id_of(data)
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        metadata = {}
    by_id = data.get("cohortsById") or {}
    cohort = by_id.get(cohort_id, {}) if isinstance(by_id, Mapping) and cohort_id else {}
    sample = metadata.get("invalid_ids_sample") or []
    return UploadAnswer(
        cohort_id=cohort_id,
        matched=_int_or_none(metadata.get("matched")),
        totals=_int_or_none(metadata.get("totals")),
        invalid_ids_sample=[str(i) for i in sample] if isinstance(sample, list) else [],
        cohort=dict(cohort) if isinstance(cohort, Mapping) else {},
        raw=dict(data),
    )


def parse_membership_answer(data: Mapping[str, Any]) -> MembershipAnswer:
    """Read a membership answer: the cohort id and every skipped id across its results."""
    skipped: list[str] = []
    for result in data.get("memberships_result") or []:
        if isinstance(result, Mapping):
            skipped.extend(str(i) for i in result.get("skipped_ids") or [])
    return MembershipAnswer(cohort_id=cohort_id_of(data), skipped_ids=skipped, raw=dict(data))


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_error_body(body: str) -> tuple[str | None, str | None]:
    """``(type, message)`` from either documented error shape, or ``(None, None)``.

    Current: ``{"error": {"http_code", "type", "message", "metadata"}}``;
    older: ``{"error": {"message", "code", "metadata"}}``.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, Mapping):
        return None, None
    error = data.get("error")
    if isinstance(error, str):
        return None, error
    if not isinstance(error, Mapping):
        message = data.get("message")
        return None, message if isinstance(message, str) else None
    kind = error.get("type")
    if kind is None and error.get("code") is not None:
        kind = str(error["code"])
    message = error.get("message")
    return (
        None if kind is None else str(kind),
        None if message is None else str(message),
    )


def request_failed(
    call: str, status: int, body: str, *, retried: int = 0, redact: Redactor | None = None
) -> RequestFailed:
    """A RequestFailed naming the call, the status, Amplitude's error type and message.

    ``redact`` removes the credentials that were sent from the body first (an error body may
    echo the request's headers).
    """
    if redact is not None:
        body = redact.text(body)
    kind, message = parse_error_body(body)
    text = f"{call}: Amplitude answered HTTP {status}"
    if kind:
        text += f" {kind}"
    if message:
        text += f": {message}"
    if retried:
        text += f" (after {retried} retries)"
    hint = None
    if status in (401, 403):
        hint = CREDENTIALS_HINT
    elif status == 429:
        hint = EXPORT_RATE_LIMIT_HINT if call in EXPORT_CALLS else RATE_LIMIT_HINT
    shown_body = "" if message else body_excerpt(body, 500)
    return RequestFailed(text, status=status, body=shown_body, error_type=kind, hint=hint)


# -- the client ---------------------------------------------------------------------------

"""Client for Amplitude's Behavioral Cohorts API (spec part A), built on a caller's httpx client.

The caller hands in an ``httpx.Client`` with ``base_url`` and Basic auth already set (see
:func:`connect`), so tests can pass ``httpx.MockTransport`` or point it at the embedded fake.

Retries follow :class:`~cohortctl.retry.RetryPolicy` (429, 5xx, no answer; ``Retry-After``
wins), with one exception: an upload that *creates* a cohort is not idempotent, so once the
request may have reached Amplitude (a 5xx, a read timeout, a reset) it is not sent again:
a second copy could create a second cohort. 429 and refused connections are always retried,
since Amplitude did not act on them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cohortctl.errors import (
    CheckFailed,
    CohortctlError,
    FileWriteError,
    InputError,
    RequestFailed,
    TransportFailed,
)
from cohortctl.files import os_reason
from cohortctl.outcomes import REFUSED, TLS, classify_transport_error
from cohortctl.render import body_excerpt
from cohortctl.retry import RetryPolicy, is_retryable_status, parse_retry_after

UPLOAD_PATH = "/api/3/cohorts/upload"
MEMBERSHIP_PATH = "/api/3/cohorts/membership"
COHORTS_PATH = "/api/3/cohorts"
EXPORT_REQUEST_PATH = "/api/5/cohorts/request/{cohort_id}"
EXPORT_STATUS_PATH = "/api/5/cohorts/request-status/{request_id}"
EXPORT_FILE_PATH = "/api/5/cohorts/request/{request_id}/file"

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
DEFAULT_TIMEOUT = 120.0
USER_AGENT = "cohortctl"

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


def _cohort_id_of(data: Mapping[str, Any]) -> str | None:
    value = data.get("cohortId", data.get("cohort_id"))
    return None if value is None else str(value)


def parse_upload_answer(data: Mapping[str, Any]) -> UploadAnswer:
    """Read an upload answer: ``cohortId`` (or the older ``cohort_id``) and ``metadata``."""
    cohort_id = _cohort_id_of(data)
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
    return MembershipAnswer(cohort_id=_cohort_id_of(data), skipped_ids=skipped, raw=dict(data))


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


def request_failed(call: str, status: int, body: str, *, retried: int = 0) -> RequestFailed:
    """A RequestFailed naming the call, the status, Amplitude's error type and message."""
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


class AmplitudeClient:
    """Amplitude's cohort endpoints over a caller-provided ``httpx.Client``.

    Every request goes through one retry loop; ``attempts`` records each try (call, path,
    status) for reports. ``sleep`` and ``clock`` are injectable so tests never wait.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_delay: float = 1.0,
        poll_max_delay: float = 30.0,
    ) -> None:
        self.http = http
        self.retry = retry
        self.sleep = sleep
        self.clock = clock
        self.poll_delay = poll_delay
        self.poll_max_delay = poll_max_delay
        self.attempts: list[Attempt] = []

    @property
    def base_url(self) -> str:
        """The host the client talks to, without any credentials."""
        url = self.http.base_url
        return str(url.copy_with(username=None, password=None)).rstrip("/")

    # -- cohorts ---------------------------------------------------------------------------

    def upload(self, body: Mapping[str, Any]) -> UploadAnswer:
        """``POST /api/3/cohorts/upload`` with a body from :func:`upload_body`."""
        creates = not body.get("existing_cohort_id") and not body.get("skip_save")
        response = self._request("upload", "POST", UPLOAD_PATH, json=body, idempotent=not creates)
        return parse_upload_answer(_json_object("upload", response))

    def membership(self, body: Mapping[str, Any]) -> MembershipAnswer:
        """``POST /api/3/cohorts/membership`` with a body from :func:`membership_body`."""
        operations = {m.get("operation") for m in body.get("memberships", [])}
        call = f"membership {'/'.join(sorted(str(o) for o in operations))}".strip()
        response = self._request(call, "POST", MEMBERSHIP_PATH, json=body)
        return parse_membership_answer(_json_object(call, response))

    def list_cohorts(self, include_sync_info: bool = False) -> list[dict[str, Any]]:
        """``GET /api/3/cohorts``: every cohort of the project (with ``syncMetadata`` if asked)."""
        params = {"includeSyncInfo": "true"} if include_sync_info else None
        response = self._request("list cohorts", "GET", COHORTS_PATH, params=params)
        data = _json_object("list cohorts", response)
        cohorts = data.get("cohorts")
        if not isinstance(cohorts, list):
            raise RequestFailed(
                "list cohorts: Amplitude's answer has no 'cohorts' list",
                status=response.status_code,
                body=body_excerpt(response.text),
            )
        return [c for c in cohorts if isinstance(c, dict)]

    # -- export ----------------------------------------------------------------------------

    def request_export(
        self, cohort_id: str, *, props: bool = False, prop_keys: Sequence[str] = ()
    ) -> ExportRequest:
        """``GET /api/5/cohorts/request/{id}``: start an export; returns its request id."""
        # One propKeys parameter per key, as Amplitude documents it.
        params: dict[str, Any] = {}
        if props or prop_keys:
            params["props"] = "1"
        if prop_keys:
            params["propKeys"] = list(prop_keys)
        path = EXPORT_REQUEST_PATH.format(cohort_id=_path_part(cohort_id, "cohort id"))
        response = self._request("request export", "GET", path, params=params or None)
        data = _json_object("request export", response)
        request_id = data.get("request_id")
        if not request_id:
            raise RequestFailed(
                "request export: Amplitude's answer has no request_id",
                status=response.status_code,
                body=body_excerpt(response.text),
            )
        return ExportRequest(str(request_id), _cohort_id_of(data), data)

    def export_status(self, request_id: str) -> ExportStatus:
        """``GET /api/5/cohorts/request-status/{request_id}``: one poll."""
        path = EXPORT_STATUS_PATH.format(request_id=_path_part(request_id, "request id"))
        response = self._request("export status", "GET", path)
        data = _json_object("export status", response)
        return ExportStatus(request_id, str(data.get("async_status", "")), data)

    def wait_for_export(
        self,
        request_id: str,
        *,
        timeout: float,
        on_poll: Callable[[ExportPoll], None] | None = None,
    ) -> ExportStatus:
        """Poll until the export is done, waiting ``poll_delay`` doubling up to its cap.

        Raises TransportFailed (kind ``timeout``) when ``timeout`` seconds pass first.
        """
        start = self.clock()
        delay = self.poll_delay
        polls = 0
        while True:
            status = self.export_status(request_id)
            polls += 1
            elapsed = self.clock() - start
            if status.done:
                if on_poll:
                    on_poll(ExportPoll(polls, status.async_status, elapsed, None))
                return status
            remaining = timeout - elapsed
            if remaining <= 0:
                raise TransportFailed(
                    f"export {request_id} not ready after {polls} polls in {elapsed:.0f}s "
                    f"(last status: {status.async_status or 'none'})",
                    kind="timeout",
                )
            wait = min(delay, remaining)
            if on_poll:
                on_poll(ExportPoll(polls, status.async_status, elapsed, wait))
            self.sleep(wait)
            delay = min(delay * 2, self.poll_max_delay)

    def download_export(self, request_id: str, dest: Path) -> int:
        """Download a finished export's CSV to ``dest``; returns the number of bytes written.

        Amplitude answers either with the file or with a 302 to a signed URL. The signed URL
        is fetched *without* the Authorization header: the secret never leaves for another
        host. The file is written to a temporary file beside ``dest`` and renamed at the end,
        so a failed download leaves no half-written file.
        """
        with self.open_export(request_id) as response:
            return _write_atomically(response, dest)

    @contextlib.contextmanager
    def open_export(self, request_id: str) -> Iterator[httpx.Response]:
        """A finished export's CSV as an unread, streamed response (read it as it arrives).

        A 302 to a signed URL is followed *without* the Authorization header.
        """
        path = EXPORT_FILE_PATH.format(request_id=_path_part(request_id, "request id"))
        with self._stream("download export", "GET", path) as response:
            if response.status_code not in (301, 302, 303, 307, 308):
                yield response
                return
            location = response.headers.get("location")
            if not location:
                raise RequestFailed(
                    f"download export: HTTP {response.status_code} without a Location",
                    status=response.status_code,
                )
            target = response.url.join(location)
            with self._stream(
                "download export file", "GET", str(target), authenticated=False
            ) as signed:
                yield signed

    # -- the retry loop --------------------------------------------------------------------

    def _request(
        self,
        call: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        with self._stream(
            call, method, path, json=json, params=params, idempotent=idempotent
        ) as response:
            response.read()
            return response

    @contextlib.contextmanager
    def _stream(
        self,
        call: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
        authenticated: bool = True,
    ) -> Iterator[httpx.Response]:
        """Send with retries; yield the first answer that is 2xx or 3xx, unread."""
        retry_number = 0
        waited = 0.0
        while True:
            request = self.http.build_request(method, path, json=json, params=params)
            if not authenticated:
                request.headers.pop("Authorization", None)
            shown_path = request.url.path
            try:
                response = self.http.send(
                    request,
                    stream=True,
                    auth=None if not authenticated else httpx.USE_CLIENT_DEFAULT,
                    follow_redirects=not authenticated,
                )
            except httpx.TransportError as exc:
                kind = classify_transport_error(exc)
                self.attempts.append(Attempt(call, method, shown_path, None, kind, waited))
                # Refused: the request never arrived, so even a creating upload is safe to resend.
                safe = idempotent or kind == REFUSED
                if kind != TLS and safe and retry_number < self.retry.retries:
                    retry_number += 1
                    waited = self.retry.delay(retry_number)
                    self.sleep(waited)
                    continue
                host = request.url.copy_with(username=None, password=None, path="/", query=None)
                tries = f" after {retry_number + 1} attempts" if retry_number else ""
                raise TransportFailed(
                    f"{call}: no answer from {str(host).rstrip('/')}: {kind}{tries}", kind=kind
                ) from None
            status = response.status_code
            self.attempts.append(Attempt(call, method, shown_path, status, None, waited))
            if status < 400:
                try:
                    yield response
                finally:
                    response.close()
                return
            body = _read_text(response)
            response.close()
            safe = idempotent or status == 429
            if is_retryable_status(status) and safe and retry_number < self.retry.retries:
                retry_number += 1
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                waited = self.retry.delay(retry_number, retry_after)
                self.sleep(waited)
                continue
            error = request_failed(call, status, body, retried=retry_number)
            if is_retryable_status(status) and not safe:
                error.hint = (
                    "the upload was not resent because it creates a cohort and Amplitude may "
                    "have created it: check `cohortctl cohorts list` before uploading again"
                )
            raise error


def _read_text(response: httpx.Response) -> str:
    try:
        response.read()
        return response.text
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""


def _json_object(call: str, response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise RequestFailed(
            f"{call}: Amplitude answered HTTP {response.status_code} with a body that is not JSON",
            status=response.status_code,
            body=body_excerpt(response.text),
        ) from None
    if not isinstance(data, dict):
        raise RequestFailed(
            f"{call}: Amplitude answered HTTP {response.status_code} with JSON that is not "
            "an object",
            status=response.status_code,
            body=body_excerpt(response.text),
        )
    return data


def _path_part(value: str, what: str) -> str:
    text = str(value).strip()
    if not text or any(c in text for c in "/?#") or any(c.isspace() for c in text):
        raise InputError(f"invalid {what}: {value!r}")
    return text


def _write_atomically(response: httpx.Response, dest: Path) -> int:
    dest = Path(dest)
    directory = dest.parent if str(dest.parent) else Path(".")
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as tmp:
            for chunk in response.iter_bytes():
                tmp.write(chunk)
                written += len(chunk)
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return written


# -- building a client and a whole download -------------------------------------------------


def connect(
    base_url: str,
    *,
    api_key: str,
    secret_key: str,
    timeout: float = DEFAULT_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
    poll_delay: float = 1.0,
    poll_max_delay: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> AmplitudeClient:
    """An :class:`AmplitudeClient` on a new ``httpx.Client`` (close it with ``client.http``).

    ``base_url`` must already be checked with :func:`cohortctl.config.ensure_safe_url`.
    """
    from cohortctl.http.observed import observed

    http = observed(
        httpx.Client(
            base_url=base_url,
            auth=httpx.BasicAuth(api_key, secret_key),
            timeout=timeout,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
        )
    )
    return AmplitudeClient(
        http, retry=retry, sleep=sleep, poll_delay=poll_delay, poll_max_delay=poll_max_delay
    )


@dataclass
class DownloadResult:
    """What ``cohorts download`` produced."""

    cohort_id: str
    request_id: str
    path: str
    bytes: int
    rows: int
    members_written: int
    skipped_without_id: int
    ids_only: bool
    id_column: str | None
    polls: int
    answers: dict[str, Any] = field(default_factory=dict)


def download_cohort(
    client: AmplitudeClient,
    cohort_id: str,
    dest: Path,
    *,
    ids_only: bool = False,
    amplitude_ids: bool = False,
    props: bool = False,
    prop_keys: Sequence[str] = (),
    timeout: float = 900.0,
    on_poll: Callable[[ExportPoll], None] | None = None,
    request_id: str | None = None,
) -> DownloadResult:
    """Export a cohort and write its members to ``dest``.

    By default the CSV exactly as Amplitude gives it; with ``ids_only`` one id per line:
    the ``user_id`` column, or ``amplitude_id`` when ``amplitude_ids`` (members without a
    user id are left out and counted). ``request_id`` resumes an export already requested
    (its file stays available for 7 days) instead of requesting a new one.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"{dest} is a directory: give a file name to write the members to")
    if not dest.parent.exists():
        raise InputError(f"{dest.parent} does not exist")
    if request_id is not None:
        started = ExportRequest(_path_part(request_id, "request id"), str(cohort_id), {})
    else:
        started = client.request_export(cohort_id, props=props, prop_keys=prop_keys)
    try:
        return _finish_download(
            client, str(cohort_id), started, dest, ids_only=ids_only, amplitude_ids=amplitude_ids,
            timeout=timeout, on_poll=on_poll,
        )  # fmt: skip
    except CohortctlError as error:
        if request_id is None:  # the user's own request id needs no reminder
            resume = resume_hint(str(cohort_id), started.request_id)
            error.hint = "; ".join(h for h in (error.hint, resume) if h)
        raise


def resume_hint(cohort_id: str, request_id: str) -> str:
    """How to pick up an export that was already requested, without a new request."""
    return (
        f"the export was requested ({request_id}); its file stays available for 7 days: "
        f"`cohortctl cohorts download {cohort_id} --request-id {request_id} -o FILE` "
        "resumes it without a new request"
    )


def _finish_download(
    client: AmplitudeClient,
    cohort_id: str,
    started: ExportRequest,
    dest: Path,
    *,
    ids_only: bool,
    amplitude_ids: bool,
    timeout: float,
    on_poll: Callable[[ExportPoll], None] | None,
) -> DownloadResult:
    polls: list[ExportPoll] = []

    def record(poll: ExportPoll) -> None:
        polls.append(poll)
        if on_poll:
            on_poll(poll)

    status = client.wait_for_export(started.request_id, timeout=timeout, on_poll=record)
    exported = status.raw.get("cohort_id")
    if exported is not None and str(exported) != cohort_id:
        raise CheckFailed(
            f"export {started.request_id} is an export of cohort {exported}, not {cohort_id}"
        )
    column = ("amplitude_id" if amplitude_ids else "user_id") if ids_only else None
    try:
        if not ids_only:
            size = client.download_export(started.request_id, dest)
            rows = _count_csv_rows(dest)
            written, skipped = rows, 0
        else:
            raw_dest = dest.with_name(f".{dest.name}.export.csv")
            try:
                size = client.download_export(started.request_id, raw_dest)
                rows, written, skipped = _write_id_column(raw_dest, dest, column or "user_id")
            finally:
                raw_dest.unlink(missing_ok=True)
    except OSError as exc:  # a full or read-only disk: no partial file was left behind
        raise FileWriteError("download file", dest, os_reason(exc)) from None
    return DownloadResult(
        cohort_id=str(cohort_id),
        request_id=started.request_id,
        path=str(dest),
        bytes=size,
        rows=rows,
        members_written=written,
        skipped_without_id=skipped,
        ids_only=ids_only,
        id_column=column,
        polls=len(polls),
        answers={"request": started.raw, "status": status.raw},
    )


def _count_csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        return sum(1 for row in reader if any(cell.strip() for cell in row))


def _write_id_column(source: Path, dest: Path, column: str) -> tuple[int, int, int]:
    """Copy one column of an export CSV to ``dest``, one id per line: (rows, written, skipped)."""
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        counts = _copy_column(source, tmp, column)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return counts


def _copy_column(source: Path, tmp: Path, column: str) -> tuple[int, int, int]:
    rows = written = skipped = 0
    with (
        source.open(encoding="utf-8", newline="") as handle,
        tmp.open("w", encoding="utf-8") as out,
    ):
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        if column not in header:
            raise CheckFailed(
                f"download export: the export has no {column!r} column "
                f"(columns: {', '.join(header) or 'none'})"
            )
        index = header.index(column)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows += 1
            value = row[index].strip() if index < len(row) else ""
            if value:
                out.write(value + "\n")
                written += 1
            else:
                skipped += 1
    return rows, written, skipped

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
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from cohortctl.customer.api import (
    AMPLITUDE_REQUEST_TIMEOUT,
    COHORTS_PATH,
    DEFAULT_RETRY,
    EXPORT_FILE_PATH,
    EXPORT_REQUEST_PATH,
    EXPORT_STATUS_PATH,
    MEMBERSHIP_PATH,
    UPLOAD_PATH,
    Attempt,
    ExportPoll,
    ExportRequest,
    ExportStatus,
    MembershipAnswer,
    UploadAnswer,
    cohort_id_of,
    parse_membership_answer,
    parse_upload_answer,
    request_failed,
)
from cohortctl.errors import (
    InputError,
    RequestFailed,
    TransportFailed,
)
from cohortctl.http.client import held, make_client, read_held
from cohortctl.http.outcomes import PROXY, REFUSED, TLS, classify_transport_error
from cohortctl.http.redact import Redactor, credential_values
from cohortctl.http.redirects import redirect_note
from cohortctl.http.text import body_excerpt
from cohortctl.retry import RetryPolicy, is_retryable_status, parse_retry_after


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
        redactor: Redactor | None = None,
    ) -> None:
        self.http = http
        self.redactor = redactor or _client_redactor(http)
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
        return parse_upload_answer(self._json_object("upload", response))

    def membership(self, body: Mapping[str, Any]) -> MembershipAnswer:
        """``POST /api/3/cohorts/membership`` with a body from :func:`membership_body`."""
        operations = {m.get("operation") for m in body.get("memberships", [])}
        call = f"membership {'/'.join(sorted(str(o) for o in operations))}".strip()
        response = self._request(call, "POST", MEMBERSHIP_PATH, json=body)
        return parse_membership_answer(self._json_object(call, response))

    def list_cohorts(self, include_sync_info: bool = False) -> list[dict[str, Any]]:
        """``GET /api/3/cohorts``: every cohort of the project (with ``syncMetadata`` if asked)."""
        params = {"includeSyncInfo": "true"} if include_sync_info else None
        response = self._request("list cohorts", "GET", COHORTS_PATH, params=params)
        data = self._json_object("list cohorts", response)
        cohorts = data.get("cohorts")
        if not isinstance(cohorts, list):
            raise RequestFailed(
                "list cohorts: Amplitude's answer has no 'cohorts' list",
                status=response.status_code,
                body=body_excerpt(self.redactor.text(response.text)),
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
        path = EXPORT_REQUEST_PATH.format(cohort_id=path_part(cohort_id, "cohort id"))
        response = self._request("request export", "GET", path, params=params or None)
        data = self._json_object("request export", response)
        request_id = data.get("request_id")
        problem = None
        if request_id is None or request_id == "":
            problem = "has no request_id"
        elif isinstance(request_id, bool) or not isinstance(request_id, (str, int, float)):
            problem = f"has a request_id that is not a string or number: {request_id!r}"
        elif str(request_id).strip() in ("", ".", ".."):
            problem = f"has a request_id that cannot be a path segment: {request_id!r}"
        if problem is not None:
            raise RequestFailed(
                f"request export: invalid answer: Amplitude's answer {problem}",
                status=response.status_code,
                body=body_excerpt(self.redactor.text(response.text)),
            )
        return ExportRequest(str(request_id), cohort_id_of(data), data)

    def export_status(self, request_id: str) -> ExportStatus:
        """``GET /api/5/cohorts/request-status/{request_id}``: one poll."""
        path = EXPORT_STATUS_PATH.format(request_id=path_part(request_id, "request id"))
        response = self._request("export status", "GET", path)
        data = self._json_object("export status", response)
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
        path = EXPORT_FILE_PATH.format(request_id=path_part(request_id, "request id"))
        with self._stream("download export", "GET", path, redirects=True) as response:
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

    def _request(self, call: str, method: str, path: str, **options: Any) -> httpx.Response:
        """:meth:`_stream` (same ``options``) with the answer read, at most ``MAX_HELD``."""
        with self._stream(call, method, path, **options) as response:
            try:
                return held(response)
            except httpx.TransportError as exc:
                kind = classify_transport_error(exc)
                raise TransportFailed(
                    f"{call}: the answer from {self.base_url} broke off: {kind}", kind=kind
                ) from None

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
        redirects: bool = False,
    ) -> Iterator[httpx.Response]:
        """Send with retries; yield the first 2xx answer (or 3xx with ``redirects``), unread.

        A redirect is never followed with credentials: without ``redirects`` it is an error
        showing its ``Location``; ``authenticated=False`` (the export's signed URL) follows
        redirects with no credentials at all.
        """
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
                if kind == PROXY:
                    raise TransportFailed(
                        f"{call}: {self.redactor.text(str(exc))}", kind=kind
                    ) from None
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
            if 300 <= status < 400 and not redirects and authenticated:
                location = response.headers.get("location")
                response.close()
                note = redirect_note(location, str(request.url))
                raise RequestFailed(
                    f"{call}: Amplitude answered HTTP {status}, {self.redactor.text(note)}",
                    status=status,
                    hint="check --base-url (or AMPLITUDE_BASE_URL): redirects are not followed,"
                    " so credentials never travel to another address",
                )
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
            error = request_failed(
                call, status, body, retried=retry_number, redact=self.redactor
            )
            if is_retryable_status(status) and not safe:
                error.hint = (
                    "the upload was not resent because it creates a cohort and Amplitude may "
                    "have created it: check `cohortctl cohorts list` before uploading again"
                )
            raise error


    def _json_object(self, call: str, response: httpx.Response) -> dict[str, Any]:
        shown = body_excerpt(self.redactor.text(response.text))
        if response.extensions.get("cut"):
            raise RequestFailed(
                f"{call}: Amplitude's answer is over 1 MiB: cut, not parsed",
                status=response.status_code,
                body=shown,
            )
        try:
            data = response.json()
        except ValueError:
            raise RequestFailed(
                f"{call}: Amplitude answered HTTP {response.status_code} with a body that is"
                " not JSON",
                status=response.status_code,
                body=shown,
            ) from None
        if not isinstance(data, dict):
            raise RequestFailed(
                f"{call}: Amplitude answered HTTP {response.status_code} with JSON that is not "
                "an object",
                status=response.status_code,
                body=shown,
            )
        return data


def _client_redactor(http: httpx.Client) -> Redactor:
    """The credentials an httpx client sends: its Basic auth and its credential headers."""
    secrets: list[str] = []
    auth = getattr(http, "auth", None)
    header = getattr(auth, "_auth_header", None)
    if isinstance(header, str):
        secrets.extend(credential_values("Authorization", header))
    return Redactor(secrets).merged(Redactor.for_headers(http.headers.multi_items()))


def _read_text(response: httpx.Response) -> str:
    try:
        body, _ = read_held(response)
    except httpx.HTTPError:
        return ""
    return body.decode(response.encoding or "utf-8", "replace")


def path_part(value: str, what: str) -> str:
    """``value`` as one URL path segment, or an InputError naming ``what``."""
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
    timeout: float = AMPLITUDE_REQUEST_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
    poll_delay: float = 1.0,
    poll_max_delay: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> AmplitudeClient:
    """An :class:`AmplitudeClient` on a new ``httpx.Client`` (close it with ``client.http``).

    ``base_url`` must already be checked with :func:`cohortctl.config.ensure_safe_url`.
    """
    basic = httpx.BasicAuth(api_key, secret_key)
    redactor = Redactor([api_key, secret_key, f"{api_key}:{secret_key}"])
    redactor = redactor.merged(Redactor(credential_values("Authorization", basic._auth_header)))
    http = make_client(
        base_url=base_url,
        auth=basic,
        timeout=timeout,
        headers={"Accept": "application/json"},
        redactor=redactor,
        transport=transport,
    )
    return AmplitudeClient(
        http,
        retry=retry,
        sleep=sleep,
        poll_delay=poll_delay,
        poll_max_delay=poll_max_delay,
        redactor=redactor,
    )

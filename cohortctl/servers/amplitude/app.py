"""An embedded fake of Amplitude's Behavioral Cohorts API (spec part A), strict on purpose.

Routes (all under ``/api`` need HTTP Basic auth: username = API key, password = secret key):

    POST /api/3/cohorts/upload                         A1: create or replace a cohort
    POST /api/3/cohorts/membership                     A2: ADD / REMOVE members
    GET  /api/3/cohorts[?includeSyncInfo=true]         A3: list cohorts
    GET  /api/2/usersearch?user=X                      find users by id or user id prefix
    GET  /api/5/cohorts/request/{cohort_id}            A3: start an export (202)
    GET  /api/5/cohorts/request-status/{request_id}    A3: 202 JOB INPROGRESS, then 200 COMPLETED
    GET  /api/5/cohorts/request/{request_id}/file      A3: the CSV, or 302 to /signed/{token}
    GET  /signed/{token}                               the "signed URL": no auth, valid 60 s

Limits as documented: 100,000 ids per request, 2,000,000 members per cohort, 5 requests in
flight per API key (the next answers 429 with ``Retry-After: 1``), 4 exports running at once,
one membership change per cohort at a time (a second one answers 429). Every error answers
``{"error": {"http_code", "type", "message", "metadata"}}``. Secrets are never echoed.

Tests reach the state through ``app[STORE_KEY]`` (a thread-safe :class:`CohortStore`) and the
traffic through ``app[TRAFFIC_KEY]`` (request log, in-flight high-water mark). A
``checkpoint`` passed to :func:`create_app` is awaited where a handler holds its slot (after
the concurrency and per-cohort checks), so concurrency tests can hold handlers there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from cohortctl.customer.api import MAX_COHORT_SIZE, MAX_IDS_PER_REQUEST
from cohortctl.servers.amplitude.store import (
    CohortStore,
    CohortTooLarge,
    ExportJob,
    MemberChange,
)
from cohortctl.servers.amplitude.traffic import RequestLog, RequestRecord
from cohortctl.servers.amplitude.validation import (
    EMAIL,
    ApiError,
    Fields,
    bad,
    classify_ids,
    invalid_ids,
    json_type,
    request_fields,
    sample,
)
from cohortctl.servers.runner import CLIENT_MAX_SIZE, Handler

T = TypeVar("T")
log = logging.getLogger(__name__)
Checkpoint = Callable[[], Awaitable[None]]


async def _no_checkpoint() -> None:
    return None


MAX_CONCURRENT = 5
MAX_PARALLEL_EXPORTS = 4
EXPORTS_PER_WINDOW = 60  # export requests per project per EXPORT_WINDOW seconds
EXPORT_WINDOW = 600.0
SIGNED_URL_TTL = 60.0
# An export nobody polls stops counting against the 4 in parallel after this long ("4 parallel
# requests per minute"); Segment's cohort look-up starts an export it never polls.
EXPORT_RUNS_FOR = 60.0
USER_SEARCH_LIMIT = 100


STORE_KEY = web.AppKey("cohortctl.amplitude.store", CohortStore)
TRAFFIC_KEY = web.AppKey("cohortctl.amplitude.traffic", RequestLog)


@dataclass(frozen=True)
class _SignedUrl:
    request_id: str
    expires: float


@dataclass(frozen=True)
class FakeSettings:
    """How the fake behaves: the one key pair it accepts, its storage and its limits.

    ``db`` is a SQLite file (state survives restarts) or ``":memory:"``. ``export_polls`` is
    how many status polls answer JOB INPROGRESS before JOB COMPLETED; ``export_redirect``
    answers the file request with a 302 to a signed URL. ``app_id``, when given, is the only
    project id uploads may name.
    """

    api_key: str = field(repr=False)  # secrets: never in a repr or a traceback
    secret_key: str = field(repr=False)
    db: str = ":memory:"
    export_polls: int = 1
    export_redirect: bool = False
    max_concurrent: int = MAX_CONCURRENT
    max_ids_per_request: int = MAX_IDS_PER_REQUEST
    max_cohort_size: int = MAX_COHORT_SIZE
    app_id: int | None = None

    def __post_init__(self) -> None:
        if not self.api_key or not self.secret_key:
            raise ValueError("the fake Amplitude API needs an api key and a secret key")
        limits = (self.max_concurrent, self.max_ids_per_request, self.max_cohort_size)
        if self.export_polls < 0 or min(limits) < 1:
            raise ValueError("export_polls must be >= 0 and every limit >= 1")


@dataclass(kw_only=True, eq=False)
class FakeAmplitude:
    """Handlers and the state they share; built by :func:`create_app`."""

    UPLOAD_FIELDS = frozenset(
        {
            "name",
            "app_id",
            "id_type",
            "ids",
            "owner",
            "published",
            "existing_cohort_id",
            "skip_invalid_ids",
            "skip_save",
            "cg",
        }
    )
    MEMBERSHIP_FIELDS = frozenset({"cohort_id", "memberships", "count_group", "skip_invalid_ids"})
    CHANGE_FIELDS = frozenset({"ids", "id_type", "operation"})

    settings: FakeSettings
    store: CohortStore
    clock: Callable[[], float]
    checkpoint: Checkpoint
    traffic: RequestLog = field(default_factory=RequestLog, init=False)

    def __post_init__(self) -> None:
        self._api_key = self.settings.api_key.encode("utf-8")
        self._secret_key = self.settings.secret_key.encode("utf-8")
        self._busy_cohorts: set[str] = set()
        self._signed: dict[str, _SignedUrl] = {}
        self._export_times: deque[float] = deque()
        # One worker: the store serialises on its lock anyway; this keeps the loop responsive.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-amplitude")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self, _app: web.Application) -> None:
        """Stop the worker and close the database."""
        self._executor.shutdown(wait=True)
        self.store.close()

    # -- middleware --------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Errors in Amplitude's shape; auth and the concurrency limit on /api."""
        record = RequestRecord(
            request.method, request.path, authorization_sent="Authorization" in request.headers
        )
        try:
            if request.path.startswith("/api/"):
                self._authenticate(request)
                response = await self._admitted(request, handler, record)
            else:
                response = await handler(request)
        except ApiError as error:
            response = error.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = f"{request.method} {request.path}: {exc.reason}"
            response = ApiError(exc.status, message, headers=_allow(exc)).response()
        except Exception:
            log.exception("fake Amplitude API failed on %s %s", request.method, request.path)
            response = ApiError(500, "internal error in the fake Amplitude API").response()
        record.status = response.status
        self.traffic.record(record)
        return response

    async def _admitted(
        self, request: web.Request, handler: Handler, record: RequestRecord
    ) -> web.StreamResponse:
        in_flight = self.traffic.enter(record)
        rejected = in_flight > self.settings.max_concurrent
        try:
            if rejected:
                raise ApiError.throttled(
                    f"too many concurrent requests: at most {self.settings.max_concurrent} "
                    "in flight per project",
                    limit=self.settings.max_concurrent,
                )
            return await handler(request)
        finally:
            self.traffic.leave(record, rejected=rejected)

    def _authenticate(self, request: web.Request) -> None:
        challenge = {"WWW-Authenticate": 'Basic realm="Amplitude"'}
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise ApiError(
                401, "missing HTTP Basic credentials: api key and secret key", headers=challenge
            )
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(401, "malformed HTTP Basic credentials", headers=challenge) from None
        key, _, secret = decoded.partition(b":")
        if not hmac.compare_digest(key, self._api_key):
            raise ApiError(401, "invalid api key or secret key", headers=challenge)
        if not secret:
            raise ApiError(403, "missing secret key: send the project secret key as the password")
        if not hmac.compare_digest(secret, self._secret_key):
            raise ApiError(401, "invalid api key or secret key", headers=challenge)

    # -- A1 upload ---------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /api/3/cohorts/upload``: create a cohort or replace one's members."""
        f = await request_fields(request, self.UPLOAD_FIELDS)
        name = f.string("name", required=True)
        app_id = f.project_id("app_id", required=True)
        id_type = f.string("id_type", required=True, choices=("BY_AMP_ID", "BY_USER_ID"))
        ids = f.ids("ids", limit=self.settings.max_ids_per_request)
        owner = f.string("owner", required=True)
        if owner is not None and not EMAIL.fullmatch(owner):
            f.error("owner", "must be the login email of the cohort's owner")
        published = f.boolean("published", required=True)
        existing = f.string("existing_cohort_id", required=False)
        skip_invalid = f.boolean("skip_invalid_ids", required=False, default=True)
        skip_save = f.boolean("skip_save", required=False, default=False)
        count_group = f.string("cg", required=False) or "User"
        if (
            app_id is not None
            and self.settings.app_id is not None
            and app_id != self.settings.app_id
        ):
            f.error("app_id", f"{app_id} is not the project of this api key")
        f.check()
        assert name is not None and app_id is not None and id_type is not None
        assert ids is not None and owner is not None

        members, invalid = await self._run(partial(classify_ids, id_type, ids))
        if invalid and not skip_invalid:
            invalid_ids(invalid, id_type)
        if not members:
            bad(
                "no valid ids to upload: every id is invalid",
                invalid_ids_sample=sample(invalid),
                invalid_ids_count=len(invalid),
            )
        metadata = {
            "matched": len(members),
            "totals": len(ids),
            "invalid_ids_sample": sample(invalid),
        }
        if existing is not None:
            cohort = await self._run(lambda: self.store.cohort(existing))
            if cohort is None:
                raise ApiError(
                    404, f"cohort {existing!r} not found", metadata={"cohort_id": existing}
                )
        if len(members) > self.store.max_cohort_size:
            raise ApiError(
                400,
                f"{len(members)} ids: at most {self.store.max_cohort_size} users per cohort",
                metadata={"limit": self.store.max_cohort_size},
            )
        if skip_save:
            return web.json_response(
                {"cohortId": existing, "cohortsById": {}, "metadata": metadata}
            )

        def save() -> Any:
            return self.store.save_upload(
                name=name,
                app_id=app_id,
                owner=owner,
                published=published,
                count_group=count_group,
                id_type=id_type,
                members=members,
                existing_cohort_id=existing,
            )

        if existing is not None:
            async with self._cohort_change(existing):
                saved = await self._store_write(save, existing)
        else:
            await self.checkpoint()
            saved = await self._store_write(save, None)
        return web.json_response(
            {"cohortId": saved.id, "cohortsById": {saved.id: saved.as_api()}, "metadata": metadata}
        )

    async def _store_write(self, fn: Callable[[], T], cohort_id: str | None) -> T:
        try:
            return await self._run(fn)
        except KeyError:
            raise ApiError(
                404, f"cohort {cohort_id!r} not found", metadata={"cohort_id": cohort_id}
            ) from None
        except CohortTooLarge as exc:
            raise ApiError(
                400,
                f"{exc}: nothing was saved",
                metadata={"limit": exc.limit, "size": exc.size},
            ) from None

    def _cohort_change(self, cohort_id: str) -> _CohortChange:
        return _CohortChange(self, cohort_id)

    # -- A2 membership -----------------------------------------------------------------

    async def membership(self, request: web.Request) -> web.Response:
        """``POST /api/3/cohorts/membership``: ADD or REMOVE members of an existing cohort."""
        f = await request_fields(request, self.MEMBERSHIP_FIELDS)
        cohort_id = f.string("cohort_id", required=True)
        count_group = f.string("count_group", required=False)
        skip_invalid = f.boolean("skip_invalid_ids", required=False, default=True)
        raw_changes = f.typed("memberships", True, list, "an array")
        limit = self.settings.max_ids_per_request
        entries: list[tuple[str, str, list[str]]] = []
        if raw_changes is not None:
            if not raw_changes:
                f.error("memberships", "must hold at least one membership change")
            else:
                for index, raw in enumerate(raw_changes):
                    where = f"memberships[{index}]."
                    if not isinstance(raw, dict):
                        f.error(f"memberships[{index}]", f"must be an object, got {json_type(raw)}")
                        continue
                    g = Fields(raw, where)
                    g.unknown(set(self.CHANGE_FIELDS))
                    ids = g.ids("ids", limit=limit)
                    id_type = g.string("id_type", required=True, choices=("BY_ID", "BY_NAME"))
                    operation = g.string("operation", required=True, choices=("ADD", "REMOVE"))
                    f.errors.extend(g.errors)
                    if ids is not None and id_type is not None and operation is not None:
                        entries.append((id_type, operation, ids))
        total = sum(len(ids) for _, _, ids in entries)
        if total > limit:
            f.error(
                "memberships",
                f"has {total} ids in all: at most {limit} ids per request",
            )
        f.check()
        assert cohort_id is not None

        changes: list[MemberChange] = []
        results: list[dict[str, Any]] = []
        for id_type, operation, ids in entries:
            members, invalid = await self._run(partial(classify_ids, id_type, ids))
            if invalid and not skip_invalid:
                invalid_ids(invalid, id_type)
            changes.append(MemberChange(operation, members))
            results.append({"skipped_ids": invalid, "id_type": id_type, "operation": operation})

        cohort = await self._run(lambda: self.store.cohort(cohort_id))
        if cohort is None:
            raise ApiError(
                404, f"cohort {cohort_id!r} not found", metadata={"cohort_id": cohort_id}
            )
        wanted_group = count_group or "User"
        if wanted_group != cohort.count_group:
            bad(
                f"count_group {wanted_group!r} does not match the cohort's group "
                f"{cohort.count_group!r}",
                count_group=cohort.count_group,
            )
        async with self._cohort_change(cohort_id):
            await self._store_write(
                lambda: self.store.apply_membership(cohort_id, changes), cohort_id
            )
        return web.json_response({"cohort_id": cohort_id, "memberships_result": results})

    # -- A3 read -----------------------------------------------------------------------

    async def list_cohorts(self, request: web.Request) -> web.Response:
        """``GET /api/3/cohorts``: every cohort; ``includeSyncInfo=true`` adds syncMetadata."""
        raw = request.query.get("includeSyncInfo", "false").lower()
        if raw not in ("true", "false"):
            bad(f"includeSyncInfo must be true or false, got {raw[:20]!r}")
        await self.checkpoint()
        cohorts = [c.as_api() for c in await self._run(self.store.cohorts)]
        if raw == "true":
            syncs = await self._run(self.store.sync_metadata)
            for cohort in cohorts:
                cohort["syncMetadata"] = syncs.get(cohort["id"], [])
        return web.json_response({"cohorts": cohorts})

    async def user_search(self, request: web.Request) -> web.Response:
        """``GET /api/2/usersearch?user=X``: users matching an Amplitude id, a user id or a
        user id prefix, among the users the fake knows (its cohorts' members, users with
        properties); ``{"matches": []}`` when none."""
        query = request.query.get("user")
        if query is None or not query.strip():
            bad("user is required: an Amplitude id, a user id or the start of a user id")
        await self.checkpoint()
        found = await self._run(partial(self.store.search_users, query, limit=USER_SEARCH_LIMIT))
        exact = any(query in (user, str(amp)) for user, amp in found)
        matches = [{"user_id": user or None, "amplitude_id": amp} for user, amp in found]
        kind = "match_user_or_device_id" if exact or not matches else "match_user_prefix"
        return web.json_response({"matches": matches, "type": kind})

    async def export_request(self, request: web.Request) -> web.Response:
        """``GET /api/5/cohorts/request/{id}``: start an export (202)."""
        cohort_id = request.match_info["cohort_id"]
        props = request.query.get("props", "0")
        if props not in ("0", "1"):
            bad(f"props must be 0 or 1, got {props[:20]!r}")
        prop_keys: list[str] | None = None
        if props == "1":
            prop_keys = [k for k in request.query.getall("propKeys", []) if k]
        elif "propKeys" in request.query:
            bad("propKeys needs props=1")
        await self.checkpoint()
        if await self._run(lambda: self.store.cohort(cohort_id)) is None:
            raise ApiError(
                404, f"cohort {cohort_id!r} not found", metadata={"cohort_id": cohort_id}
            )
        self._check_export_window()
        running = await self._run(
            lambda: self.store.exports_polled_at_most(
                self.settings.export_polls, within=EXPORT_RUNS_FOR
            )
        )
        if running >= MAX_PARALLEL_EXPORTS:
            raise ApiError.throttled(
                f"{running} exports are running: at most {MAX_PARALLEL_EXPORTS} in parallel "
                "per project",
                limit=MAX_PARALLEL_EXPORTS,
            )
        job = await self._run(lambda: self.store.create_export(cohort_id, prop_keys))
        self._export_times.append(self.clock())
        return web.json_response(
            {"request_id": job.request_id, "cohort_id": job.cohort_id}, status=202
        )

    def _check_export_window(self) -> None:
        """Amplitude's 60 export requests per 10 minutes per project: 429 past that."""
        now = self.clock()
        times = self._export_times
        while times and times[0] <= now - EXPORT_WINDOW:
            times.popleft()
        if len(times) >= EXPORTS_PER_WINDOW:
            wait = max(1, int(times[0] + EXPORT_WINDOW - now) + 1)
            raise ApiError.throttled(
                f"{len(times)} export requests in the last {EXPORT_WINDOW / 60:.0f} minutes: "
                f"at most {EXPORTS_PER_WINDOW} per project",
                retry_after=wait,
                limit=EXPORTS_PER_WINDOW,
                window_s=EXPORT_WINDOW,
            )

    async def _export_job(
        self, request: web.Request, look_up: Callable[[str], ExportJob | None]
    ) -> ExportJob:
        """The job of the request's ``{request_id}``, by ``look_up``; 404 when unknown."""
        request_id = request.match_info["request_id"]
        await self.checkpoint()
        job = await self._run(partial(look_up, request_id))
        if job is None:
            raise ApiError(
                404, f"export request {request_id!r} not found", metadata={"request_id": request_id}
            )
        return job

    async def export_status(self, request: web.Request) -> web.Response:
        """``GET /api/5/cohorts/request-status/{request_id}``: in progress, then completed."""
        job = await self._export_job(request, self.store.poll_export)
        done = job.polls > self.settings.export_polls
        return web.json_response(
            {
                "request_id": job.request_id,
                "cohort_id": job.cohort_id,
                "async_status": "JOB COMPLETED" if done else "JOB INPROGRESS",
            },
            status=200 if done else 202,
        )

    async def export_file(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/5/cohorts/request/{request_id}/file``: the CSV or a 302 to a signed URL."""
        job = await self._export_job(request, self.store.export)
        request_id = job.request_id
        if job.polls <= self.settings.export_polls:
            bad(
                f"export {request_id} is not completed yet: poll "
                f"/api/5/cohorts/request-status/{request_id} until JOB COMPLETED",
                async_status="JOB INPROGRESS",
            )
        if self.settings.export_redirect:
            now = self.clock()
            self._signed = {t: s for t, s in self._signed.items() if s.expires >= now}
            token = secrets.token_urlsafe(24)
            self._signed[token] = _SignedUrl(request_id, now + SIGNED_URL_TTL)
            location = f"{request.url.origin()}/signed/{token}"
            return web.Response(status=302, headers={"Location": location})
        return await self._csv_response(job.request_id)

    async def signed_file(self, request: web.Request) -> web.StreamResponse:
        """``GET /signed/{token}``: the export file behind a one-minute signed URL."""
        signed = self._signed.get(request.match_info["token"])
        if signed is None:
            raise ApiError(403, "signed URL is not valid")
        if self.clock() > signed.expires:
            raise ApiError(403, "signed URL has expired: request the file again")
        return await self._csv_response(signed.request_id)

    async def _csv_response(self, request_id: str) -> web.Response:
        def build() -> bytes | None:
            job = self.store.export(request_id)
            return None if job is None else self.store.export_csv(job)

        data = await self._run(build)
        if data is None:
            raise ApiError(404, f"export request {request_id!r} not found")
        return web.Response(
            body=data,
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{request_id}.csv"'},
        )


class _CohortChange:
    """Marks a cohort as being changed; a second change meanwhile answers 429."""

    def __init__(self, fake: FakeAmplitude, cohort_id: str) -> None:
        self.fake = fake
        self.cohort_id = cohort_id

    async def __aenter__(self) -> None:
        busy = self.fake._busy_cohorts
        if self.cohort_id in busy:
            raise ApiError.throttled(
                f"another membership change on cohort {self.cohort_id!r} is in progress: "
                "send changes to one cohort one after the other",
                cohort_id=self.cohort_id,
            )
        busy.add(self.cohort_id)
        await self.fake.checkpoint()

    async def __aexit__(self, *exc: object) -> None:
        self.fake._busy_cohorts.discard(self.cohort_id)


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def create_app(
    settings: FakeSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    checkpoint: Checkpoint | None = None,
) -> web.Application:
    """The fake Amplitude cohort API as an aiohttp application, behaving as ``settings`` say.

    ``clock`` (monotonic seconds) times signed-URL expiry and the export rate window.
    ``checkpoint`` is awaited by every handler once it holds its slot (tests pass a gate there
    to hold requests in flight).
    """
    store = CohortStore(settings.db, max_cohort_size=settings.max_cohort_size)
    fake = FakeAmplitude(
        settings=settings, store=store, clock=clock, checkpoint=checkpoint or _no_checkpoint
    )
    app = web.Application(middlewares=[fake.middleware], client_max_size=CLIENT_MAX_SIZE)
    app[STORE_KEY] = store
    app[TRAFFIC_KEY] = fake.traffic
    app.router.add_post("/api/3/cohorts/upload", fake.upload)
    app.router.add_post("/api/3/cohorts/membership", fake.membership)
    app.router.add_get("/api/3/cohorts", fake.list_cohorts, allow_head=False)
    app.router.add_get("/api/2/usersearch", fake.user_search, allow_head=False)
    app.router.add_get("/api/5/cohorts/request/{cohort_id}", fake.export_request, allow_head=False)
    app.router.add_get(
        "/api/5/cohorts/request-status/{request_id}", fake.export_status, allow_head=False
    )
    app.router.add_get(
        "/api/5/cohorts/request/{request_id}/file", fake.export_file, allow_head=False
    )
    app.router.add_get("/signed/{token}", fake.signed_file, allow_head=False)
    app.on_cleanup.append(fake.close)
    return app

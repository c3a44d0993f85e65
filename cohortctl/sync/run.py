"""``cohortctl sync``: replay Amplitude's cohort sync at a partner endpoint, request for request.

One cohort (:func:`sync_cohort`), as Amplitude runs it (spec part B, "How Amplitude runs a sync"):

1. read the snapshot (an ID file: the cohort's members now), open the state of this
   destination + mode + cohort, and diff: who entered, who left (:func:`plan_diff`);
2. list mode without a list yet: send the list-create alone (retried like every call) and
   record the list id read from the answer;
3. store the run's batches in the state (:meth:`SyncState.plan_batches`), entered users first
   (list-add / trait ``true``), then those who left (list-remove / trait ``false``);
4. deliver them with Amplitude's workers and retries, confirming each batch in the state right
   after its 2xx, and only then;
5. fold the confirmations, record the run, and write the users of failed batches to a file.

Re-running the same command sends exactly what the destination is still missing: the users of
failed batches, of batches a Ctrl-C or a kill cut off, and whatever changed in the snapshot.
The retry file is for a person to inspect (or to replay with ``cohortctl mock``); it is not a
snapshot, since syncing it would remove everyone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from cohortctl.durations import json_seconds
from cohortctl.errors import CheckFailed, InputError
from cohortctl.files import write_atomically
from cohortctl.http.outcomes import names_unknown_list
from cohortctl.ids import read_ids
from cohortctl.partner import payloads, templates
from cohortctl.partner.classify import REDIRECTS
from cohortctl.partner.destination import Destination, redact_url
from cohortctl.partner.mock import abbreviate_json
from cohortctl.partner.sizing import fitted_batch_size
from cohortctl.partner.templates import Template
from cohortctl.retry import AMPLITUDE_SYNC_POLICY, RetryPolicy
from cohortctl.sync import inventory, lock, storage
from cohortctl.sync.delivery import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WORKERS,
    Batch,
    BatchFailure,
    BatchResult,
    DeliveryInterrupted,
    DeliveryReport,
    OnProgress,
    OnRetry,
    Sleep,
    Transport,
    deliver,
    encode_json,
    identify_encoder,
    ids_are_plain,
    list_members_encoder,
    proxy_for,
    write_retry_file,
)
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.state import (
    ADD,
    LIST_CREATED,
    LIST_GIVEN,
    LIST_NONE,
    REMOVE,
    Diff,
    PlannedBatches,
    SyncState,
    default_state_path,
    destination_key,
    plan_diff,
)

Encoder = Callable[[Sequence[str]], bytes]
OnPhase = Callable[[str], object]

OK = "ok"
FAILED = "failed"
PHASES = ("read", "diff", "deliver", "confirm")
"""Where a sync's time goes: reading the snapshot, diffing (and storing the plan),
delivering the batches, confirming them (the last commits, the fold, the run record)."""
INTERRUPTED = "interrupted"
PAYLOAD_KEEP = 5  # ids shown per array in a dry run's first payloads


class SyncMode(str, Enum):
    """How the partner represents membership: a list of user ids, or a boolean trait; or
    Amplitude's Cohort Webhooks (:mod:`cohortctl.sync.webhook`)."""

    list = "list"
    property = "property"
    webhook = "webhook"


@dataclass(frozen=True)
class SyncSettings:
    """Everything about how to sync, the same for every cohort of a run."""

    mode: SyncMode = SyncMode.list
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = DEFAULT_WORKERS
    policy: RetryPolicy = AMPLITUDE_SYNC_POLICY
    full: bool = False
    batch: bool = True  # property mode: batch identify (True) or one identify per user
    templates: Mapping[str, Template] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    state_path: Path | None = None
    retry_file: Path | None = None
    recreate_list: bool = False  # list mode: create a new list and send the whole cohort to it
    lock_timeout: float = 0.0  # seconds to wait for another sync of the same cohort
    list_id: str | None = None  # --list-id: an existing list, no list-create

    def __post_init__(self) -> None:
        if self.recreate_list and self.mode is not SyncMode.list:
            raise InputError("--recreate-list is for list mode (--mode list)")
        if self.recreate_list and self.list_id is not None:
            raise InputError(
                "--recreate-list creates a new list and --list-id names an existing one: "
                "give one of them"
            )
        if self.lock_timeout < 0:
            raise InputError("--lock-timeout must not be negative")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        unknown = sorted(set(self.templates) - set(payloads.CALLS))
        if unknown:
            raise InputError(f"payload templates for unknown call(s): {', '.join(unknown)}")

    @property
    def state_file(self) -> Path:
        """The state file used: ``--state`` or the default in the user data dir."""
        return self.state_path if self.state_path is not None else default_state_path()

    @property
    def user_call(self) -> str:
        """The call that carries users in property mode: identify-batch or identify."""
        return payloads.IDENTIFY_BATCH if self.batch else payloads.IDENTIFY

    def calls(self) -> tuple[str, str]:
        """The calls for users who entered and for users who left."""
        if self.mode is SyncMode.list:
            return payloads.LIST_ADD, payloads.LIST_REMOVE
        return self.user_call, self.user_call

    @property
    def users_per_request(self) -> int:
        """Users per request: the batch size, or 1 for single identify calls."""
        if self.mode is SyncMode.property and not self.batch:
            return 1
        return self.batch_size


@dataclass
class SyncHooks:
    """Injection points: progress and retry callbacks, the sleep between retries, transport."""

    on_progress: OnProgress | None = None
    on_retry: OnRetry | None = None
    on_phase: OnPhase | None = None
    sleep: Sleep | None = None
    transport: Transport | None = None
    progress_every: float = 0.25

    def phase(self, message: str) -> None:
        """Tell the person what is happening (reading, diffing, creating the list…)."""
        if self.on_phase is not None:
            self.on_phase(message)


@dataclass
class CohortSync:
    """What syncing one cohort did."""

    cohort: CohortSpec
    mode: SyncMode
    destination: str  # the destination key: normalized URL | mode | cohort id, no secrets
    status: str = OK
    list_id: str | None = None
    list_created: bool = False
    list_source: str | None = None  # created, given (--list-id) or none (no id answered)
    warnings: list[str] = field(default_factory=list)
    snapshot_users: int = 0
    entered: int = 0
    left: int = 0
    unchanged: int = 0
    added: int = 0  # users confirmed added (list-add / trait true)
    removed: int = 0  # users confirmed removed (list-remove / trait false)
    resent: int = 0  # webhook mode: members sent again because their properties changed
    report: DeliveryReport = field(default_factory=DeliveryReport)
    retry_file: str | None = None
    retry_users: int = 0
    error: str | None = None
    lost_list: str | None = None  # the list id the partner answered "unknown list" for
    repaired_batches: int = 0  # confirmations of a discarded plan dropped from the state
    started_at: float = 0.0
    duration: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # PHASES -> seconds

    @property
    def ok(self) -> bool:
        """True when everything planned was confirmed."""
        return self.status == OK

    def phase_seconds(self) -> dict[str, float]:
        """``read_s``, ``diff_s``, ``deliver_s``, ``confirm_s``: seconds, rounded to ms."""
        return {f"{name}_s": round(self.phases.get(name, 0.0), 3) for name in PHASES}

    def to_dict(self, scrub: Callable[[str], str] = str) -> dict[str, Any]:
        """JSON-ready summary; failures without their user ids (those are in the retry file)."""
        r = self.report
        data = r.to_dict()
        failures = data.pop("failures")
        for failure in failures:
            failure["users"] = len(failure.pop("user_ids"))
            failure["body"] = scrub(failure["body"])
        return {
            "cohort": {"name": self.cohort.name, "id": self.cohort.id},
            "mode": self.mode.value,
            "destination": self.destination,
            "result": self.status,
            "ok": self.ok,
            "error": self.error,
            "list_id": self.list_id,
            "list_created": self.list_created,
            "lost_list": self.lost_list,
            "repaired_batches": self.repaired_batches,
            "list_source": self.list_source,
            "warnings": self.warnings,
            "snapshot_users": self.snapshot_users,
            "entered": self.entered,
            "left": self.left,
            "unchanged": self.unchanged,
            "added": self.added,
            "removed": self.removed,
            "resent": self.resent,
            "batches_failed": r.batches_failed,
            "users_failed": r.users_failed,
            "retry_file": self.retry_file,
            "retry_users": self.retry_users,
            "duration_s": json_seconds(self.duration),
            "phases": self.phase_seconds(),
            "delivery": data,
            "failures": failures,
        }


# -- building the requests --------------------------------------------------------------------


class Requests:
    """URLs and body encoders of one cohort's calls (templates or the fast builders)."""

    def __init__(
        self, destination: Destination, cohort: CohortSpec, settings: SyncSettings
    ) -> None:
        self.destination = destination
        self.cohort = cohort
        self.settings = settings

    def values(self, ids: Sequence[str], list_id: str | None, member: bool) -> dict[str, Any]:
        """Template variables of one request."""
        return templates.variables(
            ids=ids,
            cohort_name=self.cohort.name,
            cohort_id=self.cohort.id,
            list_id=list_id,
            member=member,
            custom=self.settings.variables,
        )

    def url(self, call: str, list_id: str | None, member: bool) -> str:
        """The URL of ``call`` (the same for every batch unless it names the users)."""
        return self.destination.url(call, list_id, self.values((), list_id, member))

    def url_names_users(self, call: str) -> bool:
        """True when the call's URL template holds ``$userId`` or ``$items``."""
        template = self.destination.url_template(call)
        return any(
            f"${name}" in template or f"${{{name}}}" in template
            for name in (templates.USER_ID, templates.ITEMS)
        )

    def encoder(
        self, call: str, list_id: str | None, member: bool, *, plain: bool = False
    ) -> Encoder:
        """Bytes of the body of ``call`` for a batch of ids (``plain``: see ids_are_plain)."""
        template = self.settings.templates.get(call)
        if template is not None:

            def render(ids: Sequence[str]) -> bytes:
                text, _ = template.render(self.values(ids, list_id, member))
                return text.encode("utf-8")

            return render
        if call == payloads.LIST_CREATE:
            body = encode_json(payloads.list_create(self.cohort.name, self.cohort.id))
            return lambda ids: body
        if call in (payloads.LIST_ADD, payloads.LIST_REMOVE):
            return list_members_encoder(plain=plain)
        return identify_encoder(
            self.cohort.name,
            self.cohort.id,
            member=member,
            batch=call == payloads.IDENTIFY_BATCH,
            plain=plain,
        )

    def check_templates(self, list_id: str | None) -> None:
        """Render every template once with sample values: a bad one fails before sending."""
        for call, template in self.settings.templates.items():
            template.render(self.values(("sample-user",), list_id or "sample-list", True))
            self.destination.url(call, list_id, self.values(("sample-user",), list_id, True))

    def batches(
        self, plan: PlannedBatches, call: str, list_id: str | None, *, key_prefix: str
    ) -> Iterator[Batch]:
        """The planned batches of one direction as requests, built as workers ask for them."""
        member = plan.op == ADD
        encode = self.encoder(call, list_id, member, plain=ids_are_plain(plan.user_ids))
        per_user = self.url_names_users(call)
        url = self.url(call, list_id, member)
        for index, (ids, ref) in enumerate(plan.batches()):
            if per_user:
                url = self.destination.url(call, list_id, self.values(ids, list_id, member))
            method = self.destination.method_for(call)
            yield Batch(f"{key_prefix}:{index}", method, url, encode(ids), ids, call, ref)


def _key_prefixes(settings: SyncSettings) -> tuple[str, str]:
    if settings.mode is SyncMode.list:
        return payloads.LIST_ADD, payloads.LIST_REMOVE
    call = settings.user_call
    return f"{call}-true", f"{call}-false"


# -- one cohort -------------------------------------------------------------------------------


def read_snapshot(cohort: CohortSpec) -> list[str]:
    """The cohort's members now, from its ID file (validated, deduplicated)."""
    return read_ids(cohort.snapshot, column=cohort.column).ids


def cohort_key(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> str:
    """The state key of this destination + mode + cohort."""
    return destination_key(destination.base_url, settings.mode.value, cohort.id)


def cohort_state(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> SyncState:
    """Open the state of this destination + mode + cohort."""
    return SyncState.open(settings.state_file, cohort_key(destination, cohort, settings))


def check_state(settings: SyncSettings, *, create: bool = True) -> None:
    """Check the whole state file (identity, version, ``quick_check``) before anything else.

    Raises :class:`StateFileError`; creates a new state file when there is none and
    ``create`` is true. Call it before reading snapshots or sending anything.
    """
    path = settings.state_file
    if not create and not path.exists():
        return
    storage.connect(path, quick_check=True).close()


@contextlib.contextmanager
def locked(
    destination: Destination, cohorts: Sequence[CohortSpec], settings: SyncSettings
) -> Iterator[None]:
    """Hold the sync lock of every cohort for the ``with`` body; :class:`Busy` if one is taken.

    Waits up to ``settings.lock_timeout`` seconds for each.
    """
    keys = [(cohort_key(destination, c, settings), f"{c.name} ({c.id})") for c in cohorts]
    with lock.acquire_all(settings.state_file, keys, timeout=settings.lock_timeout):
        yield


class _Clock:
    """Adds the time spent in each ``with clock("phase")`` block to ``phases``."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started


def deliver_batches(
    batches: Iterable[Batch],
    size: int,
    on_done: Callable[[Batch, BatchResult], None],
    hooks: SyncHooks,
    options: dict[str, Any],
) -> tuple[DeliveryReport, bool]:
    """Deliver with the run's progress hooks: the report, and whether Ctrl-C/SIGTERM stopped it."""
    try:
        report = deliver(
            batches,
            max_batch_size=size,
            on_done=on_done,
            on_progress=hooks.on_progress,
            progress_every=hooks.progress_every,
            **options,
        )
    except DeliveryInterrupted as stopped:
        return stopped.report, True
    return report, False


def _delivery_options(
    destination: Destination, settings: SyncSettings, hooks: SyncHooks, workers: int
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "headers": destination.request_headers(),
        "success": destination.success,
        "rate_limit": destination.rate_limit,
        "workers": workers,
        "policy": settings.policy,
        "timeout": destination.timeout,
        "on_retry": hooks.on_retry,
        "transport": hooks.transport,
        "proxy": proxy_for(destination.base_url),
        "redactor": destination.redactor(),
    }
    if hooks.sleep is not None:
        options["sleep"] = hooks.sleep
    return options


def _create_list(
    destination: Destination,
    requests: Requests,
    settings: SyncSettings,
    hooks: SyncHooks,
    result: CohortSync,
) -> str | None:
    """Send the list-create alone; the list id from its answer, or None (recorded in result)."""
    call = payloads.LIST_CREATE
    body = requests.encoder(call, None, True)(())
    method = destination.method_for(call)
    batch = Batch(call, method, requests.url(call, None, True), body, (), call)
    answers: list[BatchResult] = []
    report = deliver(
        [batch],
        on_done=lambda _b, r: answers.append(r),
        **_delivery_options(destination, settings, hooks, 1),
    )
    _merge(result.report, report, destination)
    if not report.ok or not answers:
        result.status = FAILED
        result.error = "the list-create request failed: nothing else was sent"
        return None
    if destination.no_list_id:
        return ""
    answer_text = answers[0].body.decode("utf-8", "replace")
    try:
        list_id = destination.find_list_id(answer_text)
    except CheckFailed as exc:
        result.status = FAILED
        result.error = exc.message
        return None
    warning = destination.list_id_warning(answer_text)
    if warning is not None:
        result.warnings.append(warning)
    return list_id


def _labelled(destination: Destination, failure: BatchFailure) -> BatchFailure:
    """The failure labelled with the destination's error classification (or a named shape)."""
    if not failure.reason.isdigit() or int(failure.reason) in REDIRECTS:
        return failure  # redirects already carry the delivery's note (and its Location)
    label = destination.meaning(int(failure.reason), call=failure.kind, url="", body=failure.body)
    return failure if label is None else replace(failure, meaning=label)


def _merge(
    into: DeliveryReport, report: DeliveryReport, destination: Destination | None = None
) -> None:
    if destination is not None:
        report.failures = [_labelled(destination, f) for f in report.failures]
    into.batches_ok += report.batches_ok
    into.batches_failed += report.batches_failed
    into.users_ok += report.users_ok
    into.users_failed += report.users_failed
    into.requests += report.requests
    into.retries += report.retries
    into.duration += report.duration
    into.interrupted = into.interrupted or report.interrupted
    into.attempt_failures.update(report.attempt_failures)
    into.failed_by.update(report.failed_by)
    into.retry_delays.extend(report.retry_delays)
    into.failures.extend(report.failures)
    into.latencies.extend(report.latencies)


def retry_file_for(settings: SyncSettings, cohort: CohortSpec, key: str, *, many: bool) -> Path:
    """Where the users of failed batches go: ``--retry-file`` or next to the state file.

    With several cohorts, a given ``--retry-file`` gets the cohort id before its suffix.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", cohort.id)[:60]
    if settings.retry_file is not None:
        path = settings.retry_file
        return path.with_name(f"{path.stem}.{slug}{path.suffix}") if many else path
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return settings.state_file.with_name(f"retry-{slug}-{settings.mode.value}-{digest}.txt")


def sync_cohort(
    destination: Destination,
    cohort: CohortSpec,
    settings: SyncSettings,
    hooks: SyncHooks | None = None,
    *,
    many: bool = False,
) -> CohortSync:
    """Sync one cohort (see the module docstring); never raises for failed requests.

    A Ctrl-C during the delivery ends it with status ``interrupted`` (recorded in the state);
    what was confirmed stays confirmed and the next run sends the rest. A state file that
    cannot be written raises :class:`StateFileError` (what was committed before is kept).
    The caller holds the sync lock (:func:`locked`).
    """
    hooks = hooks or SyncHooks()
    started = time.perf_counter()
    phases: dict[str, float] = {}
    clock = _Clock(phases)
    hooks.phase(f"reading {cohort.snapshot}")
    with clock("read"):
        snapshot = read_snapshot(cohort)
    requests = Requests(destination, cohort, settings)
    state = cohort_state(destination, cohort, settings)
    result = CohortSync(cohort, settings.mode, state.key, started_at=time.time(), phases=phases)
    result.snapshot_users = len(snapshot)
    try:
        return _sync_opened(destination, requests, settings, hooks, state, snapshot, result, many)
    except sqlite3.Error as exc:
        raise storage.state_error(state.path, exc) from None
    finally:
        result.duration = time.perf_counter() - started
        state.close()


def _sync_opened(
    destination: Destination,
    requests: Requests,
    settings: SyncSettings,
    hooks: SyncHooks,
    state: SyncState,
    snapshot: list[str],
    result: CohortSync,
    many: bool,
) -> CohortSync:
    clock = _Clock(result.phases)
    list_mode = settings.mode is SyncMode.list
    if list_mode:
        _given_list(destination, settings, hooks, state)
    list_id = state.list_id if list_mode else None
    requests.check_templates(list_id)
    if list_mode and settings.recreate_list:
        hooks.phase("creating a new list (--recreate-list)")
        new_id = _create_list(destination, requests, settings, hooks, result)
        if new_id is None:
            return result
        # The create answered 2xx: from here the state is about the new, empty list.
        state.replace_list(new_id, LIST_NONE if destination.no_list_id else LIST_CREATED)
        list_id = new_id
        result.list_created = True
    hooks.phase("comparing with what the destination already has")
    with clock("diff"):
        diff = plan_diff(snapshot, state, full=settings.full)
    del snapshot
    result.repaired_batches = state.repaired_batches
    if state.repaired_batches:
        hooks.phase(
            f"repaired the state file: dropped {state.repaired_batches:,} confirmations of a "
            "plan another run discarded (their users are sent again)"
        )
    result.entered, result.left, result.unchanged = (
        len(diff.entered),
        len(diff.left),
        diff.unchanged,
    )
    if list_mode and list_id is None:
        hooks.phase("creating the list")
        list_id = _create_list(destination, requests, settings, hooks, result)
        if list_id is None:
            return result
        state.set_list_id(list_id, LIST_NONE if destination.no_list_id else LIST_CREATED)
        result.list_created = True
    if list_mode:
        result.list_source = state.list_source
    result.list_id = list_id or None
    _deliver_diff(destination, requests, settings, hooks, state, diff, result, list_id)
    if list_mode and list_id and _list_is_gone(result.report):
        result.lost_list = list_id
        result.error = (
            f"the partner no longer has list {list_id} (it answered 404 unknown list); "
            "run the same command with --recreate-list to create a new list and send the "
            "whole cohort to it"
        )
    if result.status == INTERRUPTED:
        return result
    path = retry_file_for(settings, requests.cohort, state.key, many=many)
    _write_retry_file(result, path, explicit=settings.retry_file is not None)
    return result


def _list_is_gone(report: DeliveryReport) -> bool:
    """True when a failed list-add / list-remove was a 404 naming the list as unknown."""
    return any(
        f.kind in (payloads.LIST_ADD, payloads.LIST_REMOVE)
        and f.reason == "404"
        and names_unknown_list(404, f.body)
        for f in report.failures
    )


def _given_list(
    destination: Destination, settings: SyncSettings, hooks: SyncHooks, state: SyncState
) -> None:
    """Record a ``--list-id`` list (a new one starts the destination over); InputError when
    the destination has no list-create and no list is given or remembered."""
    given = settings.list_id
    if given is None:
        if state.list_id is None and not destination.has_call(payloads.LIST_CREATE):
            raise InputError(
                f"destination {destination.name or destination.base_url!r} has no list-create "
                "call: give the id of an existing list with --list-id"
            )
        return
    if state.list_id == given:
        return
    if state.list_id is None:
        state.set_list_id(given, LIST_GIVEN)
        return
    hooks.phase(f"a different list ({given}): what the old one had no longer counts")
    state.replace_list(given, LIST_GIVEN)


def _deliver_diff(
    destination: Destination,
    requests: Requests,
    settings: SyncSettings,
    hooks: SyncHooks,
    state: SyncState,
    diff: Diff,
    result: CohortSync,
    list_id: str | None,
) -> None:
    clock = _Clock(result.phases)
    size = settings.users_per_request
    if destination.max_body_bytes is not None:
        enter_call, leave_call = settings.calls()
        for call, ids, member in ((enter_call, diff.entered, True), (leave_call, diff.left, False)):
            encode = requests.encoder(call, list_id, member)
            size = fitted_batch_size(encode, ids, size, destination.max_body_bytes)
    hooks.phase("planning the batches")
    with clock("diff"):
        state.discard_plans()
        enter_plan = state.plan_batches(ADD, diff.entered, size)
        leave_plan = state.plan_batches(REMOVE, diff.left, size)
        run_id = state.start_run(diff, full=settings.full)
    enter_call, leave_call = settings.calls()
    enter_key, leave_key = _key_prefixes(settings)

    confirmer = state.confirmer()

    def batches() -> Iterator[Batch]:
        for batch in itertools.chain(
            requests.batches(enter_plan, enter_call, list_id, key_prefix=enter_key),
            requests.batches(leave_plan, leave_call, list_id, key_prefix=leave_key),
        ):
            if confirmer.error is not None:
                return  # the state cannot record confirmations (disk full): send no more
            yield batch

    done = [0, 0]  # users confirmed, indexed by op: REMOVE (0), ADD (1)
    total = len(diff.entered) + len(diff.left)
    hooks.phase(f"sending {total:,} users in {enter_plan.count + leave_plan.count:,} requests")
    status = OK
    report: DeliveryReport
    try:
        confirm = confirmer.confirm

        def on_done(batch: Batch, answer: BatchResult) -> None:
            if answer.ok:
                ref = batch.ref
                confirm(ref)
                done[ref[1]] += ref[2]

        with clock("deliver"):
            report, stopped = deliver_batches(
                batches(),
                size,
                on_done,
                hooks,
                _delivery_options(destination, settings, hooks, settings.workers),
            )
            if stopped:
                status = INTERRUPTED
    finally:
        with clock("confirm"):
            confirmer.close()
    _merge(result.report, report, destination)
    result.added, result.removed = done[ADD], done[REMOVE]
    if status == OK and not report.ok:
        status = FAILED
    result.status = status
    with clock("confirm"):
        state.finish_run(
            run_id,
            status=status,
            added=result.added,
            removed=result.removed,
            failed=report.users_failed,
        )
        if status == INTERRUPTED:
            return  # the plans stay: the next run folds their confirmations first
        hooks.phase("recording what the destination now has")
        state.discard_plans()


def _write_retry_file(result: CohortSync, path: Path, *, explicit: bool) -> None:
    if result.report.users_failed:
        report = result.report
        result.retry_users = write_atomically(
            path, lambda tmp: write_retry_file(report, tmp), what="retry file"
        )
        result.retry_file = str(path)
    elif not explicit and path.exists():
        path.unlink()  # a stale file from an earlier run would point at users now delivered


# -- several cohorts, schedules --------------------------------------------------------------


@dataclass
class SyncRun:
    """One run over every cohort of a plan (one-time, or one tick of ``--every``)."""

    cohorts: list[CohortSync] = field(default_factory=list)
    interrupted: bool = False
    started_at: float = 0.0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every cohort synced completely."""
        return not self.interrupted and all(c.ok for c in self.cohorts)


def sync_all(
    destination: Destination,
    cohorts: Sequence[CohortSpec],
    settings: SyncSettings,
    hooks: SyncHooks | None = None,
    *,
    on_cohort: Callable[[CohortSync], object] | None = None,
) -> SyncRun:
    """Sync each cohort in turn, each with its own requests (as Amplitude does).

    Stops at a Ctrl-C (the run is marked interrupted); a failed cohort does not stop the next.
    """
    check_state(settings)
    run = SyncRun(started_at=time.time())
    started = time.perf_counter()
    many = len(cohorts) > 1
    with locked(destination, cohorts, settings):
        for cohort in cohorts:
            result = sync_cohort(destination, cohort, settings, hooks, many=many)
            run.cohorts.append(result)
            if on_cohort is not None:
                on_cohort(result)
            if result.status == INTERRUPTED:
                run.interrupted = True
                break
    run.duration = time.perf_counter() - started
    return run


def run_schedule(
    run_once: Callable[[int], SyncRun],
    *,
    every: float | None,
    max_runs: int | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.time,
    on_wait: Callable[[float], object] | None = None,
) -> list[SyncRun]:
    """Call ``run_once(n)`` once, or every ``every`` seconds until ``max_runs`` or Ctrl-C.

    The next run starts ``every`` seconds after the previous one started (a run longer than
    the period starts the next at once). An interrupted run ends the schedule. ``on_wait``
    gets the time of the next run before each wait.
    """
    runs: list[SyncRun] = []
    number = 0
    while True:
        number += 1
        started = clock()
        run = run_once(number)
        runs.append(run)
        if every is None or run.interrupted or (max_runs is not None and number >= max_runs):
            return runs
        next_at = started + every
        if on_wait is not None:
            on_wait(next_at)
        wait = next_at - clock()
        if wait > 0:
            sleep(wait)


# -- dry run -----------------------------------------------------------------------------------


@dataclass
class DryRun:
    """What a sync of one cohort would send, without sending anything."""

    cohort: CohortSpec
    mode: SyncMode
    state_file: str
    snapshot_users: int
    entered: int
    left: int
    unchanged: int
    list_id: str | None
    calls: dict[str, int]
    first_requests: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plan."""
        return {
            "cohort": {"name": self.cohort.name, "id": self.cohort.id},
            "mode": self.mode.value,
            "state_file": self.state_file,
            "snapshot_users": self.snapshot_users,
            "entered": self.entered,
            "left": self.left,
            "unchanged": self.unchanged,
            "list_id": self.list_id,
            "calls": self.calls,
            "requests": sum(self.calls.values()),
            "first_requests": self.first_requests,
        }


def plan_cohort(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> DryRun:
    """The requests a sync would send (counts per call, the first payload of each), sending
    nothing and writing nothing: a state file is only read (and not created).
    """
    snapshot = read_snapshot(cohort)
    requests = Requests(destination, cohort, settings)
    list_id: str | None = None
    held = inventory.believed(settings.state_file, cohort_key(destination, cohort, settings))
    if held is None or settings.recreate_list:  # a new list starts empty
        diff = plan_diff_empty(snapshot)
    else:
        list_id = held[0] if settings.mode is SyncMode.list else None
        diff = diff_against(snapshot, held[1], full=settings.full)
    if settings.mode is SyncMode.list and settings.list_id is not None:
        if list_id != settings.list_id:
            diff = plan_diff_empty(snapshot)
        list_id = settings.list_id
    requests.check_templates(list_id)
    size = settings.users_per_request
    enter_call, leave_call = settings.calls()
    shown_list_id = list_id if list_id is not None else templates.Unresolved("{listId}")
    calls: dict[str, int] = {}
    first: list[dict[str, Any]] = []
    headers = destination.redacted_headers()

    def show(call: str, label: str, ids: Sequence[str], member: bool, count: int) -> None:
        if count == 0:
            return
        calls[label] = calls.get(label, 0) + count
        url_values = requests.values(ids, shown_list_id, member)
        url = destination.url(call, shown_list_id, url_values)
        body = json.loads(requests.encoder(call, shown_list_id, member)(ids))
        first.append(
            {
                "call": label,
                "method": destination.method_for(call),
                "url": destination.scrub(redact_url(url)),
                "headers": headers,
                "users": len(ids),
                "body": json.loads(
                    destination.scrub(json.dumps(abbreviate_json(body, PAYLOAD_KEEP)))
                ),
            }
        )

    if settings.mode is SyncMode.list and list_id is None:
        if not destination.has_call(payloads.LIST_CREATE):
            raise InputError(
                f"destination {destination.name or destination.base_url!r} has no list-create "
                "call: give the id of an existing list with --list-id"
            )
        show(payloads.LIST_CREATE, payloads.LIST_CREATE, (), True, 1)
    enter_label, leave_label = (
        (enter_call, leave_call)
        if settings.mode is SyncMode.list
        else (f"{enter_call} (true)", f"{leave_call} (false)")
    )
    show(enter_call, enter_label, diff.entered[:size], True, -(-len(diff.entered) // size))
    show(leave_call, leave_label, diff.left[:size], False, -(-len(diff.left) // size))
    return DryRun(
        cohort=cohort,
        mode=settings.mode,
        state_file=str(settings.state_file),
        snapshot_users=len(snapshot),
        entered=len(diff.entered),
        left=len(diff.left),
        unchanged=diff.unchanged,
        list_id=list_id,
        calls=calls,
        first_requests=first,
    )


def diff_against(snapshot: Sequence[str], members: Sequence[str], *, full: bool) -> Diff:
    """:func:`plan_diff` against a list of believed members (read-only; for dry runs)."""
    snap = set(snapshot)
    held = set(members)
    left = [uid for uid in members if uid not in snap]
    entered = [uid for uid in dict.fromkeys(snapshot) if full or uid not in held]
    return Diff(entered=entered, left=left, unchanged=len(snap) - len(entered))


def plan_diff_empty(snapshot: Sequence[str]) -> Diff:
    """The diff against a destination that has nothing yet: everyone entered."""
    return Diff(entered=list(snapshot), left=[], unchanged=0)

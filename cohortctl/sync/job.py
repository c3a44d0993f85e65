"""What ``cohortctl sync`` was asked to do: flags, a ``--plan`` file and a destination file
merged into the cohorts to sync and the settings to sync them with (:func:`prepare`).

A flag wins over the plan's ``destination:`` keys, those over the destination file, and the
file over the defaults. ``--payload`` goes to the calls that carry users (list-add and
list-remove, or the identify call); a per-call template (``--add-payload`` ...) wins over it,
and both over the destination file's templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cohortctl.durations import parse_duration
from cohortctl.errors import InputError
from cohortctl.partner import payloads
from cohortctl.partner.destination_files import DestinationFile
from cohortctl.partner.templates import Template
from cohortctl.retry import AMPLITUDE_SYNC_POLICY, RetryPolicy
from cohortctl.sync.delivery import DEFAULT_WORKERS
from cohortctl.sync.encoders import DEFAULT_BATCH_SIZE
from cohortctl.sync.plan import CohortSpec, SyncPlan, load_plan
from cohortctl.sync.settings import SyncMode, SyncSettings


@dataclass(frozen=True)
class SyncFlags:
    """The options of one ``cohortctl sync`` command line (None: not given)."""

    snapshot: Path | None = None
    plan: Path | None = None
    cohort_name: str | None = None
    cohort_id: str | None = None
    column: str | None = None
    mode: SyncMode | None = None
    url: str | None = None
    auth: Any = None
    list_id_path: str | None = None
    path: str | None = None
    create_path: str | None = None
    add_path: str | None = None
    remove_path: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    batch: bool | None = None
    policy: RetryPolicy = AMPLITUDE_SYNC_POLICY
    full: bool = False
    payload: Path | None = None
    templates: Mapping[str, Template] = field(default_factory=dict)  # --add-payload ...
    variables: Mapping[str, str] = field(default_factory=dict)  # --var over the file's
    state: Path | None = None
    retry_file: Path | None = None
    recreate_list: bool = False
    lock_timeout: str = "0s"
    list_id: str | None = None
    every: str | None = None
    webhook_options: bool = False  # --property, --all-properties, --resend-changed-properties


@dataclass(frozen=True)
class SyncJob:
    """The runs to do: the cohorts, how, and where (the destination keys after merging)."""

    cohorts: list[CohortSpec]
    settings: SyncSettings
    url: str | None
    auth: Any
    list_id_path: str | None
    paths: dict[str, str]  # call -> path, the flags and the plan's
    path: str | None  # --path (property mode's identify call, webhook mode's suffix)
    period: float | None  # --every, seconds

    @property
    def webhook(self) -> bool:
        """True in webhook mode."""
        return self.settings.mode is SyncMode.webhook


def prepare(flags: SyncFlags, file: DestinationFile | None = None) -> SyncJob:
    """Merge the flags, the ``--plan`` file and the destination file; InputError when they
    contradict each other (see the module docstring for who wins)."""
    plan = load_plan(flags.plan) if flags.plan is not None else None
    cohorts = _cohorts(flags, plan)
    given = dict(plan.destination) if plan is not None else {}

    def pick(flag: Any, key: str, default: Any = None) -> Any:
        return flag if flag is not None else given.get(key, default)

    default_mode = file.mode if file is not None else SyncMode.list.value
    mode = SyncMode(pick(flags.mode, "mode", default_mode))
    batch = flags.batch
    if batch is None:
        batch = file is None or payloads.IDENTIFY_BATCH in file.calls
    elif file is not None and mode is SyncMode.property:
        wanted = payloads.IDENTIFY_BATCH if batch else payloads.IDENTIFY
        if wanted not in file.calls:
            raise InputError(f"destination {file.name!r} has no {wanted} call")
    property_call = payloads.IDENTIFY_BATCH if batch else payloads.IDENTIFY
    if mode is not SyncMode.webhook and flags.webhook_options:
        raise InputError(
            "--property, --all-properties and --resend-changed-properties are for --mode webhook"
        )
    if flags.path is not None and mode is SyncMode.list:
        raise InputError(
            "--path is the identify path of property mode; in list mode use "
            "--create-path, --add-path and --remove-path"
        )
    per_call = {
        payloads.LIST_CREATE: pick(flags.create_path, "create_path"),
        payloads.LIST_ADD: pick(flags.add_path, "add_path"),
        payloads.LIST_REMOVE: pick(flags.remove_path, "remove_path"),
        payloads.IDENTIFY: given.get("identify_path"),
        payloads.IDENTIFY_BATCH: given.get("batch_path"),
    }
    paths = {call: path for call, path in per_call.items() if path is not None}
    path = pick(flags.path, "path")
    if path is not None:
        paths[property_call] = path
    default_batch = DEFAULT_BATCH_SIZE
    if file is not None and file.batch_size is not None:
        default_batch = file.batch_size
    routed = route_templates(
        mode, property_call, None if mode is SyncMode.webhook else flags.payload, flags.templates
    )
    settings = SyncSettings(
        mode=mode,
        batch_size=int(pick(flags.batch_size, "batch_size", default_batch)),
        workers=int(pick(flags.workers, "workers", DEFAULT_WORKERS)),
        policy=flags.policy,
        full=flags.full,
        batch=batch,
        templates=_with_file_templates(file, routed),
        variables=dict(flags.variables),
        state_path=flags.state,
        retry_file=flags.retry_file,
        recreate_list=flags.recreate_list,
        lock_timeout=parse_duration(flags.lock_timeout, option="--lock-timeout"),
        list_id=flags.list_id,
    )
    period = parse_duration(flags.every, option="--every") if flags.every is not None else None
    if period is not None and period <= 0:
        raise InputError("--every must be longer than 0 seconds")
    return SyncJob(
        cohorts=cohorts,
        settings=settings,
        url=pick(flags.url, "url"),
        auth=pick(flags.auth, "auth"),
        list_id_path=pick(flags.list_id_path, "list_id_path"),
        paths=paths,
        path=path,
        period=period,
    )


def route_templates(
    mode: SyncMode,
    property_call: str,
    payload: Path | None,
    per_call: Mapping[str, Template],
) -> dict[str, Template]:
    """``--payload`` for the calls carrying users, then the per-call templates (they win)."""
    found: dict[str, Template] = {}
    if payload is not None:
        shared = Template.from_file(payload)
        if mode is SyncMode.list:
            found[payloads.LIST_ADD] = found[payloads.LIST_REMOVE] = shared
        else:
            found[property_call] = shared
    found.update(per_call)
    return found


def _with_file_templates(
    file: DestinationFile | None, given: Mapping[str, Template]
) -> dict[str, Template]:
    # The file's templates under the given ones; each builds $items with the file's items.
    if file is None:
        return dict(given)
    return {
        **file.templates(),
        **{call: Template(t.text, t.source, items=file.items) for call, t in given.items()},
    }


def _cohorts(flags: SyncFlags, plan: SyncPlan | None) -> list[CohortSpec]:
    if plan is not None:
        if flags.snapshot is not None or flags.cohort_name or flags.cohort_id:
            raise InputError("give either --plan or SNAPSHOT with --cohort-name and --cohort-id")
        return list(plan.cohorts)
    if flags.snapshot is None:
        raise InputError("give the SNAPSHOT ID file (or --plan FILE)")
    name, cohort_id = flags.cohort_name, flags.cohort_id
    if not name or not name.strip() or not cohort_id or not cohort_id.strip():
        raise InputError(
            "--cohort-name and --cohort-id are required (they name the list and "
            "the trait, as Amplitude does)"
        )
    return [CohortSpec(name, cohort_id.strip(), str(flags.snapshot), flags.column)]

"""What a sync did: one cohort (:class:`CohortSync`), one run over a plan (:class:`SyncRun`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cohortctl.durations import json_seconds
from cohortctl.sync.batches import DeliveryReport
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.settings import SyncMode

OK = "ok"
FAILED = "failed"
INTERRUPTED = "interrupted"
BUSY = "busy"  # another sync of the cohort held its lock: nothing was read or sent
PHASES = ("read", "diff", "deliver", "confirm")
"""Where a sync's time goes: reading the snapshot, diffing (and storing the plan),
delivering the batches, confirming them (the last commits, the fold, the run record)."""


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

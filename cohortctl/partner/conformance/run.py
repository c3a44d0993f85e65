"""One run of ``cohortctl check``: what it is asked (:class:`CheckOptions`), what it found
(:class:`CheckRun`), and the CI reports of a finished run (JUnit XML, a Markdown summary).

Test data is recognisable: the list name and the trait key are
``[Amplitude] cohortctl-check: <run id>`` and generated users are ``cohortctl-check-<run id>-N``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cohortctl.errors import InputError
from cohortctl.partner import mock, payloads
from cohortctl.partner.conformance import reports
from cohortctl.partner.conformance.reports import CaseResult
from cohortctl.partner.destination_files import REJECTS
from cohortctl.partner.mock import FlowMode, MockSpec
from cohortctl.partner.templates import Template

SUITE = "cohortctl check"
COHORT_NAME = "cohortctl-check"
DEFAULT_BATCH_SIZE = mock.DEFAULT_BATCH_SIZE
MAX_BURST = 1000


def new_run_id() -> str:
    """A short random hex id naming one run's test data."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class CheckOptions:
    """What to check: mode, test users, opt-in cases, payload templates."""

    mode: FlowMode = FlowMode.list
    run_id: str = field(default_factory=new_run_id)
    ids: tuple[str, ...] = ()  # existing users to use; empty: generate batch_size users
    batch_size: int = DEFAULT_BATCH_SIZE
    unknown_user: str | None = None
    burst: int | None = None
    expect_throttle: bool = False
    max_latency_ms: float | None = None
    templates: Mapping[str, Template] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    list_id: str | None = None  # an existing list: no list-create is sent
    rejects: Mapping[str, int | None] = field(default_factory=lambda: dict(REJECTS))

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.run_id or not self.run_id.isalnum():
            raise InputError(f"run id must be letters and digits, got {self.run_id!r}")
        if self.burst is not None and not 1 <= self.burst <= MAX_BURST:
            raise InputError(f"--burst must be between 1 and {MAX_BURST}, got {self.burst}")
        if self.expect_throttle and self.burst is None:
            raise InputError("--expect-throttle needs --burst N (how many requests to send)")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise InputError(f"--max-latency-ms must be more than 0, got {self.max_latency_ms}")
        if self.unknown_user is not None:
            if not self.unknown_user.strip():
                raise InputError("--unknown-user must not be empty")
            if self.unknown_user in self.ids:
                raise InputError("--unknown-user must not be one of the test users (--id)")
        unknown = sorted(set(self.templates) - set(payloads.CALLS))
        if unknown:
            raise InputError(f"payload templates for unknown call(s): {', '.join(unknown)}")

    @property
    def label(self) -> str:
        """The list name and trait key of this run: ``[Amplitude] cohortctl-check: <run id>``."""
        return payloads.cohort_label(COHORT_NAME, self.run_id)

    @property
    def users(self) -> tuple[str, ...]:
        """The test users: the given ids, or ``cohortctl-check-<run id>-1..batch_size``."""
        if self.ids:
            return self.ids
        return tuple(f"{COHORT_NAME}-{self.run_id}-{n}" for n in range(1, self.batch_size + 1))

    def spec(self) -> MockSpec:
        """The :class:`MockSpec` the requests are prepared from (cohort = this run)."""
        return MockSpec(
            cohort_name=COHORT_NAME,
            cohort_id=self.run_id,
            ids=self.users,
            batch_size=self.batch_size,
            templates=self.templates,
            variables=self.variables,
            list_id=self.list_id,
        )


@dataclass
class CheckRun:
    """A finished run: its cases, the list it created and what the cleanup did."""

    run_id: str
    target: str
    mode: str
    label: str
    users: int
    list_id: str | None = None
    cases: list[CaseResult] = field(default_factory=list)
    cleanup: list[dict[str, Any]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unclassified: list[int] = field(default_factory=list)  # non-2xx met without a classification
    list_given: bool = False

    @property
    def passed(self) -> bool:
        """True when no case failed (skipped cases do not fail a run)."""
        return reports.totals(self.cases).failed == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: run facts, totals, every case with its requests, the cleanup."""
        counts = reports.totals(self.cases)
        return {
            "suite": SUITE,
            "run_id": self.run_id,
            "target": self.target,
            "mode": self.mode,
            "label": self.label,
            "users": self.users,
            "list_id": self.list_id,
            "ok": self.passed,
            "totals": {
                "tests": counts.tests,
                "passed": counts.passed,
                "failed": counts.failed,
                "skipped": counts.skipped,
            },
            "cases": [case.to_dict() for case in self.cases],
            "warnings": self.warnings,
            "unclassified": self.unclassified,
            "cleanup": {"requests": self.cleanup, "leftovers": self.leftovers},
        }

    def test_data_note(self) -> str:
        """What test data remains after the run, for the reports."""
        note = f"test data: {self.label!r}"
        if self.list_id is not None and self.list_given:
            note += f"; the test users were removed from the given list {self.list_id}"
        elif self.list_id is not None:
            note += (
                f"; list {self.list_id} is left empty (Amplitude's protocol has no delete-list "
                "call)"
            )
        if self.leftovers:
            note += "; NOT cleaned up: " + "; ".join(self.leftovers)
        return note


def junit_report(run: CheckRun) -> str:
    """The run as JUnit XML: one test case per case, run id and target as properties."""
    properties = {
        "run_id": run.run_id,
        "target": run.target,
        "mode": run.mode,
        "label": run.label,
        "test_data": run.test_data_note(),
    }
    if run.list_id is not None:
        properties["list_id"] = run.list_id
    return reports.junit_xml(SUITE, run.cases, properties=properties)


def markdown_report(run: CheckRun) -> str:
    """The run as a GitHub step summary: verdict, one row per case, the test-data note."""
    text = reports.markdown_summary(
        f"{SUITE} · run {run.run_id} · mode {run.mode}", run.cases, target=run.target
    )
    return text + f"\n{run.test_data_note()}\n"

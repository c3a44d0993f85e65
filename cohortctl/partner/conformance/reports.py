"""Reports of a conformance run for CI: JUnit XML, a Markdown summary, table rows, the files.

JUnit is the dialect GitHub, GitLab and Jenkins all read: one ``<testsuite>`` in a
``<testsuites>`` root, ``<failure>`` for a failed case and ``<skipped>`` for a skipped one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from cohortctl import files
from cohortctl.durations import json_seconds
from cohortctl.errors import InputError

Status = Literal["pass", "fail", "skip"]
_ICONS = {"pass": "✅ pass", "fail": "❌ fail", "skip": "⏭️ skip"}


@dataclass
class CaseResult:
    """One conformance case: what was expected and what came back."""

    name: str
    group: str
    status: Status
    expected: str
    actual: str
    detail: str = ""
    duration_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields: ``result`` is pass, fail or skip (``status`` is kept for HTTP)."""
        data = asdict(self)
        data["result"] = data.pop("status")
        data["duration_s"] = json_seconds(self.duration_s)
        return data


@dataclass(frozen=True)
class Totals:
    """Counts over a run."""

    tests: int
    passed: int
    failed: int
    skipped: int


def totals(cases: Sequence[CaseResult]) -> Totals:
    """Count passes, failures and skips."""
    passed = sum(c.status == "pass" for c in cases)
    failed = sum(c.status == "fail" for c in cases)
    skipped = sum(c.status == "skip" for c in cases)
    return Totals(len(cases), passed, failed, skipped)


def junit_xml(
    suite: str,
    cases: Sequence[CaseResult],
    *,
    properties: dict[str, str] | None = None,
    timestamp: datetime | None = None,
) -> str:
    """A JUnit XML document for ``cases`` (UTF-8, with declaration)."""
    counts = totals(cases)
    when = (timestamp or datetime.now(timezone.utc)).replace(microsecond=0)
    elapsed = f"{sum(c.duration_s for c in cases):.3f}"
    summary = {
        "name": suite,
        "tests": str(counts.tests),
        "failures": str(counts.failed),
        "errors": "0",
        "skipped": str(counts.skipped),
        "time": elapsed,
    }
    root = ET.Element("testsuites", summary)
    node = ET.SubElement(root, "testsuite", summary, timestamp=when.isoformat())
    if properties:
        props = ET.SubElement(node, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=key, value=value)
    for case in cases:
        element = ET.SubElement(
            node,
            "testcase",
            classname=f"{suite}.{case.group}",
            name=case.name,
            time=f"{case.duration_s:.3f}",
        )
        text = f"expected: {case.expected}\nactual: {case.actual}"
        if case.detail:
            text += f"\n{case.detail}"
        if case.status == "fail":
            failure = ET.SubElement(
                element, "failure", message=f"expected {case.expected}, got {case.actual}"
            )
            failure.text = text
        elif case.status == "skip":
            ET.SubElement(element, "skipped", message=case.detail or case.actual)
        else:
            ET.SubElement(element, "system-out").text = text
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_summary(title: str, cases: Sequence[CaseResult], *, target: str = "") -> str:
    """A GitHub-flavoured Markdown summary: verdict line, then one table row per case."""
    counts = totals(cases)
    verdict = "✅ all passed" if counts.failed == 0 else f"❌ {counts.failed} failed"
    lines = [f"### {title}", ""]
    if target:
        lines += [f"Target: `{target}`", ""]
    lines += [
        f"**{verdict}** — {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped",
        "",
        "| case | result | expected | actual |",
        "|---|---|---|---|",
    ]
    for case in cases:
        actual = case.actual if not case.detail else f"{case.actual} — {case.detail}"
        lines.append(
            f"| {_cell(case.name)} | {_ICONS[case.status]} | {_cell(case.expected)} "
            f"| {_cell(actual)} |"
        )
    return "\n".join(lines) + "\n"


def check_writable(path: Path, what: str) -> None:
    """InputError before anything is sent when a report file cannot be written there."""
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: the directory {parent} does not exist")


def write_text(path: Path, text: str, *, append: bool = False, what: str = "report") -> None:
    """Write (or append) a report whole or not at all; FileWriteError naming the file."""
    if append:
        files.append_text(path, text, what=what)
    else:
        files.write_text_atomically(path, text, what=what)


def case_rows(cases: Iterable[CaseResult]) -> list[tuple[str, str, str, str]]:
    """Table rows for people: case, result, expected, actual (with why)."""
    rows: list[tuple[str, str, str, str]] = []
    for case in cases:
        actual = case.actual if not case.detail else f"{case.actual} — {case.detail}"
        rows.append((case.name, case.status, case.expected, actual))
    return rows

from __future__ import annotations

import xml.etree.ElementTree as ET

from cohortctl.partner.conformance.reports import CaseResult, junit_xml, markdown_summary, totals

CASES = [
    CaseResult(
        "list create", "accepted", "pass", "2xx with a list id", "200, listId=l1", duration_s=0.01
    ),
    CaseResult(
        "wrong api key",
        "rejected",
        "fail",
        "401",
        "200",
        detail="the endpoint accepted a wrong key <&>",
        duration_s=0.02,
    ),
    CaseResult("unknown user", "opt-in", "skip", "404", "not run", detail="pass --unknown-user ID"),
]


def test_totals() -> None:
    t = totals(CASES)
    assert (t.tests, t.passed, t.failed, t.skipped) == (3, 1, 1, 1)


def test_junit_is_valid_xml_with_counts() -> None:
    root = ET.fromstring(junit_xml("cohortctl-check", CASES, properties={"url": "http://x"}))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.attrib["tests"] == "3"
    assert suite.attrib["failures"] == "1"
    assert suite.attrib["skipped"] == "1"
    cases = suite.findall("testcase")
    assert [c.attrib["name"] for c in cases] == ["list create", "wrong api key", "unknown user"]
    failure = cases[1].find("failure")
    assert failure is not None and "expected 401, got 200" in failure.attrib["message"]
    assert "<&>" in (failure.text or "")
    assert cases[2].find("skipped") is not None
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None


def test_markdown_summary() -> None:
    text = markdown_summary("cohortctl check", CASES, target="http://x")
    assert "❌ 1 failed" in text
    assert "| wrong api key | ❌ fail | 401 | 200 — the endpoint accepted a wrong key <&> |" in text
    assert "1 passed, 1 failed, 1 skipped" in text

"""``cohortctl check`` end to end: exit codes, table, JSON, JUnit and the step summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli, assert_no_secrets
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
SMALL = ("--batch-size", "5")


def check_json(cli: RunCli, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    result = cli("check", *SMALL, *args, "--output", "json", env={**KEY_ENV, **(env or {})})
    return result.exit_code, json.loads(result.stdout)


def test_compliant_receiver_passes_with_exit_0(
    cli: RunCli, partner_server: BackgroundServer
) -> None:
    result = cli("check", "--url", partner_server.url, "--mode", "both", *SMALL, env=KEY_ENV)
    assert result.exit_code == 0, result.output
    for name in ("list-create accepted", "list-add rejects a wrong api key",
                 "identify-batch false accepted"):  # fmt: skip
        assert name in result.stdout
    assert "cohortctl check · run" in result.stdout and partner_server.url in result.stdout
    assert "16 passed, 0 failed, 4 skipped" in result.stderr
    assert "left empty" in result.stderr


def test_broken_receiver_exit_1_and_json_says_why(
    cli: RunCli, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(
        api_key=PARTNER_KEY, accept_any_key=True, accept_bad_bodies=True, never_404=True
    )
    code, data = check_json(cli, "--url", server.url, "--unknown-user", "ghost")
    assert code == 1
    assert data["ok"] is False and data["totals"]["failed"] == 6
    failed = {c["name"]: c for c in data["cases"] if c["result"] == "fail"}
    assert "list-add rejects an unknown list" in failed
    wrong = failed["list-add rejects a wrong api key"]
    assert wrong["expected"].startswith("401") and wrong["actual"].startswith("200")
    assert "wrong api key" in wrong["detail"]
    request = wrong["requests"][0]
    assert request["method"] == "POST" and request["status"] == 200
    assert request["url"] == f"{server.url}/lists/{data['list_id']}/add"
    assert request["latency_s"] >= 0
    assert len(data["run_id"]) == 8 and data["label"].endswith(data["run_id"])


def test_junit_file_and_github_step_summary(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, never_404=True)
    junit = tmp_path / "check.xml"
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    result = cli(
        "check", "--url", server.url, *SMALL, "--junit", str(junit),
        env={**KEY_ENV, "GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == "11"
    assert suite.get("failures") == "1" and suite.get("skipped") == "3"
    failure = next(c for c in cases if c.find("failure") is not None)
    assert failure.get("name") == "list-add rejects an unknown list"
    assert "does not exist" in (failure.findtext("failure") or "")
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")
    assert "❌ 1 failed" in text and "list-add rejects an unknown list" in text
    assert_no_secrets(junit.read_text(encoding="utf-8"), text)


def test_opt_in_cases_run_on_request(cli: RunCli, partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, known_users=frozenset({"u1", "u2"}))
    code, data = check_json(
        cli, "--url", server.url, "--mode", "property", "--id", "u1", "--id", "u2",
        "--unknown-user", "ghost", "--burst", "5", "--max-latency-ms", "60000",
    )  # fmt: skip
    assert code == 0, data
    assert data["totals"] == {"tests": 11, "passed": 11, "failed": 0, "skipped": 0}
    assert data["users"] == 2


def test_connection_refused_is_a_failed_run_not_a_traceback(cli: RunCli, refused_url: str) -> None:
    result = cli("check", "--url", refused_url, *SMALL, "--timeout", "2", env=KEY_ENV)
    assert result.exit_code == 1
    assert "connection refused" in result.stdout


def test_usage_errors_exit_2_before_anything_is_sent(
    cli: RunCli, partner_server: BackgroundServer, tmp_path: Path
) -> None:
    no_url = cli("check", env=KEY_ENV)
    assert no_url.exit_code == 2 and "--url" in no_url.stderr
    no_key = cli("check", "--url", partner_server.url)
    assert no_key.exit_code == 2 and "API key" in no_key.stderr
    cases = [
        (("--expect-throttle",), "--burst"),
        (("--burst", "0"), "--burst"),
        (("--mode", "sideways"), "--mode"),
        (("--junit", str(tmp_path / "missing" / "x.xml")), "does not exist"),
        (("--create-payload", str(tmp_path / "nope.json")), "nope.json"),
    ]
    for args, words in cases:
        result = cli("check", "--url", partner_server.url, *args, env=KEY_ENV)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output, (args, result.output)
    insecure = cli("check", "--url", "http://partner.example", env=KEY_ENV)
    assert insecure.exit_code == 2 and "plain http" in insecure.stderr


def test_check_is_documented_in_help(cli: RunCli) -> None:
    result = cli("check", "--help")
    assert result.exit_code == 0
    for flag in ("--junit", "--burst", "--expect-throttle", "--unknown-user", "--mode"):
        assert flag in result.stdout

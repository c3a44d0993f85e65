"""``check --mode webhook`` against the embedded receiver and a receiver that accepts anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.http_servers import ScriptServer, answer
from tests.partner_fixtures import PartnerFactory

HOOK = "hook-secret-7788"


@pytest.fixture
def accept_all() -> Iterator[str]:
    """An endpoint that answers 200 to anything (no de-duplication, no header checks)."""
    with ScriptServer(lambda n: [answer(200, b"{}")]) as server:
        yield f"{server.url}/hook"


def test_embedded_receiver_passes_every_case(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    junit = tmp_path / "report.xml"
    summary = tmp_path / "summary.md"
    result = cli(
        "check", "--mode", "webhook", "--url", f"{server.url}/webhook", "-H", f"X-Hook:{HOOK}",
        "--require-header", "X-Hook", "--batch-size", "5", "--junit", str(junit), "-o", "json",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert HOOK not in result.output + junit.read_text() + summary.read_text()
    data = json.loads(result.stdout)
    names = [c["name"] for c in data["cases"]]
    assert names == [
        "webhook: entering batch accepted",
        "webhook: the same message twice accepted both times",
        "webhook: a body that is not JSON rejected",
        "webhook: a message without X-Hook rejected",
        "webhook: leaving batch accepted",
        "webhook: answers within 2000 ms",
    ]
    assert all(c["result"] == "pass" for c in data["cases"])
    assert "wants a header" in data["cases"][3]["actual"]
    assert "api_key" not in result.stdout  # a webhook has no key: its headers are its auth
    assert 'tests="6"' in junit.read_text() and "webhook" in summary.read_text()


def test_an_endpoint_that_accepts_anything_fails_the_right_cases(
    cli: RunCli, accept_all: str
) -> None:
    result = cli("check", "--mode", "webhook", "--url", accept_all, "--require-header",
                 "X-Hook", "-H", f"X-Hook:{HOOK}", "-o", "json")  # fmt: skip
    assert result.exit_code == 1, result.output
    failed = {c["name"] for c in json.loads(result.stdout)["cases"] if c["result"] == "fail"}
    assert failed == {
        "webhook: a body that is not JSON rejected",
        "webhook: a message without X-Hook rejected",
    }


def test_a_slow_endpoint_fails_the_latency_budget(
    cli: RunCli, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(delay_ms=150)
    result = cli("check", "--mode", "webhook", "--url", f"{server.url}/webhook",
                 "--max-latency-ms", "50", "--batch-size", "2")  # fmt: skip
    assert result.exit_code == 1
    assert "answers within 50 ms" in result.output


def test_require_header_is_for_webhook_mode(cli: RunCli) -> None:
    result = cli("check", "--url", "http://127.0.0.1:9/", "--require-header", "X")
    assert result.exit_code == 2 and "--mode webhook" in result.output




def test_check_renders_every_message_through_the_payload_template(
    cli: RunCli, tmp_path: Path
) -> None:
    template = tmp_path / "hook.ftl"
    template.write_text(
        '{"hook": "${input.cohort_id}", "in": ${input.in_cohort?c}, "users": [<#list '
        'input.users as user>{"id": "${user.user_id?json_string}", "props": '
        "${UtilClass.toJsonString(user.user_properties)}}<#sep>,</#list>]}"
    )
    snapshot = tmp_path / "c.csv"
    snapshot.write_text("user_id,plan\nu1,pro\nu2,free\n")
    with ScriptServer(lambda n: [answer(200, b"{}")]) as server:
        result = cli(
            "check", "--mode", "webhook", "--url", f"{server.url}/hooks", "--path", "/amp",
            "--payload", str(template), "--ids", str(snapshot), "--all-properties",
            "-H", f"X-Hook:{HOOK}", "-o", "json",
        )  # fmt: skip
        received = list(server.received)
    assert result.exit_code == 1, result.output  # an accept-all endpoint takes non-JSON too
    assert {r.request_line for r in received} == {"POST /hooks/amp HTTP/1.1"}
    entering = json.loads(received[0].body)
    assert entering["in"] is True and entering["hook"].startswith("cohortctl-check-")
    assert entering["users"] == [
        {"id": "u1", "props": {"plan": "pro"}}, {"id": "u2", "props": {"plan": "free"}},
    ]  # fmt: skip
    assert received[1].body == received[0].body  # the same message twice
    assert received[2].body == b"this is not JSON {"
    assert received[2].header("X-Hook") == HOOK  # the same headers as the good message
    assert received[2].header("Content-Type") == "application/json"
    assert json.loads(received[3].body)["in"] is False


def test_check_through_a_template_against_the_embedded_receiver(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    template = tmp_path / "ids-only.ftl"
    template.write_text(
        '{"cohort_name": "${input.cohort_name}", "cohort_id": "${input.cohort_id}", '
        '"in_cohort": ${input.in_cohort?c}, "computed_time": "${input.computed_time}", '
        '"message_id": "${input.message_id}", "users": [<#list input.users as user>'
        '{"user_id": "${user.user_id?json_string}"}<#sep>,</#list>]}'
    )
    url = ("--mode", "webhook", "--url", f"{server.url}/webhook", "-H", f"X-Hook:{HOOK}")
    good = cli("check", *url, "--payload", str(template), "--require-header", "X-Hook")
    assert good.exit_code == 0, good.output
    template.write_text('{"not": "the default body", "in": ${input.in_cohort?c}}')
    reshaped = cli("check", *url, "--payload", str(template), "-o", "json")
    assert reshaped.exit_code == 1  # the embedded receiver takes the default body only
    failed = [c["name"] for c in json.loads(reshaped.stdout)["cases"] if c["result"] == "fail"]
    assert "webhook: entering batch accepted" in failed
    template.write_text("<#assign x = 1>")
    refused = cli("check", *url, "--payload", str(template))
    assert refused.exit_code == 2 and "<#assign> is not supported" in refused.output


@pytest.mark.parametrize(
    "option", [("--payload", "x.ftl"), ("--path", "/x"), ("--all-properties",), ("--property", "p")]
)
def test_webhook_options_outside_webhook_mode_are_usage_errors(
    cli: RunCli, option: tuple[str, ...]
) -> None:
    for command in (("check",), ("mock", "flow", "--dry-run")):
        result = cli(*command, "--url", "http://127.0.0.1:9/", "--mode", "list", *option)
        assert result.exit_code == 2, (command, result.output)
        assert f"{option[0]} is for --mode webhook" in result.output

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

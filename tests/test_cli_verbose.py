"""-v shows each exchange as curl -v does; -q leaves only the summary (loopback servers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cohortctl.cli.exchanges import BODY_LIMIT, body_lines, exchange_lines
from cohortctl.http.observe import Exchange
from cohortctl.http.redact import REDACTED
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import CliResult, RunCli
from tests.credentials import PARTNER_KEY
from tests.http_servers import handler_server

ANSWER = {"listId": "L-42", "note": "made"}


class _Fixed(BaseHTTPRequestHandler):
    """Answers every POST with the same JSON and a known header set."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps(ANSWER).encode()
        self.send_response(201, "Created")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-Id", "req-1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fixed_server() -> Iterator[str]:
    with handler_server(_Fixed) as url:
        yield url


def test_mock_verbose_shows_the_exchange_line_by_line(cli: RunCli, fixed_server: str) -> None:
    result = cli(
        "mock", "list-create", "--url", fixed_server, "--cohort-name", "Power Users",
        "--cohort-id", "c1", "-v", env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY},
    )  # fmt: skip
    assert result.exit_code == 0, result
    lines = result.stderr.splitlines()
    start = lines.index("> POST /lists HTTP/1.1")
    host = fixed_server.removeprefix("http://")
    request_headers = lines[start + 1 : lines.index(">", start)]
    assert request_headers[0] == f"> Host: {host}"
    lowered = [h.lower() for h in request_headers]
    assert f"> authorization: basic {REDACTED}" in lowered
    assert "> content-type: application/json" in lowered
    body_start = lines.index(">", start) + 1
    assert lines[body_start] == "{"
    assert lines[body_start + 1].startswith('  "name": "[Amplitude] Power Users: c1"')
    status = lines.index("< HTTP/1.1 201 Created")
    response_headers = lines[status + 1 : lines.index("<", status)]
    assert "< Content-Type: application/json" in response_headers
    assert "< X-Request-Id: req-1" in response_headers
    answer_start = lines.index("<", status) + 1
    assert "\n".join(lines[answer_start : answer_start + 4]) == json.dumps(ANSWER, indent=2)
    assert lines[answer_start + 4].startswith("* ") and lines[answer_start + 4].endswith(" ms")
    # stdout stays data: the table, not the exchange
    assert "> POST" not in result.stdout


def mock_flow(cli: RunCli, url: str, *extra: str) -> CliResult:
    """``cohortctl mock flow --url URL EXTRA`` with the partner key; it must succeed."""
    result = cli(
        "mock", "flow", "--url", url, *extra, env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
    )
    assert result.exit_code == 0, result
    return result


def test_mock_verbose_never_shows_the_key(cli: RunCli, partner_server: BackgroundServer) -> None:
    result = mock_flow(cli, partner_server.url, "-v")
    assert result.stderr.count("> POST ") == 3
    assert result.stderr.count("< HTTP/1.1 ") == 3
    # the cli fixture fails the test if the key appears anywhere


def test_quiet_leaves_only_the_summary(cli: RunCli, partner_server: BackgroundServer) -> None:
    result = mock_flow(cli, partner_server.url, "-q")
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["3 request(s): 3 passed, 0 failed"]


def test_verbose_and_quiet_together_is_a_usage_error(cli: RunCli) -> None:
    result = cli("mock", "flow", "--url", "http://127.0.0.1:9", "-v", "-q")
    assert result.exit_code == 2
    assert "--verbose" in result.stderr and "--quiet" in result.stderr


def test_a_big_body_is_cut_at_64_kib_with_a_marker() -> None:
    body = json.dumps({"ids": [f"user-{n}" for n in range(20_000)]}).encode()
    lines = body_lines(body)
    shown = "\n".join(lines[:-1]).encode()
    assert len(shown) <= BODY_LIMIT
    pretty = json.dumps(json.loads(body), indent=2).encode()
    assert lines[-1] == (
        f"[… {len(pretty) - BODY_LIMIT:,} more bytes not shown; the body is cut at "
        f"{BODY_LIMIT:,} bytes]"
    )


def test_no_answer_and_control_characters() -> None:
    exchange = Exchange(
        method="GET",
        url="http://127.0.0.1:9/x?a=1",
        request_headers=[("X-Evil", "a\x1b[31mb")],
        request_body=b"",
        started=0.0,
        error="ConnectError: refused",
    )
    lines = exchange_lines(exchange)
    assert lines[0] == "> GET /x?a=1 HTTP/1.1"
    assert "> X-Evil: a\\x1b[31mb" in lines
    assert "* no answer: ConnectError: refused" in lines


def test_sync_v_shows_steps_and_vv_every_exchange(
    cli: RunCli, partner_server: BackgroundServer, tmp_path: Path
) -> None:
    snapshot = tmp_path / "members.csv"
    snapshot.write_text("user_id\nu1\nu2\n", encoding="utf-8")
    env = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
    args = ["sync", str(snapshot), "--url", partner_server.url, "--mode", "list"]
    one = cli(*args, "--cohort-name", "A", "--cohort-id", "a1", "-v", env=env)
    assert one.exit_code == 0, one
    assert "> POST" not in one.stderr
    two = cli(*args, "--cohort-name", "B", "--cohort-id", "b1", "-vv", env=env)
    assert two.exit_code == 0, two
    assert "> POST /lists HTTP/1.1" in two.stderr
    assert two.stderr.count("< HTTP/1.1 ") >= 2  # create, then add
    quiet = cli(*args, "--cohort-name", "C", "--cohort-id", "c1", "-q", env=env)
    assert quiet.exit_code == 0, quiet
    assert quiet.stdout == ""
    assert quiet.stderr.strip().splitlines() == [
        "C (c1): ok, 2 added, 0 removed, 2 requests, 0 failed batches"
    ]


def test_wait_verbose_shows_the_probe(cli: RunCli, fixed_server: str) -> None:
    result = cli("wait", "--url", fixed_server + "/health", "-v")
    assert result.exit_code == 0, result
    assert "> GET /health HTTP/1.1" in result.stderr.splitlines()

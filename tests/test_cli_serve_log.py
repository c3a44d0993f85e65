"""`cohortctl serve`: one log line per request on stderr, --quiet, no tracebacks."""

from __future__ import annotations

import base64
import re
import socket
import struct

import httpx

from cohortctl.cli.serve_log import rejection_reason, request_line
from cohortctl.partner import payloads
from tests.credentials import API_KEY, PARTNER_KEY, SECRET_KEY
from tests.test_cli_serve import serve

LINE = re.compile(r"^\d\d:\d\d:\d\d (GET|POST) (\S+) (\d{3}) \d+ms(: .+)?$")


def _log_lines(stderr: str) -> list[re.Match[str]]:
    return [m for m in map(LINE.match, stderr.splitlines()) if m]


def test_partner_logs_each_request_and_why_it_was_rejected() -> None:
    with serve("partner", "--port", "0", env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}) as s:
        auth = (PARTNER_KEY, "")
        httpx.post(f"{s.url}/lists", json=payloads.list_create("A", "1"), auth=auth, timeout=10)
        httpx.post(
            f"{s.url}/lists/nope/add", json=payloads.list_members(["u"]), auth=auth, timeout=10
        )
        httpx.post(
            f"{s.url}/lists",
            json={"nam": "x", "context": payloads.context()},
            auth=auth,
            timeout=10,
        )
        httpx.post(f"{s.url}/identify", json={}, auth=("wrong", ""), timeout=10)
        s.wait_for_stderr(" /identify 401 ")
    lines = [(m.group(2), m.group(3), m.group(4) or "") for m in _log_lines(s.stderr)]
    assert lines[0] == ("/lists", "200", "")
    assert lines[1][:2] == ("/lists/nope/add", "404") and lines[1][2].startswith(": ")
    assert lines[2][:2] == ("/lists", "400") and "name" in lines[2][2]
    assert lines[3][:2] == ("/identify", "401") and lines[3][2]
    assert "Traceback" not in s.stderr


def test_quiet_leaves_the_request_log_out() -> None:
    env = {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY}
    with serve("amplitude", "--port", "0", "--quiet", env=env) as s:
        httpx.get(f"{s.url}/api/3/cohorts", auth=(API_KEY, SECRET_KEY), timeout=10)
    assert _log_lines(s.stderr) == []
    assert "listening on" in s.stderr


def test_a_client_that_goes_away_is_one_line_never_a_traceback() -> None:
    with serve("partner", "--port", "0", env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}) as s:
        host, port = s.url.removeprefix("http://").split(":")
        token = base64.b64encode(f"{PARTNER_KEY}:".encode()).decode()
        for _ in range(3):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(
                b"POST /lists HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Basic {token}\r\n".encode()
                + b'Content-Length: 100000\r\n\r\n{"name": "[Ampli'
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset mid-body
        httpx.post(f"{s.url}/lists", json=payloads.list_create("A", "1"),
                   auth=(PARTNER_KEY, ""), timeout=10)  # fmt: skip
        s.wait_for_stderr(" /lists 200 ")
    assert "Traceback" not in s.stderr
    assert all(len(line) < 300 for line in s.stderr.splitlines())


def test_line_shapes() -> None:
    assert re.match(r"^\d\d:\d\d:\d\d POST /a\\x1b 404 3ms: gone$",
                    request_line("POST", "/a\x1b", 404, 3.2, "gone"))  # fmt: skip
    assert rejection_reason(b'{"error": "userIds: expected a list"}') == (
        "userIds: expected a list"
    )
    assert rejection_reason(b"plain\ntext") == "plain text"


def test_a_key_in_the_query_never_reaches_the_log() -> None:
    with serve("partner", "--port", "0", "--auth", "any",
               env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}) as s:  # fmt: skip
        body = payloads.list_create("A", "1")
        url = f"{s.url}/lists?api_key={PARTNER_KEY}&x=1"
        httpx.post(url, json=body, auth=(PARTNER_KEY, ""), timeout=10)
        s.wait_for_stderr(" /lists?")
    assert PARTNER_KEY not in s.stderr
    assert "/lists?api_key=" in s.stderr and "x=1" in s.stderr

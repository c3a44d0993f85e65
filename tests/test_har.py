"""HAR 1.2 recordings: valid against the spec's schema, streamed, redacted, salvageable."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx

from cohortctl.http.har import HarWriter, read_har, recording
from cohortctl.http.observe import Exchange, notify
from cohortctl.http.settings import current
from cohortctl.partner import payloads
from cohortctl.partner.calls import call_matcher
from cohortctl.partner.destination import AuthMode, Destination, make_client
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY, PARTNER_SECRET, SECRETS
from tests.har_schema import assert_valid_har

BASIC = base64.b64encode(f"{PARTNER_KEY}:{PARTNER_SECRET}".encode()).decode()


def _exchange(**overrides: Any) -> Exchange:
    fields: dict[str, Any] = {
        "method": "POST",
        "url": f"https://partner.example/amplitude/lists/7/add?token={PARTNER_KEY}&x=1",
        "request_headers": [
            ("Content-Type", "application/json"),
            ("Authorization", f"Basic {BASIC}"),
            ("X-Echo", f"echo {PARTNER_KEY}"),
        ],
        "request_body": json.dumps({"userIds": ["u1"], "note": PARTNER_SECRET}).encode(),
        "started": time.time(),
        "status": 200,
        "reason": "OK",
        "response_headers": [("Content-Type", "application/json"), ("Set-Cookie", "s=abc123")],
        "response_body": json.dumps({"echo": PARTNER_KEY}).encode(),
        "send_ms": 0.2,
        "wait_ms": 3.5,
        "receive_ms": 0.1,
    }
    fields.update(overrides)
    return Exchange(**fields)


def test_entries_follow_har_1_2_and_hide_every_credential(tmp_path: Path) -> None:
    path = tmp_path / "run.har"
    call_of = call_matcher(Destination(base_url="https://partner.example/amplitude"))
    with HarWriter(path, base_url="https://partner.example/amplitude", call_of=call_of) as writer:
        writer(_exchange())
        writer(_exchange(status=None, reason="", response_headers=(), response_body=b"",
                         error="connection refused"))  # fmt: skip
        writer(_exchange(method="GET", request_body=b"", response_body=b"\xff\x00binary"))
    text = path.read_text()
    for secret in SECRETS:
        assert secret not in text
    assert BASIC not in text
    doc = assert_valid_har(path)
    log = doc["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "cohortctl"
    assert log["_baseUrl"] == "https://partner.example/amplitude"
    first, refused, binary = log["entries"]
    headers = {h["name"]: h["value"] for h in first["request"]["headers"]}
    assert headers["Authorization"] == "Basic ***redacted***"
    assert headers["Content-Type"] == "application/json"
    assert first["request"]["postData"]["mimeType"] == "application/json"
    assert json.loads(first["request"]["postData"]["text"])["userIds"] == ["u1"]
    assert {"name": "x", "value": "1"} in first["request"]["queryString"]
    assert first["response"]["status"] == 200 and first["_call"] == "list-add"
    assert first["time"] == 3.8
    assert refused["response"]["status"] == 0 and refused["_error"] == "connection refused"
    assert binary["response"]["content"]["encoding"] == "base64"
    assert "postData" not in binary["request"]


def test_each_entry_is_on_disk_before_the_next_and_a_killed_file_is_salvaged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cut.har"
    writer = HarWriter(path)
    for number in range(3):
        writer(_exchange(reason=f"call-{number}"))
        lines = path.read_text().splitlines()
        assert len(lines) == number + 2  # the head, then one line per entry so far
    # a kill: no closing brackets, and half an entry
    with path.open("a") as handle:
        handle.write(',{"startedDateTime": "2026-')
    log = read_har(path)
    assert [e["response"]["statusText"] for e in log["entries"]] == ["call-0", "call-1", "call-2"]
    assert log["_truncated"] is True
    writer.close()


def test_recording_collects_what_senders_report_and_stops_after(tmp_path: Path) -> None:
    path = tmp_path / "r.har"
    with recording(path):
        notify(current().observers, _exchange())
    notify(
        current().observers, _exchange()
    )  # after the block: not recorded, and the file is complete
    assert len(assert_valid_har(path)["log"]["entries"]) == 1


def test_httpx_clients_report_real_exchanges(
    tmp_path: Path, partner_server: BackgroundServer
) -> None:
    destination = Destination(base_url=partner_server.url, auth=AuthMode.basic, api_key=PARTNER_KEY)
    path = tmp_path / "http.har"
    body = payloads.list_create("c", "1")
    with recording(path), make_client(destination) as client:
        answer = client.post(f"{partner_server.url}/lists", json=body,
                             headers=destination.request_headers())  # fmt: skip
        assert answer.json() == {
            "listId": "1",
            "response": {"listId": "1"},
        }  # the caller still reads the answer
        with contextlib.suppress(httpx.TransportError):
            client.post("http://127.0.0.1:9/lists", json=body)
    entries = assert_valid_har(path)["log"]["entries"]
    assert [e["response"]["status"] for e in entries] == [200, 0]
    assert json.loads(entries[0]["response"]["content"]["text"]) == {
        "listId": "1",
        "response": {"listId": "1"},
    }
    assert "ConnectError" in entries[1]["_error"]
    assert PARTNER_KEY not in path.read_text()


def test_mock_flow_har_is_valid_and_redacted(
    cli: RunCli, partner_server: BackgroundServer, tmp_path: Path
) -> None:
    path = tmp_path / "flow.har"
    result = cli("mock", "flow", "--url", partner_server.url, "--har", str(path),
                 env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY})  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = assert_valid_har(path)["log"]["entries"]
    assert [e["_call"] for e in entries] == ["list-create", "list-add", "list-remove"]
    assert all(e["response"]["status"] == 200 for e in entries)
    assert PARTNER_KEY not in path.read_text()


def test_bad_har_files_are_one_line_errors(cli: RunCli, tmp_path: Path) -> None:
    cases = {
        "notjson.har": "{nope",
        "nolog.har": json.dumps({"entries": []}),
        "norequest.har": json.dumps({"log": {"entries": [{"response": {}}]}}),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        result = cli("replay", str(path), "--url", "http://127.0.0.1:9", "--auth", "none")
        assert result.exit_code == 2, result.output
        assert name in result.stderr


def test_every_amplitude_command_records_har_without_its_keys(
    cli: RunCli, amplitude_server_factory: Any, tmp_path: Path
) -> None:
    server = amplitude_server_factory(export_redirect=True)
    ids = tmp_path / "ids.txt"
    ids.write_text("alice\nbob\n")
    hars = {name: tmp_path / f"{name}.har" for name in ("upload", "add", "list", "download")}
    upload = cli("upload", str(ids), "--name", "Seed", "--app-id", "1", "--owner", "me@x.example",
                 "--base-url", server.url, "-o", "json", "--har", str(hars["upload"]))  # fmt: skip
    assert upload.exit_code == 0, upload.output
    cohort = str(json.loads(upload.stdout)["summary"]["cohort_id"])
    more = tmp_path / "more.txt"
    more.write_text("carol\n")
    commands = {
        "add": ("membership", "add", str(more), "--cohort-id", cohort),
        "list": ("cohorts", "list"),
        "download": ("cohorts", "download", cohort, "-o", str(tmp_path / "m.csv")),
    }
    for name, args in commands.items():
        result = cli(*args, "--base-url", server.url, "--har", str(hars[name]))
        assert result.exit_code == 0, result.output
    for name, path in hars.items():
        text = path.read_text()
        for secret in SECRETS:
            assert secret not in text, name
        entries = assert_valid_har(path)["log"]["entries"]
        assert entries and all(e["response"]["status"] for e in entries), name
    (created,) = assert_valid_har(hars["upload"])["log"]["entries"]
    assert created["request"]["method"] == "POST" and created["response"]["status"] == 200
    auth = {h["name"].lower(): h["value"] for h in created["request"]["headers"]}["authorization"]
    assert auth == "Basic ***redacted***"
    download = assert_valid_har(hars["download"])["log"]["entries"]
    assert any(e["response"]["status"] in (301, 302, 303, 307) for e in download)
    (signed,) = [e for e in download if "/signed/" in e["request"]["url"]]
    assert "alice" in signed["response"]["content"]["text"]
    assert not any(h["name"].lower() == "authorization" for h in signed["request"]["headers"])


def test_check_records_har(cli: RunCli, partner_server: BackgroundServer, tmp_path: Path) -> None:
    path = tmp_path / "check.har"
    result = cli("check", "--url", partner_server.url, "--har", str(path),
                 env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY})  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = assert_valid_har(path)["log"]["entries"]
    statuses = {e["response"]["status"] for e in entries}
    assert {200, 400, 401, 404} <= statuses
    assert PARTNER_KEY not in path.read_text()
    assert "list-create" in {e.get("_call") for e in entries}


def test_har_names_the_calls_when_the_base_url_has_a_query_holding_the_key(
    cli: RunCli, partner_server: BackgroundServer, tmp_path: Path
) -> None:
    path = tmp_path / "flow.har"
    result = cli("mock", "flow", "--url", f"{partner_server.url}/?token={PARTNER_KEY}&v=2",
                 "--har", str(path), env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY})  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = assert_valid_har(path)["log"]["entries"]
    assert [e["_call"] for e in entries] == ["list-create", "list-add", "list-remove"]
    assert all("token=***redacted***&v=2" in e["request"]["url"] for e in entries)
    assert PARTNER_KEY not in path.read_text()

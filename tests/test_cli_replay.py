"""``cohortctl replay``: recorded requests sent again to a fresh receiver, list ids followed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.http.har import HarWriter
from cohortctl.http.observe import Exchange
from cohortctl.partner import payloads
from cohortctl.partner.destination import AuthMode, Destination
from cohortctl.partner.replay import RecordedRequest, Replayer
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.har_schema import assert_valid_har
from tests.partner_fixtures import PartnerFactory

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
IDS = ["ann", "bob", "cat", "dan"]


def view(server: BackgroundServer, path: str) -> Any:
    response = httpx.get(f"{server.url}/_cohortctl/{path}")
    response.raise_for_status()
    return response.json()


def members(server: BackgroundServer) -> dict[str, list[str]]:
    lists = view(server, "state")["lists"]
    return {entry["name"]: view(server, f"lists/{entry['listId']}")["members"] for entry in lists}


def recorded(cli: RunCli, har: Path, *args: str) -> None:
    """Run ``cohortctl ARGS --har HAR`` with the partner key; it must succeed."""
    result = cli(*args, "--har", str(har), env=KEY_ENV)
    assert result.exit_code == 0, result.output


def record_flow(cli: RunCli, server: BackgroundServer, path: Path, *extra: str) -> None:
    ids = [arg for user in IDS for arg in ("--id", user)]
    recorded(cli, path, "mock", "flow", "--url", server.url, *ids, "--batch-size", "2", *extra)


@pytest.fixture
def original(partner_server_factory: PartnerFactory) -> BackgroundServer:
    """The receiver a recording is made on; it holds an unrelated list already, so the recorded
    list ids start at 2 (and a fresh receiver's at 1)."""
    server = partner_server_factory(api_key=PARTNER_KEY)
    auth = (PARTNER_KEY, "")
    httpx.post(f"{server.url}/lists", json=payloads.list_create("other", "o1"), auth=auth)
    return server


def test_replay_rebuilds_the_state_on_a_fresh_receiver_following_new_list_ids(
    cli: RunCli, original: BackgroundServer, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    har = tmp_path / "flow.har"
    record_flow(cli, original, har)
    fresh = partner_server_factory(api_key=PARTNER_KEY)
    result = cli("replay", str(har), "--url", fresh.url, "-o", "json", env=KEY_ENV)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["mismatched"] == 0
    assert report["list_ids"] == {"2": "1"}
    assert [r["call"] for r in report["results"]] == [
        "list-create", "list-add", "list-add", "list-remove"
    ]  # fmt: skip
    assert all(r["status"] == r["recorded_status"] == 200 for r in report["results"])
    assert report["results"][1]["url"] == f"{fresh.url}/lists/1/add"
    name = payloads.cohort_label("cohortctl mock cohort", "cohortctl_mock_1")
    assert members(fresh) == {name: members(original)[name]}
    assert members(fresh)[name] == sorted(IDS[1:])


def test_workers_reach_the_same_state(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    original = partner_server_factory(api_key=PARTNER_KEY)
    har = tmp_path / "flow.har"
    record_flow(cli, original, har, "--mode", "both")
    fresh = partner_server_factory(api_key=PARTNER_KEY)
    result = cli("replay", str(har), "--url", fresh.url, "--workers", "4", env=KEY_ENV)
    assert result.exit_code == 0, result.output
    assert "0 did not match" in result.stderr
    assert view(fresh, "state")["lists"] == view(original, "state")["lists"]


def test_credentials_come_from_the_environment_never_the_recording(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    original = partner_server_factory(api_key=PARTNER_KEY)
    har = tmp_path / "flow.har"
    record_flow(cli, original, har)
    assert PARTNER_KEY not in har.read_text()
    fresh = partner_server_factory(api_key=PARTNER_KEY)
    missing = cli("replay", str(har), "--url", fresh.url)
    assert missing.exit_code == 2 and "API key is not set" in missing.stderr
    wrong = cli("replay", str(har), "--url", fresh.url, "--expect", "2xx",
                env={"COHORTCTL_PARTNER_API_KEY": "not-the-key"})  # fmt: skip
    assert wrong.exit_code == 1 and "401" in wrong.stdout


def _hand_made(path: Path, statuses: list[int | None]) -> None:
    with HarWriter(path) as writer:
        for number, status in enumerate(statuses):
            body = payloads.list_create(f"cohort {number}", f"c{number}")
            writer(
                Exchange(
                    method="POST",
                    url="https://partner.example/lists",
                    request_headers=[("Content-Type", "application/json")],
                    request_body=json.dumps(body).encode(),
                    started=0.0,
                    status=status,
                    reason="",
                    response_body=b'{"listId": "9"}',
                )
            )


def test_expect_recorded_compares_statuses_and_2xx_accepts_success(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    har = tmp_path / "hand.har"
    _hand_made(har, [200, 503])
    receiver = partner_server_factory()
    junit = tmp_path / "replay.xml"
    recorded = cli("replay", str(har), "--url", receiver.url, "--auth", "none",
                   "--junit", str(junit))  # fmt: skip
    assert recorded.exit_code == 1, recorded.output
    assert "MISMATCH" in recorded.stdout and "1 of 2 replayed request(s)" in recorded.stderr
    assert "#2 list-create: recorded 503" in recorded.stderr and "now 200" in recorded.stderr
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    success = cli("replay", str(har), "--url", receiver.url, "--auth", "none", "--expect", "2xx")
    assert success.exit_code == 0, success.output


def test_a_recording_with_no_requests_is_an_input_error(cli: RunCli, tmp_path: Path) -> None:
    har = tmp_path / "empty.har"
    _hand_made(har, [])
    result = cli("replay", str(har), "--url", "http://127.0.0.1:9", "--auth", "none")
    assert result.exit_code == 2 and "holds no requests" in result.stderr


def _sync(cli: RunCli, url: str, snapshot: Path, tmp_path: Path, har: Path, *extra: str) -> None:
    recorded(cli, har, "sync", str(snapshot), "--url", url, "--cohort-name", "Power Users",
             "--cohort-id", "p1", "--batch-size", "50", "--state", str(tmp_path / "s.db"),
             *extra)  # fmt: skip


def test_a_recorded_sync_replayed_on_an_empty_receiver_leaves_what_the_original_left(
    cli: RunCli, original: BackgroundServer, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    snapshot = tmp_path / "members.txt"
    snapshot.write_text("".join(f"user-{n}\n" for n in range(230)))
    first, second = tmp_path / "first.har", tmp_path / "second.har"
    _sync(cli, original.url, snapshot, tmp_path, first)
    snapshot.write_text("".join(f"user-{n}\n" for n in range(30, 260)))  # 30 left, 30 entered
    _sync(cli, original.url, snapshot, tmp_path, second)
    recorded = assert_valid_har(first)["log"]["entries"]
    assert [e["_call"] for e in recorded] == ["list-create"] + ["list-add"] * 5
    assert PARTNER_KEY not in first.read_text() + second.read_text()
    fresh = partner_server_factory(api_key=PARTNER_KEY)
    result = cli("replay", str(first), str(second), "--url", fresh.url, env=KEY_ENV)
    assert result.exit_code == 0, result.output
    name = payloads.cohort_label("Power Users", "p1")
    assert members(fresh)[name] == members(original)[name]
    assert len(members(fresh)[name]) == 230


def test_new_list_ids_go_into_paths_and_list_naming_body_values() -> None:
    from cohortctl.partner.replay import RecordedRequest, substitute

    body = {"segmentListId": "2", "id": 2, "userIds": ["2", "u"], "flag": True}
    request = RecordedRequest(
        index=0, method="POST", url="https://p.example/api/lists/2/add?list=2",
        relative="/api/lists/2/add?list=2", headers=(), body=json.dumps(body).encode(),
        call=payloads.LIST_ADD, recorded_status=200, recorded_body="", auth=AuthMode.none,
    )  # fmt: skip
    url, sent = substitute(request, {"2": "17"}, "http://127.0.0.1:9/base")
    assert url == "http://127.0.0.1:9/base/api/lists/17/add?list=2"
    assert json.loads(sent) == {
        "segmentListId": "17",
        "id": 17,
        "userIds": ["2", "u"],
        "flag": True,
    }  # fmt: skip  (user ids are never touched)


def _recorded(index: int, path: str, body: dict[str, Any] | None) -> RecordedRequest:
    return RecordedRequest(
        index=index, method="POST", url=f"http://r.test{path}", relative=path, headers=(),
        body=b"" if body is None else json.dumps(body).encode(), call=None,
        recorded_status=200, recorded_body="", auth=AuthMode.none,
    )  # fmt: skip


def test_workers_keep_the_order_of_requests_that_touch_the_same_user() -> None:
    """Within a wave (between list-creates), a request waits for every earlier one sharing a
    value with it; list ids, ``context`` and ``type`` do not count; no body waits for all."""
    context = {"context": {"integration": {"name": "Amplitude Cohort Sync"}}}
    wave = [
        _recorded(1, "/lists/7/add", {"userIds": ["ann", "bob"], "listId": "7", **context}),
        _recorded(2, "/lists/7/add", {"userIds": ["cat", "dan"], "listId": "7", **context}),
        _recorded(3, "/lists/7/remove", {"userIds": ["ann"], **context}),
        _recorded(4, "/identify", {"type": "identify", "userId": "cat", **context}),
        _recorded(5, "/identify", {"type": "identify", "userId": "eve", **context}),
        _recorded(6, "/lists/7", None),
        _recorded(7, "/identify", {"type": "identify", "userId": "fay"}),
    ]
    waits: dict[int, set[int]] = {}
    index_of: dict[int, int] = {}

    class Pool:  # runs each request at once, noting what it was made to wait for
        def submit(self, fn: Any, request: RecordedRequest, before: list[Future[Any]]) -> Any:
            waits[request.index] = {index_of[id(f)] for f in before}
            future: Future[Any] = Future()
            future.set_result(fn(request, before))
            index_of[id(future)] = request.index
            return future

    with httpx.Client() as client:
        replayer = Replayer(client, Destination("http://r.test", auth=AuthMode.none))
        replayer.send = lambda request: request.index  # type: ignore[method-assign,assignment,return-value]
        sent = replayer._send_wave(Pool(), wave)  # type: ignore[arg-type]
    assert sent == [1, 2, 3, 4, 5, 6, 7]  # type: ignore[comparison-overlap]
    assert waits == {1: set(), 2: set(), 3: {1}, 4: {2}, 5: set(), 6: {1, 2, 3, 4, 5}, 7: {6}}

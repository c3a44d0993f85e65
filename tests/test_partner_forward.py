"""``serve partner --forward``: a validating, recording proxy in front of a real endpoint."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from cohortctl.partner import payloads
from cohortctl.servers.partner.forward import ForwardSettings, create_forward_app, judge
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.har_schema import assert_valid_har
from tests.partner_fixtures import PartnerFactory

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}


def start_proxy(upstream: str, record: Path | None = None) -> BackgroundServer:
    settings = ForwardSettings(upstream, record=str(record) if record else None, timeout=5)
    return BackgroundServer(lambda: create_forward_app(settings)).start()


def get(server: BackgroundServer, path: str) -> Any:
    response = httpx.get(f"{server.url}{path}")
    response.raise_for_status()
    return response.json()


def test_judge_names_what_the_receiver_would_reject() -> None:
    good = json.dumps(payloads.list_members(["a", "b"])).encode()
    verdict = judge("POST", "/lists/7/add", "application/json", good)
    assert (verdict.call, verdict.problem, verdict.users, verdict.list_id) == (
        "list-add", None, 2, "7"
    )  # fmt: skip
    bad = judge("POST", "/lists/7/add", "application/json", b'{"userIds": []}')
    assert bad.problem is not None and bad.problem.startswith("invalid request: ")
    assert "text/plain" in str(judge("POST", "/identify", "text/plain", b"{}").problem)
    assert "not a call" in str(judge("GET", "/lists", "", b"").problem)
    assert "NaN" in str(judge("POST", "/batch", "application/json", b"NaN").problem)


def test_a_sync_through_the_proxy_ends_exact_behind_it_every_request_recorded_and_judged(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    receiver = partner_server_factory(api_key=PARTNER_KEY)
    har = tmp_path / "proxy.har"
    proxy = start_proxy(receiver.url, har)
    snapshot = tmp_path / "members.txt"
    snapshot.write_text("".join(f"user-{n}\n" for n in range(120)))
    try:
        result = cli("sync", str(snapshot), "--url", proxy.url, "--cohort-name", "Power Users",
                     "--cohort-id", "p1", "--batch-size", "25", "--state",
                     str(tmp_path / "s.db"), env=KEY_ENV)  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = get(proxy, "/_cohortctl/journal?limit=100")["requests"]
        inspect = get(proxy, "/_cohortctl/inspect?since=0")
    finally:
        proxy.stop()
    members = get(receiver, "/_cohortctl/lists/1")["members"]
    assert members == sorted(f"user-{n}" for n in range(120))
    assert [r["call"] for r in rows] == ["list-create"] + ["list-add"] * 5
    assert all(r["ok"] and r["problem"] is None and r["status"] == 200 for r in rows)
    assert json.loads(rows[0]["response_body"]) == {"listId": "1", "response": {"listId": "1"}}
    assert inspect["lists"] == [
        {"listId": "1", "name": "[Amplitude] Power Users: p1", "added": 120, "removed": 0}
    ]
    entries = assert_valid_har(har)["log"]["entries"]
    assert len(entries) == 6 and all(e["_verdict"] == "valid" for e in entries)
    assert entries[1]["request"]["url"] == f"{receiver.url}/lists/1/add"
    assert PARTNER_KEY not in har.read_text()
    auth = {h["name"]: h["value"] for h in entries[0]["request"]["headers"]}["Authorization"]
    assert auth == "Basic ***redacted***"


def test_a_bad_request_is_passed_on_unchanged_and_its_verdict_journaled(
    partner_server_factory: PartnerFactory,
) -> None:
    receiver = partner_server_factory()
    with start_proxy(receiver.url) as proxy:
        body = b'{"userIds": ["a"], "context": {}}'
        direct = httpx.post(f"{receiver.url}/lists/1/add", content=body,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        proxied = httpx.post(f"{proxy.url}/lists/1/add", content=body,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        row = get(proxy, "/_cohortctl/journal")["requests"][-1]
    assert proxied.status_code == direct.status_code == 400
    assert proxied.content == direct.content
    assert row["problem"] == "invalid request: context.integration must be an object"
    assert row["ok"] is False and row["status"] == 400


@pytest.fixture
def odd_upstream() -> Iterator[BackgroundServer]:
    """An endpoint answering with a gzip body, a custom header, a redirect and a 429."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/moved"):
            return web.Response(status=302, headers={"Location": "https://elsewhere.example/"})
        if request.path.endswith("/busy"):
            return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")
        seen = {"path": request.path_qs, "auth": request.headers.get("Authorization")}
        data = gzip.compress(json.dumps(seen).encode())
        headers = {"Content-Encoding": "gzip", "X-Partner": "yes", "Content-Type": "text/x"}
        return web.Response(body=data, headers=headers)

    def app() -> web.Application:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handler)
        return application

    with BackgroundServer(app) as server:
        yield server


def test_answers_come_back_unchanged_redirects_not_followed(
    odd_upstream: BackgroundServer,
) -> None:
    with start_proxy(odd_upstream.url + "/base") as proxy:
        answer = httpx.post(f"{proxy.url}/lists?x=1", content=b"{}",
                            headers={"Authorization": "Bearer tok-12345"})  # fmt: skip
        moved = httpx.post(f"{proxy.url}/moved", content=b"")
        busy = httpx.post(f"{proxy.url}/busy", content=b"")
    assert answer.headers["X-Partner"] == "yes" and answer.headers["Content-Encoding"] == "gzip"
    assert answer.json() == {"path": "/base/lists?x=1", "auth": "Bearer tok-12345"}
    assert moved.status_code == 302
    assert moved.headers["Location"] == "https://elsewhere.example/"
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "7"
    assert busy.text == "slow down"


def test_no_answer_from_the_endpoint_is_a_502(tmp_path: Path) -> None:
    har = tmp_path / "down.har"
    proxy = start_proxy("http://127.0.0.1:9", har)
    try:
        answer = httpx.post(f"{proxy.url}/identify", json={})
        row = get(proxy, "/_cohortctl/journal")["requests"][-1]
    finally:
        proxy.stop()
    assert answer.status_code == 502 and answer.json()["error"] == "bad gateway"
    assert row["status"] is None and row["error"]
    entries = assert_valid_har(har)["log"]["entries"]
    assert entries[0]["response"]["status"] == 0 and entries[0]["_error"]


def test_forward_options_are_checked_before_serving(cli: RunCli, tmp_path: Path) -> None:
    mixed = cli("serve", "partner", "--forward", "http://127.0.0.1:9", "--rate-limit", "5/s")
    assert mixed.exit_code == 2 and "--forward" in mixed.stderr
    lonely = cli("serve", "partner", "--record", str(tmp_path / "x.har"))
    assert lonely.exit_code == 2 and "--record needs --forward" in lonely.stderr
    insecure = cli("serve", "partner", "--forward", "http://partner.example")
    assert insecure.exit_code == 2 and "plain http" in insecure.stderr
    nowhere = cli("serve", "partner", "--forward", "https://partner.example",
                  "--record", str(tmp_path / "missing" / "x.har"))  # fmt: skip
    assert nowhere.exit_code == 2 and "--record" in nowhere.stderr


def test_custom_header_values_are_hidden_as_har_hides_them(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    receiver = partner_server_factory(api_key=PARTNER_KEY)
    har, mine = tmp_path / "proxy.har", tmp_path / "mine.har"
    proxy = start_proxy(receiver.url, har)
    custom = "plain-looking-9911"
    try:
        result = cli("mock", "flow", "--url", proxy.url, "-H", f"X-Env:{custom}",
                     "--har", str(mine), env=KEY_ENV)  # fmt: skip
        assert result.exit_code == 0, result.output
        journal = httpx.get(f"{proxy.url}/_cohortctl/journal?limit=100").text
        inspect = httpx.get(f"{proxy.url}/_cohortctl/inspect?since=0").text
    finally:
        proxy.stop()
    for text in (har.read_text(), mine.read_text(), journal, inspect):
        assert custom not in text and PARTNER_KEY not in text
    entries = assert_valid_har(har)["log"]["entries"]
    headers = {h["name"]: h["value"] for h in entries[0]["request"]["headers"]}
    assert headers["X-Env"] == "***redacted***"
    assert headers["Content-Type"] == "application/json"

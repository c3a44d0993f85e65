"""The conformance suite against real receivers over loopback: compliant, broken, throttling."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from aiohttp import web

from cohortctl.errors import InputError
from cohortctl.http.outcomes import Outcome
from cohortctl.partner import payloads
from cohortctl.partner.conformance import answers, checks
from cohortctl.partner.conformance.checks import run_check
from cohortctl.partner.conformance.run import (
    MAX_BURST,
    CheckOptions,
    CheckRun,
    junit_report,
    markdown_report,
)
from cohortctl.partner.conformance.traffic import Sent
from cohortctl.partner.destination import AuthMode, Destination
from cohortctl.partner.mock import FlowMode
from cohortctl.partner.templates import Template
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import assert_no_secrets
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory
from tests.partners.fixtures import Receiver

USERS = ("u1", "u2", "u3")


def check(server: BackgroundServer, **options: Any) -> CheckRun:
    destination = Destination(server.url, api_key=PARTNER_KEY)
    options.setdefault("ids", USERS)
    with httpx.Client() as client:
        return run_check(client, destination, CheckOptions(**options), sleep=lambda s: None)


def by_name(run: CheckRun) -> dict[str, Any]:
    return {case.name: case for case in run.cases}


def state(server: BackgroundServer, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.url}/_cohortctl/{path}", params=params)
    response.raise_for_status()
    return response.json()


def test_compliant_receiver_passes_every_case_and_is_left_clean(
    partner_server_factory: PartnerFactory,
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, known_users=frozenset(USERS))
    run = check(server, mode=FlowMode.both, unknown_user="ghost", burst=10, max_latency_ms=5000)
    failed = [(c.name, c.actual, c.detail) for c in run.cases if c.status != "pass"]
    assert failed == []
    assert run.passed and run.list_id is not None
    names = list(by_name(run))
    assert names[:2] == ["list-create accepted", "list-add accepted"]
    assert "list-add rejects an unknown list" in names
    assert "identify rejects a body without userId" in names
    assert names[-2:] == ["latency budget", "throttling"]
    # The list is named for the run and empty again; no trait is left true.
    listed = state(server, f"lists/{run.list_id}")
    assert listed["name"] == f"[Amplitude] cohortctl-check: {run.run_id}"
    assert listed["members"] == []
    traits = state(server, "traits", key=run.label)
    assert traits["true"] == [] and sorted(traits["false"]) == sorted(USERS)
    # Each case records its requests; the URLs never carry credentials.
    create = by_name(run)["list-create accepted"]
    assert create.requests[0]["status"] == 200 and create.requests[0]["list_id"] == run.list_id
    assert by_name(run)["throttling"].actual == "10 sent: 10 × 200"
    assert_no_secrets(str(run.to_dict()))


def test_generated_users_are_recognisable(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY)
    run = check(server, ids=(), batch_size=25, run_id="abc123")
    assert run.passed, [(c.name, c.actual, c.detail) for c in run.cases]
    add = by_name(run)["list-add accepted"]
    journal = state(server, "journal", limit=100)["requests"]
    assert run.users == 25 and add.requests[0]["status"] == 200
    assert any(entry["users"] == 25 for entry in journal)
    options = CheckOptions(ids=(), batch_size=2, run_id="abc123")
    assert options.users == ("cohortctl-check-abc123-1", "cohortctl-check-abc123-2")
    assert options.label == payloads.cohort_label("cohortctl-check", "abc123")


def test_broken_receiver_fails_the_right_cases_and_says_why(
    partner_server_factory: PartnerFactory,
) -> None:
    server = partner_server_factory(
        api_key=PARTNER_KEY, accept_any_key=True, accept_bad_bodies=True, never_404=True
    )
    run = check(server, mode=FlowMode.both, unknown_user="ghost")
    cases = by_name(run)
    failed = {name for name, case in cases.items() if case.status == "fail"}
    assert failed == {
        f"{call} rejects {what}"
        for call in ("list-add", "identify")
        for what in (
            "a wrong api key",
            "missing credentials",
            "malformed JSON",
            "an unknown user",
            "a body without userIds" if call == "list-add" else "a body without userId",
        )
    } | {"list-add rejects an unknown list"}
    wrong = cases["list-add rejects a wrong api key"]
    assert wrong.expected.startswith("401") and wrong.actual.startswith("200")
    assert "accepted a request with a wrong api key" in wrong.detail
    assert "not JSON" in cases["identify rejects malformed JSON"].detail
    assert "does not exist" in cases["list-add rejects an unknown list"].detail
    # The unknown user the broken endpoint accepted is removed again, and its trait un-set.
    assert "ghost" not in state(server, f"lists/{run.list_id}")["members"]
    assert state(server, "traits", key=run.label)["true"] == []
    assert not run.passed


def test_opt_in_cases_are_skipped_with_how_to_run_them(partner_server: BackgroundServer) -> None:
    run = check(partner_server, mode=FlowMode.property)
    skipped = {c.name: c.detail for c in run.cases if c.status == "skip"}
    assert skipped == {
        "identify rejects an unknown user": "pass --unknown-user ID to run",
        "latency budget": "pass --max-latency-ms MS to run",
        "throttling": "pass --burst N to run",
    }
    assert run.passed and run.list_id is None
    assert not any(c.group == "list" for c in run.cases)


def test_unknown_user_fails_against_a_receiver_that_knows_everyone(
    partner_server: BackgroundServer,
) -> None:
    run = check(partner_server, unknown_user="ghost")
    case = by_name(run)["list-add rejects an unknown user"]
    assert case.status == "fail" and case.expected == "404 invalid user id"
    assert "'ghost'" in case.detail
    assert state(partner_server, f"lists/{run.list_id}")["members"] == []


def test_throttling_needs_a_usable_retry_after(partner_server_factory: PartnerFactory) -> None:
    now = [0.0]  # the receiver's clock: it moves only when the check waits
    server = partner_server_factory(api_key=PARTNER_KEY, rate_limit=10, clock=lambda: now[0])
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    destination = Destination(server.url, api_key=PARTNER_KEY)
    options = CheckOptions(ids=USERS, burst=40, expect_throttle=True)
    with httpx.Client() as client:
        run = run_check(client, destination, options, sleep=sleep)
    case = by_name(run)["throttling"]
    assert case.status == "pass", (case.actual, case.detail)
    assert "× 429" in case.actual and "Retry-After: 1" in case.actual
    assert len(case.requests) == 40
    # The burst added a user; the cleanup removed it, waiting as Retry-After said.
    assert state(server, f"lists/{run.list_id}")["members"] == []
    assert all(w == 1.0 for w in waits)
    assert run.leftovers == []


def test_expect_throttle_fails_when_no_429_comes(partner_server: BackgroundServer) -> None:
    run = check(partner_server, mode=FlowMode.property, burst=5, expect_throttle=True)
    case = by_name(run)["throttling"]
    assert case.status == "fail"
    assert case.expected == "at least one 429 with a usable Retry-After"
    assert "did not throttle" in case.detail


def _outcome(status: int | None, retry_after: str | None = None) -> Any:
    return Sent(
        request=None,  # type: ignore[arg-type]
        outcome=Outcome("list-add", "POST", "http://x/lists/1/add", status, "", 1.0,
                        retry_after=retry_after, error=None if status else "timeout"),
        ids=(),
        tracked=False,
    )  # fmt: skip


def test_burst_verdicts() -> None:
    judge = checks.judge_burst
    assert judge([_outcome(200)] * 3, 3, expect_throttle=False).status == "pass"
    ok = judge([_outcome(200), _outcome(429, "2")], 2, expect_throttle=True)
    assert ok.status == "pass" and ok.actual == "2 sent: 1 × 200, 1 × 429; Retry-After: 2"
    dated = _outcome(429, "Wed, 21 Oct 2015 07:28:00 GMT")
    assert judge([dated], 1, expect_throttle=True).status == "pass"
    bare = judge([_outcome(429), _outcome(429, "soon")], 2, expect_throttle=False)
    assert bare.status == "fail" and "2 429(s) without a usable Retry-After" in bare.detail
    crashed = judge([_outcome(200), _outcome(503), _outcome(None)], 3, expect_throttle=False)
    assert crashed.status == "fail" and "2 answer(s) neither 2xx nor 429" in crashed.detail
    short = judge([_outcome(200)], 4, expect_throttle=False)
    assert "3 not sent" in short.actual


def test_usable_retry_after() -> None:
    assert answers.usable_retry_after("0") and answers.usable_retry_after(" 30 ")
    assert answers.usable_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    for bad in (None, "", "-1", "1.5", "soon"):
        assert not answers.usable_retry_after(bad)


def test_latency_budget_names_the_slowest(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=30)
    run = check(server, mode=FlowMode.property, max_latency_ms=1)
    case = by_name(run)["latency budget"]
    assert case.status == "fail"
    assert case.actual.startswith("slowest: identify")
    assert "4 of 4 over budget" in case.detail


@pytest.fixture
def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_connection_refused_fails_cases_without_raising(refused_url: str) -> None:
    destination = Destination(refused_url, api_key=PARTNER_KEY, timeout=2)
    with httpx.Client() as client:
        run = run_check(client, destination, CheckOptions(mode=FlowMode.both, ids=USERS))
    cases = by_name(run)
    assert cases["list-create accepted"].status == "fail"
    assert cases["list-create accepted"].actual == "connection refused"
    assert cases["list-add accepted"].status == "skip"
    assert cases["identify true accepted"].actual == "connection refused"
    assert not run.passed and run.cleanup == []


class TemplatedPartner:
    """A partner with its own shapes: bearer auth, {"data": {"id"}}, {"user_ids": [...]}."""

    def __init__(self) -> None:
        self.members: set[str] = set()

    def app(self) -> web.Application:
        async def create(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {PARTNER_KEY}":
                return web.json_response({"error": "unauthorized"}, status=401)
            return web.json_response({"data": {"id": "L1"}})

        async def change(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {PARTNER_KEY}":
                return web.json_response({"error": "unauthorized"}, status=401)
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "bad json"}, status=400)
            if not isinstance(body.get("user_ids"), list):
                return web.json_response({"error": "user_ids required"}, status=400)
            if request.match_info["list"] != "L1":
                return web.json_response({"error": "no such list"}, status=404)
            ids = set(body["user_ids"])
            if request.match_info["op"] == "add":
                self.members |= ids
            else:
                self.members -= ids
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/v2/audiences", create)
        app.router.add_post("/v2/audiences/{list}/{op}", change)
        return app


def test_templates_paths_and_list_id_path(
    receiver: Receiver,
) -> None:
    partner = TemplatedPartner()
    server = receiver(partner.app)
    members = Template('{"user_ids": $items, "cohort": "$amplitude_cohort_id"}')
    destination = Destination(
        server.url,
        auth=AuthMode.bearer,
        api_key=PARTNER_KEY,
        paths={
            payloads.LIST_CREATE: "/v2/audiences",
            payloads.LIST_ADD: "/v2/audiences/$listId/add",
            payloads.LIST_REMOVE: "/v2/audiences/$listId/remove",
        },
        list_id_path="data.id",
    )
    options = CheckOptions(
        ids=USERS,
        templates={
            payloads.LIST_CREATE: Template('{"title": "$amplitude_cohort_name"}'),
            payloads.LIST_ADD: members,
            payloads.LIST_REMOVE: members,
        },
    )
    with httpx.Client() as client:
        run = run_check(client, destination, options)
    assert [(c.name, c.status) for c in run.cases if c.status == "fail"] == []
    assert by_name(run)["list-add rejects a body without user_ids"].status == "pass"
    assert run.list_id == "L1" and partner.members == set()


def test_missing_field_case_skips_when_the_template_hides_the_users() -> None:
    assert checks._drop_field({"a": 1, "ids": ["u1"]}, ["u1"]) == {"a": 1}
    assert checks._drop_field({"csv": "u1,u2"}, ["u1"]) is None
    assert checks._drop_field(["u1"], ["u1"]) is None


def test_junit_and_markdown_reports(partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, accept_bad_bodies=True)
    run = check(server)
    root = ET.fromstring(junit_report(run))
    suite = root.find("testsuite")
    assert suite is not None
    testcases = suite.findall("testcase")
    failures = [t for t in testcases if t.find("failure") is not None]
    skips = [t for t in testcases if t.find("skipped") is not None]
    assert suite.get("tests") == str(len(testcases)) == str(len(run.cases))
    assert suite.get("failures") == str(len(failures)) == "2"
    assert suite.get("skipped") == str(len(skips)) == "3"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == run.run_id and props["list_id"] == run.list_id
    assert "left empty" in (props["test_data"] or "")
    summary = markdown_report(run)
    assert f"run {run.run_id}" in summary and "❌ 2 failed" in summary
    assert "accepted a body that is not JSON" in summary
    assert_no_secrets(junit_report(run), summary)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"expect_throttle": True}, "--expect-throttle needs --burst"),
        ({"burst": 0}, "--burst must be between"),
        ({"burst": MAX_BURST + 1}, "--burst must be between"),
        ({"max_latency_ms": 0}, "--max-latency-ms"),
        ({"batch_size": 0}, "--batch-size"),
        ({"ids": ("u1",), "unknown_user": "u1"}, "must not be one of the test users"),
        ({"unknown_user": " "}, "must not be empty"),
    ],
)
def test_bad_options_are_input_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        CheckOptions(**options)


def test_cases_retry_after_a_429_as_amplitude_would() -> None:
    from cohortctl.servers.partner.app import ReceiverSettings, create_app

    seen = 0

    @web.middleware
    async def every_other_throttled(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal seen
        if request.path.startswith("/_cohortctl/"):
            return await handler(request)
        seen += 1
        if seen % 2:
            return web.json_response({}, status=429, headers={"Retry-After": "0"})
        return await handler(request)

    def app() -> web.Application:
        application = create_app(ReceiverSettings(api_key=PARTNER_KEY))
        application.middlewares.append(every_other_throttled)
        return application

    waits: list[float] = []
    with BackgroundServer(app) as server, httpx.Client() as client:
        destination = Destination(server.url, api_key=PARTNER_KEY)
        run = run_check(client, destination, CheckOptions(ids=USERS), sleep=waits.append)
        members = state(server, f"lists/{run.list_id}")["members"]
    assert [c.name for c in run.cases if c.status == "fail"] == []
    add = by_name(run)["list-add accepted"]
    assert add.actual == "200 success (after 1 × 429)"
    assert [r["status"] for r in add.requests] == [429, 200]
    assert waits and set(waits) == {0.0}
    assert members == []

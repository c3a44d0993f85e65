from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from cohortctl.errors import InputError
from cohortctl.http import outcomes
from cohortctl.http.once import send_once
from cohortctl.http.outcomes import classify_transport_error
from cohortctl.partner import payloads
from cohortctl.partner.destination import AuthMode, Destination
from cohortctl.partner.mock import (
    FlowMode,
    MockSpec,
    PreparedRequest,
    abbreviate_json,
    call_steps,
    flow_steps,
    passed,
    plan,
    run,
)
from cohortctl.partner.templates import Template
from cohortctl.servers.runner import BackgroundServer
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver

NAME, COHORT = "Churn risk", "c42"


class Capture:
    """A tiny partner that records every request and answers create with a list id."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.requests.append(
                {
                    "path": request.path,
                    "headers": dict(request.headers),
                    "body": await request.json(),
                }
            )
            if request.path == "/lists":
                return web.json_response({"listId": "list-7"})
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        return app


def fixed_clock() -> Callable[[], float]:
    ticks = iter(range(1000))
    return lambda: float(next(ticks))


def test_flow_sends_exactly_what_the_builders_build(
    receiver: Receiver,
) -> None:
    recorder = Capture()
    server = receiver(recorder.app)
    ids = ("u1", "u2", "u3")
    spec = MockSpec(cohort_name=NAME, cohort_id=COHORT, ids=ids)
    destination = Destination(server.url, api_key=PARTNER_KEY)
    with httpx.Client() as client:
        results = run(client, destination, flow_steps(FlowMode.both, spec), spec)
    assert passed(results)
    assert results[0].extra["list_id"] == "list-7"
    assert "list id list-7" in results[0].meaning
    sent = [(r["path"], r["body"]) for r in recorder.requests]
    assert sent == [
        ("/lists", payloads.list_create(NAME, COHORT)),
        ("/lists/list-7/add", payloads.list_members(ids)),
        ("/lists/list-7/remove", payloads.list_members(ids[:1])),
        ("/identify", payloads.identify("u1", NAME, COHORT, member=True)),
        ("/identify", payloads.identify("u1", NAME, COHORT, member=False)),
        ("/batch", payloads.identify_batch(ids, NAME, COHORT, member=True)),
        ("/batch", payloads.identify_batch(ids[:1], NAME, COHORT, member=False)),
    ]
    for request in recorder.requests:
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["Authorization"].startswith("Basic ")


def test_batches_and_one_identify_per_user(receiver: Receiver) -> None:
    recorder = Capture()
    server = receiver(recorder.app)
    spec = MockSpec(ids=tuple(f"u{i}" for i in range(5)), batch_size=2, list_id="L")
    destination = Destination(server.url, auth=AuthMode.none)
    with httpx.Client() as client:
        adds = run(client, destination, call_steps("list-add", spec), spec)
        identifies = run(client, destination, call_steps("identify", spec), spec)
    assert [o.extra["ids"] for o in adds] == [2, 2, 1]
    assert len(identifies) == 5
    assert [r["body"]["userIds"] for r in recorder.requests[:3]] == [
        ["u0", "u1"],
        ["u2", "u3"],
        ["u4"],
    ]


def test_template_body_is_sent_as_rendered(receiver: Receiver) -> None:
    recorder = Capture()
    server = receiver(recorder.app)
    template = Template('{"user_ids": $items, "cohort": "$amplitude_cohort_name"}')
    spec = MockSpec(
        ids=("a", "b"), cohort_name="Top 10%", list_id="L", templates={"list-add": template}
    )
    destination = Destination(server.url, auth=AuthMode.bearer, api_key=PARTNER_KEY)
    with httpx.Client() as client:
        results = run(client, destination, call_steps("list-add", spec), spec)
    assert passed(results)
    assert recorder.requests[0]["body"] == {"user_ids": ["a", "b"], "cohort": "Top-10-"}
    assert recorder.requests[0]["headers"]["Authorization"] == f"Bearer {PARTNER_KEY}"


@contextlib.contextmanager
def answering(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> Iterator[tuple[httpx.Client, str]]:
    """A loopback server giving every request the same answer; a client and its URL."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        text = json.dumps(body if body is not None else {}, separators=(",", ":"))
        return web.json_response(text=text, status=status, headers=headers)

    def app() -> web.Application:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handle)
        return application

    with BackgroundServer(app) as server, httpx.Client() as client:
        yield client, server.url


def test_run_stops_after_a_failed_list_create() -> None:
    spec = MockSpec()
    with answering(401, {"error": "bad key"}) as (client, url):
        destination = Destination(url, api_key=PARTNER_KEY)
        results = run(client, destination, flow_steps(FlowMode.both, spec), spec)
    assert results[0].status == 401 and "unauthorized" in results[0].meaning
    assert all(o.extra.get("skipped") for o in results[1:])
    assert results[1].url.endswith("/lists/{listId}/add")
    assert not passed(results)


def test_run_fails_a_create_without_list_id_showing_the_body() -> None:
    spec = MockSpec()
    with answering(200, {"created": True}) as (client, url):
        destination = Destination(url, api_key=PARTNER_KEY)
        results = run(client, destination, flow_steps(FlowMode.list, spec), spec)
    assert results[0].status == 200
    assert results[0].extra["passed"] is False
    assert "no list id in the list-create answer" in results[0].meaning
    assert '{"created":true}' in results[0].meaning
    assert [o.extra.get("skipped") for o in results[1:]] == [True, True]
    assert not passed(results)


def test_expect_makes_a_matching_non_2xx_pass_and_a_2xx_fail() -> None:
    spec = MockSpec(expect=404, list_id="L")
    with answering(404) as (client, url):
        destination = Destination(url, api_key=PARTNER_KEY)
        assert passed(run(client, destination, call_steps("list-add", spec), spec))
    with answering(200) as (client, url):
        destination = Destination(url, api_key=PARTNER_KEY)
        results = run(client, destination, call_steps("list-add", spec), spec)
    assert not passed(results)
    assert "(expected 404)" in results[0].meaning


def test_send_describes_429_with_retry_after_and_latency() -> None:
    with answering(429, {"error": "slow down"}, {"Retry-After": "7"}) as (client, url):
        destination = Destination(url, api_key=PARTNER_KEY)
        request = plan(destination, call_steps("identify-batch", MockSpec()), MockSpec())[0]
        outcome, _ = send_once(client, destination, request, clock=fixed_clock())
    assert outcome.status == 429
    assert outcome.retry_after == "7"
    assert outcome.meaning == "throttled: rate limited, Retry-After: 7"
    assert outcome.latency_ms == 1000.0
    assert outcome.to_dict()["ok"] is False


def test_send_scrubs_secrets_echoed_by_the_endpoint() -> None:
    destination = Destination("http://127.0.0.1:1", api_key=PARTNER_KEY)

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, text=f"bad key {PARTNER_KEY} / {request.headers['authorization']}"
        )

    request = plan(destination, call_steps("identify", MockSpec()), MockSpec())[0]
    with httpx.Client(transport=httpx.MockTransport(echo)) as client:
        outcome, _ = send_once(client, destination, request)
    assert PARTNER_KEY not in outcome.body
    assert request.headers["Authorization"].split()[1] not in outcome.body


def raising(exc: Exception) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), outcomes.REFUSED),
        (httpx.ReadTimeout("timed out"), outcomes.TIMEOUT),
        (httpx.ConnectTimeout("timed out"), outcomes.TIMEOUT),
        (httpx.RemoteProtocolError("Server disconnected without a response"), outcomes.RESET),
        (httpx.ReadError("[Errno 104] Connection reset by peer"), outcomes.RESET),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] verify failed"), outcomes.TLS),
        (httpx.ConnectError("[Errno -2] Name or service not known"), outcomes.NETWORK),
    ],
)
def test_transport_errors_are_rows_not_exceptions(exc: Exception, kind: str) -> None:
    destination = Destination("http://127.0.0.1:1", auth=AuthMode.none)
    request = plan(destination, call_steps("identify", MockSpec()), MockSpec())[0]
    with raising(exc) as client:
        outcome, _ = send_once(client, destination, request)
    assert outcome.status is None
    assert outcome.error == kind
    assert outcome.meaning.startswith(kind)
    assert outcome.extra["passed"] is False


def test_tls_detected_from_the_cause_chain() -> None:
    exc = httpx.ConnectError("handshake failed")
    exc.__cause__ = ssl.SSLError("wrong version number")
    assert classify_transport_error(exc) == outcomes.TLS


def test_plan_needs_a_list_id_for_list_calls_and_a_flow_uses_a_given_one() -> None:
    destination = Destination("http://127.0.0.1:1")
    with pytest.raises(InputError, match="list-add needs a list id"):
        plan(destination, call_steps("list-add", MockSpec()), MockSpec())
    spec = MockSpec(list_id="L")
    given = plan(destination, flow_steps(FlowMode.list, spec), spec)
    assert [r.call for r in given] == ["list-add", "list-remove"]
    assert given[0].url.endswith("/lists/L/add")
    remove_path = Destination("http://127.0.0.1:1", paths={"list-remove": "/remove"})
    assert plan(remove_path, call_steps("list-remove", MockSpec()), MockSpec())[0].url.endswith(
        "/remove"
    )
    template = Template('{"list": "$listId", "ids": $items}')
    spec = MockSpec(templates={"identify-batch": template})
    with pytest.raises(InputError, match="identify-batch needs a list id"):
        plan(destination, call_steps("identify-batch", spec), spec)


def test_plan_checks_templates_before_anything_is_sent() -> None:
    spec = MockSpec(templates={"list-create": Template('{"n": $nme}', "create.json")})
    with pytest.raises(InputError, match=r"create.json: unknown template variable\(s\) \$nme"):
        plan(Destination("http://127.0.0.1:1"), flow_steps(FlowMode.list, spec), spec)


def test_shown_request_redacts_and_abbreviates() -> None:
    destination = Destination("http://127.0.0.1:1", auth=AuthMode.header, api_key=PARTNER_KEY)
    ids = tuple(f"u{i}" for i in range(50))
    spec = MockSpec(ids=ids, list_id="L")
    request: PreparedRequest = plan(destination, call_steps("list-add", spec), spec)[0]
    shown = request.shown(destination, abbreviate=3)
    assert shown["headers"]["api_key"] == "***redacted***"
    assert shown["body"]["userIds"] == ["u0", "u1", "u2", "… 47 more (of 50)"]
    assert PARTNER_KEY not in json.dumps(shown)
    assert request.shown(destination)["body"]["userIds"] == list(ids)
    assert json.loads(request.content) == payloads.list_members(ids)


def test_abbreviate_json_nested() -> None:
    data = {"batch": [{"ids": [1, 2, 3]}] * 4}
    assert abbreviate_json(data, 2) == {
        "batch": [{"ids": [1, 2, "… 1 more (of 3)"]}] * 2 + ["… 2 more (of 4)"]
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"ids": ()}, "no user ids"),
        ({"cohort_id": " "}, "must not be empty"),
        ({"expect": 99}, "--expect"),
    ],
)
def test_bad_spec_is_input_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        MockSpec(**kwargs)

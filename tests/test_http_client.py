"""The httpx side of the layer against the same raw-socket framing cases as the fast path."""

from __future__ import annotations

import time

import httpx
import pytest

from cohortctl.http import MAX_HELD, Exchange, outcomes
from cohortctl.http.client import held, make_client
from tests.http_servers import Piece, RecordingProxy, ScriptServer, answer
from tests.test_http_fast import EMPTY, FRAMING


def post_twice(url: str, **options: object) -> list[httpx.Response]:
    with make_client(timeout=5, proxy="", **options) as client:  # type: ignore[arg-type]
        return [
            held(client.send(client.build_request("POST", url, content=b"{}"), stream=True))
            for _ in range(2)
        ]


@pytest.mark.parametrize("case", sorted(FRAMING))
def test_every_framing_gives_the_whole_body(case: str) -> None:
    with ScriptServer(lambda n: FRAMING[case]) as server:
        answers = post_twice(server.url + "/x")
    assert [(a.status_code, a.content) for a in answers] == [(200, b"hello")] * 2


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_no_content_answers_come_back_at_once(case: str) -> None:
    with ScriptServer(lambda n: EMPTY[case]) as server:
        answers = post_twice(server.url + "/x")
    assert [(a.status_code, a.content) for a in answers] == [(int(case[:3]), b"")] * 2
    assert server.connections == 1


def test_the_timeout_bounds_the_whole_request_against_a_trickle() -> None:
    trickle: list[Piece] = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"]
    trickle += [b"x", 0.1] * 100
    with ScriptServer(lambda n: trickle) as server, make_client(timeout=0.5, proxy="") as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            held(client.send(client.build_request("GET", server.url), stream=True))
        assert time.monotonic() - started < 8


def test_a_trickled_head_is_cut_too() -> None:
    trickle: list[Piece] = [b"HTTP/1.1 200 OK\r\n"] + [b"X-Slow: y\r\n", 0.1] * 100
    with (
        ScriptServer(lambda n: trickle) as server,
        make_client(timeout=0.5, proxy="") as client,
        pytest.raises(httpx.TimeoutException),
    ):
        client.get(server.url)


def test_held_keeps_at_most_the_limit_and_marks_the_cut() -> None:
    size = MAX_HELD * 4
    pieces: list[Piece] = [f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()]
    pieces += [b"a" * 65536] * (size // 65536)
    with ScriptServer(lambda n: pieces) as server, make_client(timeout=5, proxy="") as client:
        got = held(client.send(client.build_request("GET", server.url), stream=True))
    assert len(got.content) == MAX_HELD and got.extensions["cut"]


def test_observers_see_each_exchange_redacted() -> None:
    seen: list[Exchange] = []
    echo = answer(403, b"no: Bearer tok-secret-77", "Set-Cookie: session=abc123456\r\n")
    with (
        ScriptServer(lambda n: [echo]) as server,
        make_client(timeout=5, proxy="", observers=[seen.append]) as client,
    ):
        client.post(server.url + "/p", headers={"Authorization": "Bearer tok-secret-77"})
    [exchange] = seen
    assert exchange.status == 403 and exchange.method == "POST"
    assert dict(exchange.request_headers)["Authorization"] == "Bearer ***redacted***"
    assert b"tok-secret-77" not in exchange.response_body
    assert dict(exchange.response_headers)["Set-Cookie"] == "***redacted***"
    assert exchange.response_size == len(b"no: Bearer tok-secret-77")


def test_a_refused_connect_names_the_proxy() -> None:
    with (
        RecordingProxy(refuse_connect=403) as proxy,
        make_client(proxy=proxy.url) as client,
        pytest.raises(httpx.ProxyError) as caught,
    ):
        client.get("https://partner.test/")
    assert f"proxy {proxy.url}" in str(caught.value)
    assert outcomes.classify_transport_error(caught.value) == outcomes.PROXY


def test_observers_see_an_encoded_body_as_the_caller_reads_it() -> None:
    import gzip

    seen: list[Exchange] = []
    packed = gzip.compress(b'{"ok": true}')
    with (
        ScriptServer(lambda n: [answer(200, packed, "Content-Encoding: gzip\r\n")]) as server,
        make_client(timeout=5, proxy="", observers=[seen.append]) as client,
    ):
        assert client.get(server.url).json() == {"ok": True}
    [exchange] = seen
    assert exchange.response_body == b'{"ok": true}' and exchange.response_size == len(packed)


def test_a_webhook_client_is_the_layers_client_and_hides_custom_header_values() -> None:
    from cohortctl.partner.webhooks.messages import make_webhook_client
    from cohortctl.partner.webhooks.payload import WebhookDestination

    seen: list[Exchange] = []
    destination = WebhookDestination(
        url="http://127.0.0.1:1/webhook", headers=(("X-Shared", "shh-webhook-secret"),)
    )
    with ScriptServer(lambda n: [answer(200, b"got shh-webhook-secret")]) as server:
        from cohortctl import http

        http.add_observer(seen.append)
        try:
            with make_webhook_client(destination) as client:
                client.post(server.url, headers={"X-Shared": "shh-webhook-secret"}, content=b"{}")
        finally:
            http.remove_observer(seen.append)
    [exchange] = seen
    assert b"shh-webhook-secret" not in exchange.response_body
    assert dict(exchange.request_headers)["X-Shared"] == "***redacted***"

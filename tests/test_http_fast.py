"""The sync hot-path transport against raw-socket servers: every framing case, TLS, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trustme

from cohortctl.http import MAX_HELD, Exchange, outcomes
from cohortctl.http.fast import Answer, FastTransport
from cohortctl.http.settings import Overrides
from tests.http_servers import CLOSE, Piece, ScriptServer, answer

FRAMING: dict[str, list[Piece]] = {
    "content-length": [answer(200, b"hello")],
    "content-length split": [
        b"HTTP/1.1 200 OK\r\nContent-Le",
        0.02,
        b"ngth: 5\r\n\r\nhe",
        0.02,
        b"llo",
    ],
    "chunked across reads with trailers": [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhe",
        0.02,
        b"l\r\n2\r\nlo\r\n0\r\nX-Checksum: abc\r\n",
        0.02,
        b"\r\n",
    ],
    "close-delimited HTTP/1.0": [b"HTTP/1.0 200 OK\r\n\r\nhel", 0.02, b"lo", CLOSE],
    "close-delimited Connection: close": [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello",
        CLOSE,
    ],
    "100 continue first": [b"HTTP/1.1 100 Continue\r\n\r\n", answer(200, b"hello")],
    "103 early hints first": [
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
        0.02,
        answer(200, b"hello"),
    ],
}
EMPTY: dict[str, list[Piece]] = {
    "204 without length": [b"HTTP/1.1 204 No Content\r\n\r\n"],
    "204 with length 0": [b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"],
    "304 without length": [b"HTTP/1.1 304 Not Modified\r\n\r\n"],
    "304 with a length": [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n"],
}


def send_all(transport: FastTransport, urls: Sequence[str], *, pause: float = 0.0) -> list[Answer]:
    async def run() -> list[Answer]:
        answers = []
        try:
            for url in urls:
                answers.append(await transport.send("POST", url, b'{"a":1}'))
                if pause:
                    await asyncio.sleep(pause)
        finally:
            await transport.close()
        return answers

    return asyncio.run(run())


def fast(timeout: float = 5.0, overrides: Overrides | None = None, **options: Any) -> FastTransport:
    overrides = overrides or Overrides(proxy="")
    return FastTransport(workers=1, headers={}, timeout=timeout, overrides=overrides, **options)


@pytest.mark.parametrize("case", sorted(FRAMING))
def test_every_framing_gives_the_whole_body_twice_in_a_row(case: str) -> None:
    with ScriptServer(lambda n: FRAMING[case]) as server:
        answers = send_all(fast(), [server.url + "/x", server.url + "/x"])
    assert [(a.status, a.body) for a in answers] == [(200, b"hello")] * 2
    closes = "close" in case
    assert server.connections == (2 if closes else 1)


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_no_content_answers_are_successes_without_waiting_for_a_body(case: str) -> None:
    with ScriptServer(lambda n: EMPTY[case]) as server:
        answers = send_all(fast(timeout=30), [server.url + "/x"] * 3)
    assert [(a.status, a.body, a.error) for a in answers] == [(int(case[:3]), b"", None)] * 3
    assert server.connections == 1  # the connection was kept: nothing left unread on it


def test_a_server_closing_an_idle_connection_is_replaced() -> None:
    with ScriptServer(lambda n: [answer(200, b"ok"), CLOSE]) as server:
        answers = send_all(fast(), [server.url + "/x"] * 3, pause=0.05)
    assert [a.status for a in answers] == [200] * 3
    assert server.connections == 3


def test_a_malformed_answer_is_named_instead_of_hanging() -> None:
    with ScriptServer(lambda n: [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"]) as server:
        [got] = send_all(fast(), [server.url + "/x"])
    assert got.status is None and got.error == outcomes.MALFORMED


def test_a_dropped_connection_is_a_reset() -> None:
    with ScriptServer(lambda n: [b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", CLOSE]) as s:
        [got] = send_all(fast(), [s.url + "/x"])
    assert got.status is None and got.error == outcomes.RESET


def test_a_trickling_server_is_cut_at_the_deadline() -> None:
    trickle: list[Piece] = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"]
    trickle += [b"x", 0.1] * 100
    with ScriptServer(lambda n: trickle) as server:
        started = time.monotonic()
        [got] = send_all(fast(timeout=0.5), [server.url + "/x"])
        elapsed = time.monotonic() - started
    assert got.status is None and got.error == outcomes.TIMEOUT
    assert elapsed < 8  # far less than the 10 s the whole answer takes


def test_a_huge_body_is_held_up_to_the_limit_and_marked_cut() -> None:
    size = MAX_HELD * 8
    head = f"HTTP/1.1 500 Oops\r\nContent-Length: {size}\r\n\r\n".encode()
    block = b"e" * 65536
    pieces: list[Piece] = [head] + [block] * (size // len(block))
    with ScriptServer(lambda n: pieces) as server:
        [got] = send_all(fast(), [server.url + "/x"])
    assert got.status == 500 and got.cut and len(got.body) == MAX_HELD


def test_retry_after_rate_reset_and_location_are_read() -> None:
    headers = "Retry-After: 7\r\nX-RateLimit-Reset: 1700000000\r\nLocation: /next/\r\n"
    with ScriptServer(lambda n: [answer(429, b"slow", headers)]) as server:
        [got] = send_all(fast(), [server.url + "/x"])
    assert (got.retry_after, got.rate_reset, got.location) == ("7", "1700000000", "/next/")


def test_user_agent_is_sent_and_can_be_replaced() -> None:
    with ScriptServer(lambda n: [answer()]) as server:
        send_all(fast(), [server.url + "/x"])
        send_all(fast(user_agent="Amplitude/Webhook/1.0"), [server.url + "/x"])
    agents = [r.header("User-Agent") for r in server.received]
    assert agents[0] is not None and agents[0].startswith("cohortctl/")
    assert agents[1] == "Amplitude/Webhook/1.0"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_with_a_ca_cert_file(ca: trustme.CA, tmp_path: Path) -> None:
    server_context = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with ScriptServer(
        lambda n: FRAMING["chunked across reads with trailers"], tls=server_context
    ) as s:
        trusting = fast(overrides=Overrides(proxy="", ca_cert=str(ca_file)))
        answers = send_all(trusting, [s.url + "/x"] * 2)
        [untrusted] = send_all(fast(), [s.url + "/x"])
    assert [(a.status, a.body) for a in answers] == [(200, b"hello")] * 2
    assert s.connections == 2  # one kept for two requests, one refused at the handshake
    assert untrusted.error == outcomes.TLS


def test_observers_get_one_redacted_exchange_per_attempt() -> None:
    seen: list[Exchange] = []
    headers = {"Authorization": "Bearer sekret-token-1", "X-Env": "prod"}
    with ScriptServer(
        lambda n: [answer(401, b"bad token sekret-token-1", "X-Echo: sekret-token-1\r\n")]
    ) as s:
        transport = FastTransport(
            workers=1, headers=headers, timeout=5,
            overrides=Overrides(proxy="", observers=(seen.append,)),
        )  # fmt: skip
        [got] = send_all(transport, [s.url + "/lists/1"])
    assert got.status == 401 and got.body == b"bad token sekret-token-1"  # callers redact
    [exchange] = seen
    assert exchange.status == 401 and exchange.reason == "X"
    assert exchange.method == "POST" and exchange.url.endswith("/lists/1")
    assert b"sekret" not in exchange.response_body and "redacted" in exchange.response_body.decode()
    shown = dict(exchange.request_headers)
    assert shown["Authorization"] == "Bearer ***redacted***" and shown["X-Env"] == "prod"
    assert all("sekret" not in v for _, v in exchange.response_headers)
    assert exchange.request_body == b'{"a":1}' and exchange.connect_ms >= 0

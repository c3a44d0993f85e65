"""Batch delivery against real HTTP on 127.0.0.1: retries, Retry-After, failures, limits."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cohortctl.errors import ExitCode, InputError
from cohortctl.http import outcomes
from cohortctl.http.fast import FastTransport
from cohortctl.http.proxy import proxy_for
from cohortctl.partner import payloads
from cohortctl.retry import RetryPolicy
from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync.batches import (
    Batch,
    BatchResult,
    DeliveryInterrupted,
    DeliveryProgress,
    DeliveryReport,
    write_retry_file,
)
from cohortctl.sync.delivery import Delivery, deliver
from cohortctl.sync.encoders import (
    identify_encoder,
    ids_are_plain,
    iter_batches,
    list_members_encoder,
)
from cohortctl.sync.hooks import SyncHooks
from cohortctl.sync.state import SyncState, destination_key, plan_diff

DROP = "drop"


@dataclass
class Partner:
    """A scripted partner: answers from ``script`` in order, then 200; records what it got."""

    script: deque[tuple[int, dict[str, str]] | str] = field(default_factory=deque)
    reject_user: str | None = None  # 404 for any batch holding this user
    hold: float = 0.0  # seconds each answer waits, so requests overlap
    batch_sizes: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    auth_headers: list[str | None] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            self.auth_headers.append(request.headers.get("Authorization"))
            if self.hold:
                await asyncio.sleep(self.hold)
            if self.script:
                step = self.script.popleft()
                if step == DROP:
                    assert request.transport is not None
                    request.transport.close()
                    raise ConnectionResetError("dropped on purpose")
                status, headers = step  # type: ignore[misc]
                return web.json_response(
                    {"error": f"scripted {status}"}, status=status, headers=headers
                )
            ids = body["userIds"]
            self.batch_sizes.append(len(ids))
            if self.reject_user is not None and self.reject_user in ids:
                return web.json_response({"error": "invalid user id"}, status=404)
            return web.json_response({"ok": True})
        finally:
            self.in_flight -= 1


@pytest.fixture
def partner() -> Iterator[tuple[Partner, str]]:
    state = Partner()
    with BackgroundServer(state.app) as server:
        yield state, server.url


def users(n: int, start: int = 0) -> list[str]:
    return [f"u{i:05d}" for i in range(start, start + n)]


def add_batches(url: str, ids: Sequence[str], size: int = 1000) -> Iterator[Batch]:
    return iter_batches(
        ids,
        kind=payloads.LIST_ADD,
        url=url + payloads.call_path(payloads.LIST_ADD, "L1"),
        body=payloads.list_members,
        batch_size=size,
    )


class FakeSleep:
    """Records each wait instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def run(batches: Iterator[Batch], **options: object) -> DeliveryReport:
    options.setdefault("headers", {"Authorization": "Basic dGVzdDo="})
    return deliver(batches, **options)


def test_delivers_everything_in_batches_no_larger_than_asked(partner: tuple[Partner, str]) -> None:
    state, url = partner
    done: list[tuple[str, int | None]] = []
    progress: list[DeliveryProgress] = []
    report = run(
        add_batches(url, users(50), size=7),
        workers=3,
        max_batch_size=7,
        on_done=lambda b, r: done.append((b.key, r.status)),
        hooks=SyncHooks(on_progress=progress.append),
    )
    assert report.ok
    assert (report.batches_ok, report.users_ok, report.requests, report.retries) == (8, 50, 8, 0)
    assert sorted(state.batch_sizes) == [1, 7, 7, 7, 7, 7, 7, 7]
    assert sorted(done) == sorted((f"list-add:{i}", 200) for i in range(8))
    assert state.auth_headers == ["Basic dGVzdDo="] * 8
    assert progress[-1].users_done == 50
    summary = report.to_dict()
    assert report.latency_ms(0.5) > 0
    assert summary["latency_s"]["p50"] == round(report.latency_ms(0.5) / 1000, 3)
    assert summary["users_per_s"] > 0
    json.dumps(summary)


def test_a_batch_over_the_size_is_refused_before_sending(partner: tuple[Partner, str]) -> None:
    state, url = partner
    with pytest.raises(InputError, match="over the batch size"):
        run(add_batches(url, users(8), size=8), max_batch_size=7)
    assert state.requests == 0


def test_429_honours_retry_after_capped_by_the_policy(partner: tuple[Partner, str]) -> None:
    state, url = partner
    state.script.extend([(429, {"Retry-After": "3"}), (429, {"Retry-After": "1000"}), (429, {})])
    sleep = FakeSleep()
    retries: list[tuple[int, float, str]] = []
    report = run(
        add_batches(url, users(3)),
        hooks=SyncHooks(sleep=sleep, on_retry=lambda b, n, d, why: retries.append((n, d, why))),
    )
    assert report.ok
    assert sleep.delays == [3.0, 128.0, 4.0] == report.retry_delays
    assert retries == [(1, 3.0, "429"), (2, 128.0, "429"), (3, 4.0, "429")]
    assert report.attempt_failures == {"429": 3}
    assert report.requests == 4


def test_5xx_backs_off_exponentially(partner: tuple[Partner, str]) -> None:
    state, url = partner
    state.script.extend([(503, {}), (500, {}), (502, {})])
    sleep = FakeSleep()
    report = run(add_batches(url, users(3)), hooks=SyncHooks(sleep=sleep))
    assert report.ok and report.users_ok == 3
    assert sleep.delays == [1.0, 2.0, 4.0]
    assert report.attempt_failures == {"503": 1, "500": 1, "502": 1}


def test_dropped_connection_is_retried(partner: tuple[Partner, str]) -> None:
    state, url = partner
    state.script.append(DROP)
    sleep = FakeSleep()
    report = run(add_batches(url, users(3)), hooks=SyncHooks(sleep=sleep))
    assert report.ok
    assert report.attempt_failures == {outcomes.RESET: 1}
    assert sleep.delays == [1.0]


def test_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = FakeSleep()
    report = run(
        add_batches(f"http://127.0.0.1:{port}", users(2)),
        hooks=SyncHooks(sleep=sleep),
        policy=RetryPolicy(retries=2),
    )
    assert report.batches_failed == 1
    assert report.failed_by == {outcomes.REFUSED: 1}
    assert sleep.delays == [1.0, 2.0]
    (failure,) = report.failures
    assert failure.user_ids == users(2)
    assert failure.attempts == 3


def test_exhausted_retries_report_the_batch_and_its_users(partner: tuple[Partner, str]) -> None:
    state, url = partner
    state.script.extend([(503, {})] * 4)
    sleep = FakeSleep()
    results: list[BatchResult] = []
    report = run(
        add_batches(url, users(5)),
        hooks=SyncHooks(sleep=sleep),
        policy=RetryPolicy(retries=3),
        on_done=lambda b, r: results.append(r),
    )
    assert not report.ok
    assert sleep.delays == [1.0, 2.0, 4.0]
    assert (report.requests, report.batches_failed, report.users_failed) == (4, 1, 5)
    (failure,) = report.failures
    assert (failure.key, failure.reason, failure.attempts) == ("list-add:0", "503", 4)
    assert failure.user_ids == users(5)
    assert "scripted 503" in failure.body
    assert [r.ok for r in results] == [False]


def test_retry_file_lists_the_users_of_failed_batches(
    partner: tuple[Partner, str], tmp_path: Path
) -> None:
    state, url = partner
    state.reject_user = "u00003"
    report = run(add_batches(url, users(9), size=3))
    retry = tmp_path / "retry.txt"
    assert write_retry_file(report, retry) == 3
    assert retry.read_text().splitlines() == users(3, start=3)


def test_amplitude_schedule_is_the_default(partner: tuple[Partner, str]) -> None:
    state, url = partner
    state.script.extend([(500, {})] * 9)
    sleep = FakeSleep()
    report = run(add_batches(url, users(1)), hooks=SyncHooks(sleep=sleep))
    assert sleep.delays == [1, 2, 4, 8, 16, 32, 64, 128]
    assert report.requests == 9 and report.batches_failed == 1


@pytest.mark.parametrize("status", [400, 401, 404])
def test_other_4xx_are_final(partner: tuple[Partner, str], status: int) -> None:
    state, url = partner
    state.script.append((status, {}))
    sleep = FakeSleep()
    report = run(add_batches(url, users(4)), hooks=SyncHooks(sleep=sleep))
    assert sleep.delays == []
    assert report.requests == 1
    (failure,) = report.failures
    assert failure.reason == str(status)
    assert failure.meaning == outcomes.describe_status(status)
    assert failure.user_ids == users(4)
    assert f"scripted {status}" in failure.body


def test_concurrency_never_exceeds_workers(partner: tuple[Partner, str]) -> None:
    state, url = partner
    state.hold = 0.005
    report = run(add_batches(url, users(40), size=2), workers=3)
    assert report.batches_ok == 20
    assert 1 <= state.max_in_flight <= 3


def test_state_confirms_only_2xx_and_next_run_sends_the_rest(
    partner: tuple[Partner, str], tmp_path: Path
) -> None:
    state_srv, url = partner
    state_srv.reject_user = "u00012"
    snapshot = users(30)
    key = destination_key(url, "list", "c1")
    with SyncState.open(tmp_path / "s.sqlite", key) as state:

        def confirm(batch: Batch, result: BatchResult) -> None:
            if result.ok:
                state.confirm_added(batch.user_ids)

        report = run(add_batches(url, plan_diff(snapshot, state).entered, size=5), on_done=confirm)
        assert report.batches_failed == 1
        assert report.failures[0].reason == "404"
        assert report.failures[0].user_ids == users(5, start=10)
        assert plan_diff(snapshot, state).entered == users(5, start=10)

        state_srv.reject_user = None
        with state.confirmer() as confirmer:
            report = run(
                add_batches(url, plan_diff(snapshot, state).entered, size=5),
                on_done=lambda b, r: confirmer.added(b.user_ids) if r.ok else None,
            )
        assert report.ok and report.users_ok == 5
        assert plan_diff(snapshot, state).entered == []


def test_cancellation_leaves_in_flight_batches_unconfirmed(partner: tuple[Partner, str]) -> None:
    _, url = partner
    confirmed: list[str] = []

    async def main() -> DeliveryReport:
        tasks: list[asyncio.Future[DeliveryReport]] = []

        def on_done(batch: Batch, result: BatchResult) -> None:
            confirmed.extend(batch.user_ids)
            if len(confirmed) == 6:
                tasks[0].cancel()

        batches = add_batches(url, users(20), size=2)
        delivery = Delivery(batches, headers={}, workers=1, on_done=on_done)
        task = asyncio.ensure_future(delivery.run())
        tasks.append(task)
        with pytest.raises(asyncio.CancelledError):
            await task
        return delivery.report

    report = asyncio.run(main())
    assert report.interrupted and not report.ok
    assert confirmed == users(6)
    assert report.batches_ok == 3


def test_ctrl_c_raises_interrupted_with_the_partial_report(partner: tuple[Partner, str]) -> None:
    _, url = partner
    confirmed: list[str] = []

    def on_done(batch: Batch, result: BatchResult) -> None:
        confirmed.extend(batch.user_ids)
        if len(confirmed) == 4:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(DeliveryInterrupted) as caught:
        run(add_batches(url, users(40), size=2), workers=1, on_done=on_done)
    report = caught.value.report
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert report.interrupted
    assert report.users_ok == len(confirmed) < 40


# -- fast body encoders -----------------------------------------------------------------------

ODD_IDS = [
    ["plain-1", "plain-2"],
    ['q"uote', "x"],
    ["back\\slash", "y"],
    ['","', 'a"', '\\"', "\\"],
    ["é日本", "🙂", "\u2028"],
    ["tab\there", "nul\x00", "\x1f"],
    ["one"],
    [],
]


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("ids", ODD_IDS)
def test_list_members_encoder_matches_json_dumps_byte_for_byte(ids: list[str]) -> None:
    expected = _dumps(payloads.list_members(ids))
    assert list_members_encoder()(ids) == expected
    if ids_are_plain(ids):
        assert list_members_encoder(plain=True)(ids) == expected


@pytest.mark.parametrize("ids", ODD_IDS)
@pytest.mark.parametrize("name", ["Power Users", 'Q"uoted \\ é'])
@pytest.mark.parametrize("member", [True, False])
def test_identify_encoders_match_json_dumps_byte_for_byte(
    ids: list[str], name: str, member: bool
) -> None:
    batch = identify_encoder(name, "c1", member=member)
    expected = _dumps(payloads.identify_batch(ids, name, "c1", member=member))
    assert batch(ids) == expected
    if ids_are_plain(ids):
        assert identify_encoder(name, "c1", member=member, plain=True)(ids) == expected
    if len(ids) == 1:
        single = identify_encoder(name, "c1", member=member, batch=False)
        assert single(ids) == _dumps(payloads.identify(ids[0], name, "c1", member=member))


def test_ids_are_plain_finds_what_json_escapes() -> None:
    assert ids_are_plain([f"u{i}" for i in range(10)] + ["é", "🙂"])
    for odd in ("tab\there", 'q"uote', "back\\slash"):
        assert not ids_are_plain(["ok", odd])
    assert not ids_are_plain(["x"] * 70_000 + ["\x00"])


# -- the hot-path transport against raw sockets ------------------------------------------------


class RawServer:
    """A socket server on 127.0.0.1 answering each request with ``reply(n)`` bytes."""

    def __init__(self, reply: Callable[[int], bytes], *, close_after: bool = False) -> None:
        self.reply = reply
        self.close_after = close_after
        self.requests = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                while len(rest) < length:
                    rest += conn.recv(65536)
                buffer = rest[length:]
                self.requests += 1
                conn.sendall(self.reply(self.requests))
                if self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _send_all(transport: FastTransport, urls: Sequence[str]) -> list[Any]:
    async def run() -> list[Any]:
        try:
            return [await transport.send("POST", url, b"{}") for url in urls]
        finally:
            await transport.close()

    return asyncio.run(run())


def test_stream_transport_names_a_malformed_answer_instead_of_hanging() -> None:
    server = RawServer(lambda n: b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    try:
        transport = FastTransport(workers=1, headers={}, timeout=5)
        [answer] = _send_all(transport, [f"http://127.0.0.1:{server.port}/lists/1/add"])
    finally:
        server.close()
    assert answer.status is None and answer.error == outcomes.MALFORMED


def test_stream_transport_keeps_connections_per_host() -> None:
    one = RawServer(lambda n: OK_ANSWER)
    two = RawServer(lambda n: OK_ANSWER)
    try:
        transport = FastTransport(workers=1, headers={}, timeout=5)
        urls = [f"http://127.0.0.1:{one.port}/a", f"http://127.0.0.1:{two.port}/b"] * 3
        answers = _send_all(transport, urls)
    finally:
        one.close()
        two.close()
    assert [a.status for a in answers] == [200] * 6
    assert (one.requests, two.requests) == (3, 3)
    assert (one.connections, two.connections) == (1, 1)


def test_stream_transport_replaces_a_connection_the_server_closed_while_idle() -> None:
    server = RawServer(lambda n: OK_ANSWER, close_after=True)
    try:
        transport = FastTransport(workers=1, headers={}, timeout=5)

        async def run() -> list[Any]:
            url = f"http://127.0.0.1:{server.port}/x"
            try:
                first = await transport.send("POST", url, b"{}")
                await asyncio.sleep(0.05)  # the server's close reaches the idle connection
                return [first, await transport.send("POST", url, b"{}")]
            finally:
                await transport.close()

        answers = asyncio.run(run())
    finally:
        server.close()
    assert [a.status for a in answers] == [200, 200]
    assert server.connections == 2


# -- proxies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "https://partner.example/lists", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://partner.example/x", "http://proxy:3128"),
        ({"https_proxy": "http://proxy:3128"}, "http://partner.example/x", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://partner.example/x", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example"}, "https://partner.example/x", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example"}, "https://a.b.example/x", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.io, *"}, "https://x.example/", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ample"}, "https://example/x", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1"}, "https://127.0.0.1:8443/x", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "https://127.0.0.1:8/x", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "localhost:8"}, "https://localhost:8/", None),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "localhost:9"},
            "https://localhost:8/",
            "http://p:1",
        ),
        ({"HTTPS_PROXY": "p:1"}, "https://partner.example/x", "http://p:1"),
    ],
)
def test_proxy_for_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: str | None
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


def test_delivery_goes_through_a_proxy_when_one_is_given() -> None:
    seen: list[str] = []

    def proxy_app() -> web.Application:
        app = web.Application()

        async def forward(request: web.Request) -> web.Response:
            seen.append(str(request.url))
            return web.json_response({"ok": True})

        app.router.add_route("*", "/{tail:.*}", forward)
        return app

    with BackgroundServer(proxy_app) as proxy:
        ids = [f"u{i}" for i in range(25)]
        batches = iter_batches(
            ids,
            kind=payloads.LIST_ADD,
            url="http://partner.invalid/lists/7/add",
            body=payloads.list_members,
            batch_size=10,
        )
        report = deliver(batches, workers=2, proxy=proxy.url)
    assert report.ok and report.users_ok == 25
    assert seen == ["http://partner.invalid/lists/7/add"] * 3

from __future__ import annotations

import json
import socket
import threading

import pytest
from aiohttp import web

from cohortctl.durations import format_duration, parse_duration
from cohortctl.errors import InputError
from cohortctl.servers.runner import BackgroundServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def teapot_app() -> web.Application:
    app = web.Application()

    async def any_answer(request: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    app.router.add_get("/{tail:.*}", any_answer)
    return app


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60", 60),
        ("60s", 60),
        ("250ms", 0.25),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        (" 2S ", 2),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "1h junk", "-3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InputError, match="--every"):
        parse_duration(text, option="--every")


def test_format_duration() -> None:
    assert format_duration(0.25) == "250ms"
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m05s"
    assert format_duration(7200) == "2h00m"


def test_wait_returns_once_a_late_server_answers(cli) -> None:
    port = free_port()
    server = BackgroundServer(teapot_app, port=port)
    timer = threading.Timer(0.4, server.start)
    timer.start()
    try:
        result = cli(
            "wait",
            "--url",
            f"http://127.0.0.1:{port}/",
            "--timeout",
            "20s",
            "--interval",
            "50ms",
            "-o",
            "json",
        )
    finally:
        timer.join()
        server.stop()
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["status"] == 418
    assert data["attempts"] > 1


def test_wait_gives_up_with_exit_1(cli) -> None:
    port = free_port()
    result = cli(
        "wait", "--url", f"http://127.0.0.1:{port}", "--timeout", "300ms", "--interval", "50ms"
    )
    assert result.exit_code == 1
    assert "did not answer within 300ms" in result.stderr
    assert "connection refused" in result.stderr


def test_wait_bad_timeout_is_usage_error(cli) -> None:
    result = cli("wait", "--url", "http://127.0.0.1:1", "--timeout", "soon")
    assert result.exit_code == 2
    assert "--timeout" in result.stderr

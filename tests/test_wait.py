from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from cohortctl.cli import wait as wait_command
from cohortctl.durations import format_duration, parse_duration
from cohortctl.errors import InputError
from tests.http_servers import ScriptServer, answer


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


@dataclass
class VirtualTime:
    """The clock and pauses of ``wait``: each pause moves the clock on at once and is listed;
    ``during[n]`` runs in the n-th pause (1-based)."""

    now: float = 0.0
    pauses: list[float] = field(default_factory=list)
    during: dict[int, Callable[[], object]] = field(default_factory=dict)

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if (then := self.during.pop(len(self.pauses), None)) is not None:
            then()


@pytest.fixture
def virtual(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    """``wait`` in virtual time (its ``sleep`` and ``clock`` seams)."""
    time = VirtualTime()
    monkeypatch.setattr(wait_command, "sleep", time.sleep)
    monkeypatch.setattr(wait_command, "clock", lambda: time.now)
    return time


def test_wait_returns_once_a_late_server_answers(
    cli, held_port: socket.socket, refused_url: str, virtual: VirtualTime
) -> None:
    late: list[ScriptServer] = []
    # Refused until the second pause, when a server starts listening on the held port.
    teapot = answer(418, b"short and stout")
    virtual.during[2] = lambda: late.append(ScriptServer(lambda n: [teapot], sock=held_port))
    try:
        result = cli(
            "wait", "--url", f"{refused_url}/", "--timeout", "20s", "--interval", "50ms",
            "-o", "json",
        )  # fmt: skip
    finally:
        for server in late:
            server.close()
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["status"] == 418
    assert data["attempts"] == 3 and data["waited_s"] == 0.15  # refused twice: 50 ms, 100 ms
    assert virtual.pauses == [0.05, 0.1]


def test_wait_gives_up_with_exit_1(cli, refused_url: str, virtual: VirtualTime) -> None:
    result = cli("wait", "--url", refused_url, "--timeout", "300ms", "--interval", "50ms")
    assert result.exit_code == 1
    assert "did not answer within 300ms (4 attempts" in result.stderr
    assert "connection refused" in result.stderr
    assert virtual.pauses == pytest.approx([0.05, 0.1, 0.15])  # doubling, the last cut short


def test_wait_bad_timeout_is_usage_error(cli) -> None:
    result = cli("wait", "--url", "http://127.0.0.1:1", "--timeout", "soon")
    assert result.exit_code == 2
    assert "--timeout" in result.stderr

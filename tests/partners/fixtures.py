"""``receiver``: start a reconstruction on 127.0.0.1 on a free port, stopped after the test;
:class:`TwoSyncs`: the 20,000-user sync plus a delta every profile's test runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli

Receiver = Callable[[Callable[[], web.Application]], BackgroundServer]
HERE = Path(__file__).parent


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """``receiver(make_app)`` starts the app and returns the running server (``.url``)."""
    started: list[BackgroundServer] = []

    def start(make_app: Callable[[], web.Application]) -> BackgroundServer:
        server = BackgroundServer(make_app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def write_ids(path: Path, ids: list[str]) -> Path:
    """A snapshot file: one id a line."""
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


@dataclass
class TwoSyncs:
    """One cohort synced twice with ``cohortctl sync``: :attr:`first` (20,000 users), then
    :attr:`second` (700 of them gone, 500 new). ``args`` are the destination's flags."""

    cli: RunCli
    tmp_path: Path
    args: tuple[str, ...]
    env: Mapping[str, str]
    cohort_name: str = "Power users"
    suffix: str = ""  # added to every id (long ids)
    first: list[str] = field(init=False)
    second: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.first = [f"user-{n}{self.suffix}" for n in range(20_000)]
        self.second = self.first[700:] + [f"new-{n}{self.suffix}" for n in range(500)]

    def sync(self, ids: list[str]) -> dict[str, Any]:
        """Sync ``ids`` as cohort ``c1`` (exit 0 asserted); the cohort's JSON report."""
        snapshot = write_ids(self.tmp_path / "cohort.txt", ids)
        result = self.cli(
            "sync", str(snapshot), *self.args, "--cohort-name", self.cohort_name,
            "--cohort-id", "c1", "--state", str(self.tmp_path / "s.db"), "--output", "json",
            env=dict(self.env),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report: dict[str, Any] = json.loads(result.stdout)["cohorts"][0]
        return report

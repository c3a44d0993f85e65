"""``receiver``: start a reconstruction on 127.0.0.1 on a free port, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from cohortctl.servers.runner import BackgroundServer

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

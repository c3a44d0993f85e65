"""Fixtures that start the embedded servers on 127.0.0.1, on a free port, per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cohortctl.servers.runner import BackgroundServer
from tests.credentials import API_KEY, SECRET_KEY


@pytest.fixture
def amplitude_server() -> Iterator[BackgroundServer]:
    """The embedded fake of Amplitude's cohort API, with the test key and secret."""
    from cohortctl.servers.amplitude import create_app

    with BackgroundServer(lambda: create_app(api_key=API_KEY, secret_key=SECRET_KEY)) as server:
        yield server


@pytest.fixture
def amplitude_server_factory() -> Iterator[Any]:
    """Start fake Amplitude servers with custom options: ``factory(**create_app_kwargs)``."""
    from cohortctl.servers.amplitude import create_app

    started: list[BackgroundServer] = []

    def start(**options: Any) -> BackgroundServer:
        options.setdefault("api_key", API_KEY)
        options.setdefault("secret_key", SECRET_KEY)
        server = BackgroundServer(lambda: create_app(**options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

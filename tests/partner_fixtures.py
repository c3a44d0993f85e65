"""Fixtures for the embedded partner receiver, started on 127.0.0.1 on a free port per test.

``partner_server``: basic auth with ``PARTNER_KEY``; ``partner_server_factory(**settings)``:
any :class:`ReceiverSettings` (``api_key`` defaults to nothing, i.e. any credentials).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cohortctl.servers.runner import BackgroundServer
from tests.credentials import PARTNER_KEY

PartnerFactory = Callable[..., BackgroundServer]


@pytest.fixture
def partner_server() -> Iterator[BackgroundServer]:
    """The reference partner receiver: Basic auth with the test partner key, in-memory db."""
    from cohortctl.servers.partner.app import ReceiverSettings, create_app

    settings = ReceiverSettings(api_key=PARTNER_KEY)
    with BackgroundServer(lambda: create_app(settings)) as server:
        yield server


@pytest.fixture
def partner_server_factory() -> Iterator[PartnerFactory]:
    """Start receivers with custom settings: ``factory(**ReceiverSettings fields)``.

    ``clock=`` (a callable) replaces the receiver's monotonic clock.
    """
    from cohortctl.servers.partner.app import ReceiverSettings, create_app

    started: list[BackgroundServer] = []

    def start(clock: Callable[[], float] | None = None, **settings_kwargs: Any) -> BackgroundServer:
        settings = ReceiverSettings(**settings_kwargs)
        options = {} if clock is None else {"clock": clock}
        server = BackgroundServer(lambda: create_app(settings, **options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

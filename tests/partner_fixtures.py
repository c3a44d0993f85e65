"""Fixtures for the embedded partner receiver, started on 127.0.0.1 on a free port per test.

``partner_server``: basic auth with ``PARTNER_KEY``; ``partner_server_factory(**settings)``:
any :class:`ReceiverSettings` (``api_key`` defaults to nothing, i.e. any credentials).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from cohortctl.servers.runner import AppFactory, BackgroundServer
from tests.credentials import PARTNER_KEY
from tests.servers_fixtures import serving

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

    def app(clock: Callable[[], float] = time.monotonic, **fields: Any) -> AppFactory:
        return partial(create_app, ReceiverSettings(**fields), clock=clock)

    yield from serving(app)

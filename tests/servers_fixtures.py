"""Fixtures that start the embedded servers on 127.0.0.1, on a free port, per test."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from cohortctl.servers.runner import AppFactory, BackgroundServer
from tests.credentials import API_KEY, SECRET_KEY


class Gate:
    """A ``checkpoint`` for the fake Amplitude app: holds handlers there while closed.

    Held handlers wait on a future of their own loop (no polling); :meth:`release` resolves
    them from any thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.waiting = 0

    async def __call__(self) -> None:
        with self._cond:
            if self._open:
                return
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._held.append((loop, future))
            self.waiting += 1
            self._cond.notify_all()
        try:
            await future
        finally:
            with self._cond:
                self.waiting -= 1
                self._cond.notify_all()

    def hold(self) -> None:
        """Make handlers stop at the checkpoint until :meth:`release`."""
        with self._cond:
            self._open = False

    def release(self) -> None:
        """Let held handlers go on (and the next ones pass)."""
        with self._cond:
            self._open = True
            held, self._held = self._held, []
        for loop, future in held:
            loop.call_soon_threadsafe(_resolve, future)

    def wait_for_held(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` handlers wait at the gate; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waiting >= count, timeout)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@pytest.fixture
def amplitude_server() -> Iterator[BackgroundServer]:
    """The embedded fake of Amplitude's cohort API, with the test key and secret."""
    from cohortctl.servers.amplitude.app import FakeSettings, create_app

    with BackgroundServer(lambda: create_app(FakeSettings(API_KEY, SECRET_KEY))) as server:
        yield server


@pytest.fixture
def amplitude_server_factory() -> Iterator[Any]:
    """Start fake Amplitude servers with custom options: ``factory(**options)``, where the
    options are :class:`FakeSettings` fields and ``create_app``'s ``clock`` and ``checkpoint``."""
    from cohortctl.servers.amplitude.app import FakeSettings, create_app

    def app(
        clock: Callable[[], float] = time.monotonic, checkpoint: Any = None, **fields: Any
    ) -> AppFactory:
        settings = FakeSettings(**{"api_key": API_KEY, "secret_key": SECRET_KEY, **fields})
        return partial(create_app, settings, clock=clock, checkpoint=checkpoint)

    yield from serving(app)


def serving(
    app_of: Callable[..., AppFactory],
) -> Iterator[Callable[..., BackgroundServer]]:
    """The body of a server factory fixture: ``start(**options)`` serves ``app_of(**options)``
    on a free port (its settings checked in the test's thread, the app built in the server's);
    every server started is stopped when the test ends."""
    started: list[BackgroundServer] = []

    def start(**options: Any) -> BackgroundServer:
        server = BackgroundServer(app_of(**options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def client_for(server: BackgroundServer, auth: Any = (API_KEY, SECRET_KEY)) -> httpx.Client:
    """An httpx client for a fake Amplitude server (the test key and secret unless ``auth``)."""
    return httpx.Client(base_url=server.url, auth=auth, timeout=30)


@pytest.fixture
def api(amplitude_server: BackgroundServer) -> Iterator[httpx.Client]:
    """A client for ``amplitude_server`` with the test key and secret."""
    with client_for(amplitude_server) as client:
        yield client

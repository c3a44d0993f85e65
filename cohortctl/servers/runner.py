"""Run an aiohttp application on 127.0.0.1: in the foreground (CLI) or in a thread (tests, demo).

Both embedded servers (the fake Amplitude API and the partner receiver) go through here, so
the CLI, the demo and the test fixtures start exactly the same code.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from aiohttp import web

AppFactory = Callable[[], web.Application]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_MAX_SIZE = 64 * 1024 * 1024
"""The largest request body the embedded servers read (aiohttp's ``client_max_size``)."""
T = TypeVar("T")


def _bound_port(site: web.TCPSite) -> int:
    server = cast(asyncio.Server | None, site._server)  # the bound socket is only here
    assert server is not None and server.sockets
    return int(server.sockets[0].getsockname()[1])


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    return runner, _bound_port(site)


def url_for(host: str, port: int) -> str:
    """The base URL of a server bound to ``host:port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@dataclass
class BackgroundServer:
    """A server running on its own event loop in a daemon thread; use as a context manager."""

    factory: AppFactory
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    app: web.Application | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self) -> BackgroundServer:
        """Start the server and block until it is accepting connections."""
        self._thread = threading.Thread(target=self._run, name="cohortctl-server", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError("embedded server did not start within 30 s")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.app = self.factory()
            self._runner, port = loop.run_until_complete(_start(self.app, self.host, self.port))
            self.port = port
            self.url = url_for(self.host, port)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the server's loop from another thread and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout=30)

    def stop(self) -> None:
        """Stop the server and wait for its thread to finish."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        # ``with BackgroundServer(...).start() as server`` must not bind a second time.
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(
    app: web.Application,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
) -> None:
    """Serve ``app`` in the foreground; ``on_ready`` gets the URL. Ctrl-C or SIGTERM shuts it
    down cleanly, then raises :class:`KeyboardInterrupt` (the CLI's exit 130).

    Once serving, the event loop takes both signals through its wakeup pipe: raised into
    whatever the loop was running, a KeyboardInterrupt could leave a connection's task
    half-done and the shutdown waiting on it. A SIGINT the process was started ignoring
    (``nohup``) stays ignored.
    """

    async def main() -> bool:
        runner, bound = await _start(app, host, port)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        taken: dict[signal.Signals, Any] = {}  # signal -> the handler it had
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if previous is not signal.SIG_IGN:
                    loop.add_signal_handler(sig, stop.set)
                    taken[sig] = previous
        try:
            on_ready(url_for(host, bound))
            await stop.wait()
        finally:
            for sig, previous in taken.items():  # a second signal during the shutdown acts
                loop.remove_signal_handler(sig)  # as it did before serving
                if previous is not None:
                    signal.signal(sig, previous)
            await runner.cleanup()
        return stop.is_set()

    if asyncio.run(main()):
        raise KeyboardInterrupt

"""A real headless Chromium driven over the DevTools protocol (aiohttp's websocket client).

``CHROMIUM`` is Debian's ``chromium`` (``.ci/run`` installs it); tests that need it skip with
the reason when it is missing. Every console error, uncaught exception and failed load is
collected in :attr:`Page.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
)
START_TIMEOUT = 60.0
WAIT_TIMEOUT = 30.0


def artefact_dir(fallback: Path) -> Path:
    """Where screenshots go: ``$COHORTCTL_TEST_ARTEFACTS`` if set, else ``fallback``."""
    chosen = Path(os.environ.get("COHORTCTL_TEST_ARTEFACTS") or fallback)
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


class Page:
    """One page target: send commands, collect events, read text, take screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self._loaded = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(f"exception: {details.get('text')} {details.get('exception')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description")) for a in params.get("args", [])]
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a DevTools command and return its result (AssertionError on a protocol error)."""
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        await self._ws.send_str(json.dumps({"id": self._next, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, WAIT_TIMEOUT)
        assert "error" not in answer, answer["error"]
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._loaded.clear()
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(self._loaded.wait(), WAIT_TIMEOUT)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def text(self) -> str:
        """The page's visible text."""
        return str(await self.evaluate("document.body.innerText"))

    async def wait_for_text(self, ready: Callable[[str], bool], what: str) -> str:
        """Poll the visible text until ``ready`` holds (generous deadline, no fixed sleeps)."""
        deadline = asyncio.get_running_loop().time() + WAIT_TIMEOUT
        text = ""
        while asyncio.get_running_loop().time() < deadline:
            text = await self.text()
            if ready(text):
                return text
            await asyncio.sleep(0.2)
        raise AssertionError(f"the page never showed {what}; it shows:\n{text}")

    async def screenshot(self, path: Path) -> Path:
        """Write a PNG of the whole page to ``path``."""
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    async def close(self) -> None:
        """Stop reading and close the socket."""
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"chromium exited at start with {process.returncode}")
        if marker.exists():
            lines = marker.read_text().split()
            if lines and lines[0].isdigit():
                return int(lines[0])
        await asyncio.sleep(0.1)
    raise AssertionError("chromium did not open its DevTools port in time")


@contextlib.asynccontextmanager
async def open_page(profile: Path, log: Path) -> AsyncIterator[Page]:
    """Start Chromium on a fresh profile and yield its first page, events enabled."""
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=output,
            stderr=output,
            stdin=subprocess.DEVNULL,
        )
    try:
        port = await _devtools_port(profile, process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json()
            target = next(t for t in targets if t.get("type") == "page")
            ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
            page = Page(ws)
            try:
                for domain in ("Page", "Runtime", "Log"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                await page.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

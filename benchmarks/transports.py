"""The sync hot-path transport against aiohttp and httpx, same server, same bodies, same run.

A fixed-answer server in a subprocess (``sync_engine.ServerProcess``: ``200 {"listId"}`` to
every request) on 127.0.0.1; each client posts 1,000-id list-add bodies (~25 KB) from N
concurrent workers on one event loop (uvloop where installed, as ``cohortctl sync`` runs):

- ``FastTransport``: :mod:`cohortctl.http.fast` (asyncio protocols framed by httptools), as
  ``cohortctl sync`` sends;
- ``aiohttp``: one ``ClientSession`` sized to the workers;
- ``httpx``: one ``httpx.AsyncClient`` sized to the workers.

At 4 and 32 workers (``--workers``), each client runs ``--seconds`` per round, the clients
interleaved round after round (``--rounds``) so a busy shared machine weighs on all alike;
the best round of each is kept. Prints requests/s and the ratios to aiohttp.

Usage: ``python benchmarks/transports.py [--seconds S] [--rounds N] [--workers 4 32] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "benchmarks")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from sync_engine import BATCH_USERS, ServerProcess, user_ids  # noqa: E402

from cohortctl.http.fast import FastTransport  # noqa: E402
from cohortctl.http.settings import Overrides  # noqa: E402
from cohortctl.partner import payloads  # noqa: E402
from cohortctl.sync.delivery import run_event_loop  # noqa: E402

HEADERS = {"Authorization": "Basic YmVuY2gta2V5Og==", "Content-Type": "application/json"}
Send = Callable[[bytes], Awaitable[int]]


def bodies() -> list[bytes]:
    """8 distinct 1,000-id list-add bodies, as sync sends them."""
    out = []
    for n in range(8):
        ids = user_ids(n * BATCH_USERS, BATCH_USERS)
        out.append(json.dumps(payloads.list_members(ids), separators=(",", ":")).encode())
    return out


async def drive(send: Send, workers: int, seconds: float, pool: list[bytes]) -> float:
    """Requests/s of ``workers`` loops calling ``send`` for ``seconds`` (after a warm-up)."""
    count = 0
    stop = 0.0

    async def worker(n: int) -> None:
        nonlocal count
        i = n
        while time.perf_counter() < stop:
            status = await send(pool[i % len(pool)])
            if status != 200:
                raise RuntimeError(f"unexpected answer {status}")
            count += 1
            i += 1

    stop = time.perf_counter() + 0.3  # warm-up: connections open, caches filled
    await asyncio.gather(*(worker(n) for n in range(workers)))
    count = 0
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(*(worker(n) for n in range(workers)))
    return count / (time.perf_counter() - started)


async def fast_rate(url: str, workers: int, seconds: float, pool: list[bytes]) -> float:
    transport = FastTransport(
        workers=workers, headers=HEADERS, timeout=30, overrides=Overrides(proxy="")
    )

    async def send(body: bytes) -> int:
        answer = await transport.send("POST", url, body)
        return answer.status or 0

    try:
        return await drive(send, workers, seconds, pool)
    finally:
        await transport.close()


async def aiohttp_rate(url: str, workers: int, seconds: float, pool: list[bytes]) -> float:
    connector = aiohttp.TCPConnector(limit=workers, limit_per_host=workers)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def send(body: bytes) -> int:
            async with session.post(url, data=body) as response:
                await response.read()
                return response.status

        return await drive(send, workers, seconds, pool)


async def httpx_rate(url: str, workers: int, seconds: float, pool: list[bytes]) -> float:
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(headers=HEADERS, limits=limits, trust_env=False) as client:

        async def send(body: bytes) -> int:
            response = await client.post(url, content=body)
            return response.status_code

        return await drive(send, workers, seconds, pool)


CLIENTS: dict[str, Callable[[str, int, float, list[bytes]], Awaitable[float]]] = {
    "FastTransport (sync)": fast_rate,
    "aiohttp ClientSession": aiohttp_rate,
    "httpx.AsyncClient": httpx_rate,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    pool = bodies()
    results: dict[int, dict[str, float]] = {}
    with ServerProcess() as server:
        url = server.url + payloads.call_path(payloads.LIST_ADD, "L1")
        for workers in args.workers:
            best: dict[str, float] = {name: 0.0 for name in CLIENTS}
            for _ in range(args.rounds):
                for name, rate in CLIENTS.items():
                    value = run_event_loop(rate(url, workers, args.seconds, pool))
                    best[name] = max(best[name], value)
            results[workers] = best
    if args.json:
        print(json.dumps({str(k): v for k, v in results.items()}, indent=2))
        return
    print(f"{BATCH_USERS}-id list-add bodies, loopback, best of {args.rounds} x {args.seconds}s")
    for workers, best in results.items():
        base = best["aiohttp ClientSession"]
        print(f"\n{workers} workers")
        for name, value in best.items():
            ratio = value / base if base else float("nan")
            print(f"  {name:<24} {value:9,.0f} req/s   {ratio:5.2f}x aiohttp")
        fast = best["FastTransport (sync)"]
        verdict = "meets" if base and fast / base >= 1.5 else "MISSES"
        print(f"  goal: sync transport >= 1.5x aiohttp: {verdict} ({fast / base:.2f}x)")


if __name__ == "__main__":
    main()

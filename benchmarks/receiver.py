"""How many 1,000-user list-add batches a second ``cohortctl serve partner`` absorbs.

Starts the receiver in a subprocess (``python -m cohortctl serve partner``, in-memory db
unless ``--db-file``), creates a list, then fires ``POST /lists/{id}/add`` batches of 1,000
unique user ids, each body exactly as ``cohortctl.partner.payloads.list_members`` builds it, with
Basic auth, for at most ``--seconds`` or ``--requests`` (whichever comes first). The ids come
in random order (as real syncs send them), then in increasing order, each against a fresh
receiver (``--ids`` picks one). The load generator is ``wrk`` with a Lua script when
installed (C, cheap on a 2-core machine), else an aiohttp client in its own process. After
each run it checks through ``/_cohortctl/state`` that every acknowledged membership is
stored. The same load runs first against a baseline: a bare aiohttp app on the same runner
that reads the body and answers 200 (no validation, no auth, no state), and the ratio is
printed. Loopback only; stops by itself.

    .venv/bin/python benchmarks/receiver.py                  # 10 s or 20,000 requests per run
    .venv/bin/python benchmarks/receiver.py --ids random     # only random-order ids
    .venv/bin/python benchmarks/receiver.py --seconds 3 --db-file
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cohortctl.partner import payloads  # noqa: E402

BATCH = 1000
MARK = "\x00IDS\x00"
START_TIMEOUT = 30.0


@dataclass
class Load:
    """What one load run measured, from the load generator's side."""

    requests: int  # answered 2xx
    failed: int  # non-2xx answers and socket errors
    seconds: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def rate(self) -> float:
        """2xx answers per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def body_template() -> tuple[str, str]:
    """The text before and after the ids in a list-add body, from the real builder."""
    text = json.dumps(payloads.list_members([MARK]))
    before, after = text.split(json.dumps(MARK))
    return before, after


def user_id(kind: str, worker: int, request: int, index: int, rng: random.Random) -> str:
    """A unique 21-character user id; ``random`` ones land anywhere in the index."""
    if kind == "random":
        return f"r{rng.getrandbits(32):08x}{worker:02d}{request:06d}{index:04d}"
    return f"user-{worker:02d}{request:010d}{index:04d}"


# --- servers in subprocesses ----------------------------------------------------------------


def serve_bare() -> None:
    """The baseline: aiohttp on the same runner, reads the body, answers 200, keeps nothing."""
    from aiohttp import web

    from cohortctl.servers.runner import serve_forever

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", ok)

    def ready(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()

    serve_forever(app, host="127.0.0.1", port=0, on_ready=ready)


def start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server subprocess and read the URL it prints on its first stdout line."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = process.stdout.readline()
    if not line.startswith("http://") or time.monotonic() > deadline:
        process.kill()
        raise SystemExit(f"server did not start: {' '.join(command[:4])}")
    return process, line.strip()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[str]) -> None:
    """Terminate a server subprocess and wait for it (kill after 10 s)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- load generators ------------------------------------------------------------------------

_LUA = r"""
local before = [==[__BEFORE__]==]
local after = [==[__AFTER__]==]
local path = "__PATH__"
local auth = "__AUTH__"
local kind = "__KIND__"
local per_thread = __PER_THREAD__
local batch = __BATCH__
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC, shared by every thread
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local next_id = 0
local threads = {}
local counter = 0
answered = 0
bad = 0
first = 0
last = 0

function setup(thread)
  thread:set("worker", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(1000 + worker)
end

function request()
  if counter == 0 then first = now() end
  counter = counter + 1
  local ids = {}
  for i = 1, batch do
    if kind == "random" then
      ids[i] = string.format('"r%08x%02d%06d%04d"', math.random(0, 4294967295), worker,
                             counter, i - 1)
    else
      ids[i] = string.format('"user-%02d%010d%04d"', worker, counter, i - 1)
    end
  end
  local body = before .. table.concat(ids, ", ") .. after
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
                                   ["Authorization"] = auth}, body)
end

function response(status, headers, body)
  if answered >= per_thread then return end  -- past the cut-off: not counted
  answered = answered + 1
  if status < 200 or status > 299 then bad = bad + 1 end
  last = now()
  if answered >= per_thread then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local began, ended, total, failed = nil, 0, 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("answered")
    failed = failed + thread:get("bad")
    local f, l = thread:get("first"), thread:get("last")
    if f > 0 and (began == nil or f < began) then began = f end
    if l > ended then ended = l end
  end
  local elapsed_us = summary.duration
  if began ~= nil and ended > began then elapsed_us = (ended - began) * 1e6 end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    total, elapsed_us, failed, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str, path: str, auth: str, *, kind: str, seconds: float, requests: int,
    threads: int, connections: int,
) -> Load:  # fmt: skip
    """Fire list-add batches with wrk; the Lua script builds each body."""
    before, after = body_template()
    script = (
        _LUA.replace("__BEFORE__", before)
        .replace("__AFTER__", after)
        .replace("__PATH__", path)
        .replace("__AUTH__", auth)
        .replace("__KIND__", kind)
        .replace("__PER_THREAD__", str(max(1, requests // threads)))
        .replace("__BATCH__", str(BATCH))
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        command = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", handle.name, url,
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    finally:
        os.unlink(handle.name)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith('{"requests"'))
    data = json.loads(line)
    bad = data["status_errors"]
    return Load(
        requests=data["requests"] - bad,
        failed=bad + data["socket_errors"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


async def _client_load(
    url: str, auth: str, kind: str, seconds: float, requests: int, connections: int
) -> dict[str, Any]:
    import aiohttp

    headers = {"Content-Type": "application/json", "Authorization": auth}
    deadline = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0, "sent": 0}
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession, number: int) -> None:
        rng = random.Random(number)
        sequence = 0
        while time.monotonic() < deadline and counts["sent"] < requests:
            counts["sent"] += 1
            sequence += 1
            ids = [user_id(kind, number, sequence, i, rng) for i in range(BATCH)]
            body = json.dumps(payloads.list_members(ids)).encode()
            began = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - began)
            counts["ok" if ok else "failed"] += 1

    began = time.monotonic()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, n) for n in range(connections)))
    latencies.sort()

    def pct(p: float) -> float | None:
        return latencies[int(p * (len(latencies) - 1))] * 1000 if latencies else None

    return {
        "requests": counts["ok"],
        "failed": counts["failed"],
        "seconds": time.monotonic() - began,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def client_main(argv: list[str]) -> None:
    """``--client URL AUTH KIND SECONDS REQUESTS CONNECTIONS``: the fallback load generator."""
    url, auth, kind, seconds, requests, connections = argv
    result = asyncio.run(
        _client_load(url, auth, kind, float(seconds), int(requests), int(connections))
    )
    print(json.dumps(result))


def run_client(
    url: str, path: str, auth: str, *, kind: str, seconds: float, requests: int,
    connections: int,
) -> Load:  # fmt: skip
    """Fire list-add batches with an aiohttp client in its own process (no wrk)."""
    command = [
        sys.executable, __file__, "--client", url + path, auth, kind,
        str(seconds), str(requests), str(connections),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return Load(**json.loads(done.stdout.strip().splitlines()[-1]))


# --- the run ---------------------------------------------------------------------------------


@dataclass
class ReceiverRun:
    """One load run against the receiver and what its state says afterwards."""

    kind: str
    load: Load
    size: int  # memberships stored in the benchmark's list
    acknowledged: int  # 2xx adds the receiver counted (its own counters)
    cpu_per_request: float | None  # seconds of receiver CPU (both threads) per request

    @property
    def complete(self) -> bool:
        """Every acknowledged membership is stored, and no more were acknowledged than counted."""
        return self.size == self.acknowledged * BATCH and self.load.requests <= self.acknowledged


def run_receiver(
    kind: str, env: dict[str, str], key: str, db_file: bool, load: Callable[[str, str, str], Load]
) -> ReceiverRun:
    """Start ``cohortctl serve partner``, create a list, load it, read its state, stop it."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "cohortctl", "serve", "partner", "--port", "0"]
        if db_file:
            command += ["--db", str(Path(tmp) / "receiver.sqlite")]
        process, url = start(command, env)
        try:
            with httpx.Client(base_url=url, auth=(key, ""), timeout=60) as client:
                created = client.post("/lists", json=payloads.list_create("Bench", "b1"))
                created.raise_for_status()
                list_id = created.json()["listId"]
                cpu_before = cpu_seconds(process.pid)
                result = load(url, f"/lists/{list_id}/add", kind)
                cpu_after = cpu_seconds(process.pid)
                state = client.get("/_cohortctl/state").json()
        finally:
            stop(process)
    size = next(item["size"] for item in state["lists"] if item["listId"] == list_id)
    acknowledged = state["counters"]["by_status"].get("200", 0) - 1  # minus the list creation
    cpu = None
    if cpu_before is not None and cpu_after is not None and acknowledged:
        cpu = (cpu_after - cpu_before) / acknowledged
    return ReceiverRun(kind, result, size, acknowledged, cpu)


def report(run: ReceiverRun, where: str, baseline: Load | None) -> None:
    """Print one receiver run: rate, latency, CPU, ratio to the baseline, verification."""
    result = run.load
    print(
        f"receiver, {run.kind} ids (auth + strict validation + state, SQLite {where}): "
        f"{result.rate:,.0f} req/s = {result.rate * BATCH:,.0f} memberships/s  "
        f"p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  ({result.requests} ok, "
        f"{result.failed} failed, {result.seconds:.1f} s)"
    )
    if run.cpu_per_request is not None:
        print(
            f"  CPU: {run.cpu_per_request * 1e6:,.0f} us per request (event loop + writer "
            f"thread), {run.cpu_per_request * result.rate:.2f} cores busy at that rate"
        )
    if baseline is not None and baseline.rate:
        print(f"  ratio receiver / baseline: {result.rate / baseline.rate:.2f}")
    verdict = "every acknowledged membership stored" if run.complete else "MISMATCH"
    print(
        f"  stored: {run.size:,} memberships for {run.acknowledged:,} acknowledged adds "
        f"({result.requests:,} seen by the load generator; the rest were in flight at the "
        f"cut-off): {verdict}",
        flush=True,
    )


def main() -> None:
    """Run baseline and receiver (random ids, then sequential) under the same load."""
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        serve_bare()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="at most this long per run")
    parser.add_argument("--requests", type=int, default=20_000, help="at most this many per run")
    parser.add_argument(
        "--ids",
        choices=("both", "random", "sequential"),
        default="both",
        help="order of the user ids: random (as real syncs send them), sequential, or both",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--db-file", action="store_true", help="SQLite file instead of memory")
    parser.add_argument("--client", dest="force_client", action="store_true",
                        help="use the aiohttp client even when wrk is installed")  # fmt: skip
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    kinds = ["random", "sequential"] if args.ids == "both" else [args.ids]

    key = f"bench-{secrets.token_hex(8)}"
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    use_wrk = shutil.which("wrk") is not None and not args.force_client
    generator = "wrk" if use_wrk else "aiohttp client"

    def load(url: str, path: str, kind: str) -> Load:
        if use_wrk:
            return run_wrk(
                url, path, auth, kind=kind, seconds=args.seconds, requests=args.requests,
                threads=args.threads, connections=args.connections,
            )  # fmt: skip
        return run_client(
            url, path, auth, kind=kind, seconds=args.seconds, requests=args.requests,
            connections=args.connections,
        )  # fmt: skip

    env = {**os.environ, "COHORTCTL_PARTNER_API_KEY": key, "PYTHONPATH": str(ROOT)}
    print(
        f"load: {generator}, {args.connections} connections, {BATCH} user ids per request "
        f"({' then '.join(kinds)} order), at most {args.seconds:g} s or {args.requests} "
        "requests per run",
        flush=True,
    )

    baseline: Load | None = None
    if not args.skip_baseline:
        process, url = start([sys.executable, __file__, "--serve-bare"], env)
        try:
            cpu_before = cpu_seconds(process.pid)
            baseline = load(url, "/lists/1/add", kinds[0])
            baseline_cpu = cpu_seconds(process.pid)
        finally:
            stop(process)
        cpu_note = ""
        if cpu_before is not None and baseline_cpu is not None and baseline.requests:
            cpu_note = f", {(baseline_cpu - cpu_before) / baseline.requests * 1e6:,.0f} us CPU/req"
        print(
            f"baseline (bare aiohttp, body read, no checks, no state, {kinds[0]} ids): "
            f"{baseline.rate:,.0f} req/s  p50 {baseline.p50_ms:.1f} ms  "
            f"p99 {baseline.p99_ms:.1f} ms{cpu_note}",
            flush=True,
        )

    where = "file db" if args.db_file else ":memory:"
    runs = []
    for kind in kinds:
        run = run_receiver(kind, env, key, args.db_file, load)
        report(run, where, baseline)
        runs.append(run)
    if not use_wrk:
        print("note: the Python load generator may be the limit here; install wrk to measure")
    if any(not run.complete or run.load.failed for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Benchmark of the sync engine: the batch sender against baselines, and the snapshot diff.

Everything runs on 127.0.0.1, bounded in count and time, and stops by itself:

1. a fixed-answer aiohttp server in a subprocess (its own GIL; on a 2-core machine it still
   competes with the sender for CPU);
2. cohortctl's delivery at 4 workers and at a high worker count, for 1,000-id add batches
   (~25 KB, built with ``payloads.list_members``): sender only (a pool of prebuilt bodies)
   and the whole engine (bodies built lazily per batch + state confirmed per 2xx);
3. a ``requests.Session`` loop (the baseline of the same run), and wrk if it is on PATH;
4. the diff of two 10,000,000-id snapshots (10% leave, 10% join) in a subprocess: time and
   peak RSS (``ru_maxrss``).

Usage: ``python benchmarks/sync_engine.py [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cohortctl.partner import payloads  # noqa: E402
from cohortctl.sync.batches import Batch, BatchResult  # noqa: E402
from cohortctl.sync.delivery import deliver  # noqa: E402
from cohortctl.sync.encoders import iter_batches  # noqa: E402

BATCH_USERS = 1000
AUTH = {"Authorization": "Basic YmVuY2gta2V5Og=="}  # "bench-key:", not a real credential


# -- the fixed-answer server (runs in a subprocess) -------------------------------------------


def serve() -> None:
    """Answer every request with 200 and a small JSON body; print the port when ready."""
    from aiohttp import web, web_server

    answer = b'{"ok":true,"listId":"L1"}'

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    async def main() -> None:
        server = web_server.Server(handle, access_log=None)
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(server, "127.0.0.1", 0, backlog=2048)
        print(srv.sockets[0].getsockname()[1], flush=True)
        # Stop by itself: when the parent closes our stdin, or after 15 minutes at most.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(), timeout=900)

    asyncio.run(main())


class ServerProcess:
    """The fixed-answer server in a subprocess; context manager."""

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the sender -------------------------------------------------------------------------------


def user_ids(start: int, count: int) -> list[str]:
    """Ids shaped like real user ids (~22 characters)."""
    return [f"user-{i:017d}" for i in range(start, start + count)]


def prebuilt_batches(url: str, count: int, deadline: float) -> Iterator[Batch]:
    """``count`` add batches cycling over 8 prebuilt bodies; stops early at ``deadline``."""
    target = url + payloads.call_path(payloads.LIST_ADD, "L1")
    pool = []
    for n in range(8):
        ids = user_ids(n * BATCH_USERS, BATCH_USERS)
        body = json.dumps(payloads.list_members(ids), separators=(",", ":")).encode()
        pool.append(Batch(f"b{n}", "POST", target, body, ids, payloads.LIST_ADD))
    for n in range(count):
        if n % 256 == 0 and time.perf_counter() > deadline:
            return
        yield pool[n % 8]


def run_sender(url: str, count: int, workers: int, seconds: float) -> dict[str, Any]:
    """cohortctl's delivery over prebuilt bodies: the sender alone."""
    batches = prebuilt_batches(url, count, time.perf_counter() + seconds)
    report = deliver(batches, headers=AUTH, workers=workers, timeout=30)
    assert report.ok, report.to_dict()["failed_by"]
    return summary(f"cohortctl delivery, {workers} workers", report.requests, report.duration)


def run_engine(url: str, count: int, workers: int, seconds: float) -> dict[str, Any]:
    """The whole engine: bodies built lazily per batch, every 2xx confirmed into SQLite."""
    from cohortctl.sync.state import SyncState, destination_key

    deadline = time.perf_counter() + seconds
    ids = user_ids(0, count * BATCH_USERS)
    target = url + payloads.call_path(payloads.LIST_ADD, "L1")

    def bounded() -> Iterator[Batch]:
        for n, batch in enumerate(
            iter_batches(ids, kind=payloads.LIST_ADD, url=target, body=payloads.list_members)
        ):
            if n % 256 == 0 and time.perf_counter() > deadline:
                return
            yield batch

    with tempfile.TemporaryDirectory() as tmp:
        state = SyncState.open(Path(tmp) / "state.sqlite", destination_key(url, "list", "c1"))
        with state.confirmer() as confirmer:

            def on_done(batch: Batch, result: BatchResult) -> None:
                if result.ok:
                    confirmer.added(batch.user_ids)

            started = time.perf_counter()
            report = deliver(bounded(), headers=AUTH, workers=workers, on_done=on_done)
        elapsed = time.perf_counter() - started  # includes the last commits
        assert report.ok and confirmer.confirmed_users == report.users_ok
        state.close()
    return summary(
        f"cohortctl engine (build + send + confirm), {workers} workers", report.requests, elapsed
    )


def run_requests(url: str, count: int, seconds: float) -> dict[str, Any] | None:
    """Baseline: one ``requests.Session`` posting the same body in a loop."""
    try:
        import requests
    except ImportError:
        return None
    ids = user_ids(0, BATCH_USERS)
    body = json.dumps(payloads.list_members(ids), separators=(",", ":")).encode()
    target = url + payloads.call_path(payloads.LIST_ADD, "L1")
    headers = {**AUTH, "Content-Type": "application/json"}
    deadline = time.perf_counter() + seconds
    sent = 0
    with requests.Session() as session:
        started = time.perf_counter()
        while sent < count and time.perf_counter() < deadline:
            response = session.post(target, data=body, headers=headers, timeout=30)
            response.raise_for_status()
            sent += 1
        elapsed = time.perf_counter() - started
    return summary("requests.Session loop", sent, elapsed)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{auth}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, Any] | None:
    """Upper bound: wrk posting the same body (if wrk is on PATH)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    ids = user_ids(0, BATCH_USERS)
    body = json.dumps(payloads.list_members(ids), separators=(",", ":")).encode()
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            WRK_SCRIPT.replace("{auth}", AUTH["Authorization"]).replace("{body}", str(body_path))
        )
        target = url + payloads.call_path(payloads.LIST_ADD, "L1")
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), target],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rate = float(line.split()[1])
            return {
                "name": f"wrk -t1 -c{connections}",
                "requests": None,
                "seconds": seconds,
                "requests_per_s": rate,
                "users_per_s": rate * BATCH_USERS,
            }
    return None


def summary(name: str, requests: int, seconds: float) -> dict[str, Any]:
    """One row of the sender table."""
    rate = requests / seconds if seconds > 0 else 0.0
    return {
        "name": name,
        "requests": requests,
        "seconds": round(seconds, 3),
        "requests_per_s": rate,
        "users_per_s": rate * BATCH_USERS,
    }


# -- the diff (runs in subprocesses, so ru_maxrss is the diff's own) --------------------------


def diff_setup(db: str, size: int) -> None:
    """Child: confirm ``size`` ids into a fresh state (the previous sync), fold, print timing."""
    from cohortctl.sync.state import SyncState

    ids = [f"user-{i:011d}" for i in range(size)]
    started = time.perf_counter()
    with SyncState.open(db, "bench|list|c1") as state:
        for i in range(0, size, 100_000):
            state.confirm_added(ids[i : i + 100_000])
        confirmed = time.perf_counter()
        state.fold()
    done = time.perf_counter()
    print(json.dumps({"confirm_s": confirmed - started, "fold_s": done - confirmed}))


def diff_run(db: str, size: int) -> None:
    """Child: build the new snapshot (10% left, 10% joined), time ``plan_diff``, print RSS."""
    from cohortctl.sync.state import SyncState, plan_diff

    snapshot = [f"user-{i:011d}" for i in range(size) if i % 10 != 0]
    snapshot += [f"user-{i:011d}" for i in range(size, size + size // 10)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with SyncState.open(db, "bench|list|c1") as state:
        started = time.perf_counter()
        diff = plan_diff(snapshot, state)
        elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len(diff.entered) == size // 10 and len(diff.left) == size // 10
    print(
        json.dumps(
            {
                "diff_s": elapsed,
                "rss_before_mb": before / 1024,
                "peak_rss_mb": peak / 1024,
                "entered": len(diff.entered),
                "left": len(diff.left),
            }
        )
    )


def run_diff(size: int) -> dict[str, Any]:
    """Set up the stored state, then time the diff, each in its own subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "state.sqlite")
        out: dict[str, Any] = {"ids": size}
        for step in ("--diff-setup", "--diff-run"):
            proc = subprocess.run(
                [sys.executable, __file__, step, db, str(size)],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        out["db_mb"] = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    return out


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    """Run every part and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--high-workers", type=int, default=64)
    args = parser.parse_args()

    count = 2_000 if args.quick else 30_000
    seconds = 5.0 if args.quick else 20.0
    diff_size = 200_000 if args.quick else 10_000_000

    rows: list[dict[str, Any]] = []
    with ServerProcess() as server:
        rows.append(run_sender(server.url, count, 4, seconds))
        rows.append(run_sender(server.url, count, args.high_workers, seconds))
        rows.append(run_engine(server.url, count // 2, args.high_workers, seconds))
        baseline = run_requests(server.url, count // 4, seconds / 2)
        if baseline:
            rows.append(baseline)
        wrk = run_wrk(server.url, 3 if args.quick else 8, args.high_workers)
        if wrk:
            rows.append(wrk)
    diff = run_diff(diff_size)

    base_rate = baseline["requests_per_s"] if baseline else None
    for row in rows:
        row["x_requests"] = row["requests_per_s"] / base_rate if base_rate else None
    result = {"machine": f"{os.cpu_count()} cores, shared", "sender": rows, "diff": diff}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"batch sender, {BATCH_USERS}-id add batches, loopback ({result['machine']})")
    for row in rows:
        ratio = f"{row['x_requests']:.1f}x requests" if row["x_requests"] else ""
        print(
            f"  {row['name']:<58} {row['requests_per_s']:>9,.0f} req/s"
            f" {row['users_per_s']:>13,.0f} users/s  {ratio}"
        )
    print(
        f"diff of two {diff['ids']:,}-id snapshots (10% leave, 10% join):"
        f" {diff['diff_s']:.2f} s, peak RSS {diff['peak_rss_mb']:,.0f} MB"
        f" (snapshot alone {diff['rss_before_mb']:,.0f} MB);"
        f" state setup: confirm {diff['confirm_s']:.1f} s + fold {diff['fold_s']:.1f} s,"
        f" file {diff['db_mb']:,.0f} MB"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve()
    elif len(sys.argv) > 1 and sys.argv[1] == "--diff-setup":
        diff_setup(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--diff-run":
        diff_run(sys.argv[2], int(sys.argv[3]))
    else:
        main()

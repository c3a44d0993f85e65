"""Benchmark of ``cohortctl sync``'s real path against baselines, in one run, same endpoint.

Everything runs on 127.0.0.1 and stops by itself:

1. a fixed-answer aiohttp server in a subprocess (answers every request ``200 {"listId"}``);
2. ``cohortctl sync SNAPSHOT`` run as a subprocess, exactly as a person runs it: reading the
   ID file, diffing against a fresh state, creating the list, sending 1,000-id add batches
   (~25 KB), confirming each batch in the SQLite state, folding it at the end. Once at
   Amplitude's defaults (4 workers) and once at a high ``--workers``; then once more in
   ``--mode webhook`` (Cohort Webhook messages of 1,000 users, ~40 KB) at 4 workers, the
   same server answering. Its ``--output json``
   summary gives the sending rate (requests/s over the delivery); the wall time of the whole
   command is printed too;
3. a ``requests.Session`` loop posting the same kind of body, and wrk if it is on PATH;
4. the diff of two 10,000,000-id snapshots (10% leave, 10% join): time and peak RSS.

Usage: ``python benchmarks/sync.py [--quick] [--users N] [--high-workers N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "benchmarks")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from sync_engine import (  # noqa: E402
    BATCH_USERS,
    ServerProcess,
    run_diff,
    run_requests,
    run_wrk,
)

from tests.sync_helpers import sync_argv  # noqa: E402

BENCH_KEY = "bench-key"  # not a real credential


def write_snapshot(path: Path, count: int) -> None:
    """``count`` ids shaped like real user ids (~22 characters), one per line."""
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            out.write("\n".join(f"user-{i:017d}" for i in range(start, stop)))
            out.write("\n")


def run_sync(
    url: str, snapshot: Path, workers: int, tmp: Path, *, mode: str = "list"
) -> dict[str, Any]:
    """``cohortctl sync`` in a subprocess (first sync: the whole snapshot); its JSON summary."""
    state = tmp / f"state-{mode}-{workers}.sqlite"
    target = f"{url}/webhook" if mode == "webhook" else url
    args = sync_argv(
        snapshot, target, "--mode", mode, "--workers", str(workers), "--state", str(state),
        "--output", "json", name="Bench", cohort_id=f"bench{workers}",
    )  # fmt: skip
    env = {**os.environ, "COHORTCTL_PARTNER_API_KEY": BENCH_KEY, "NO_COLOR": "1"}
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"cohortctl sync failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (cohort,) = json.loads(proc.stdout)["cohorts"]
    delivery = cohort["delivery"]
    assert cohort["added"] == cohort["snapshot_users"], cohort
    label = "" if mode == "list" else f" --mode {mode}"
    return {
        "name": f"cohortctl sync{label} --workers {workers}",
        "requests": delivery["requests"],
        "seconds": round(delivery["duration_s"], 3),
        "requests_per_s": delivery["requests_per_s"],
        "users_per_s": delivery["users_per_s"],
        "wall_s": round(wall, 2),
        "p99_ms": round(delivery["latency_s"]["p99"] * 1000, 1),
    }


def main() -> None:
    """Run every part and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("--users", type=int, help="snapshot size [default: 5M, quick 500k]")
    parser.add_argument(
        "--high-workers", type=int, nargs="+", default=[32, 64], help="[default: 32 64]"
    )
    parser.add_argument("--diff-ids", type=int, help="[default: 10M, quick 200k; 0 skips]")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    count = args.users or (500_000 if args.quick else 5_000_000)
    diff_size = (
        args.diff_ids if args.diff_ids is not None else (200_000 if args.quick else 10_000_000)
    )
    seconds = 3.0 if args.quick else 8.0

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name, ServerProcess() as server:
        tmp = Path(name)
        snapshot = tmp / "snapshot.txt"
        write_snapshot(snapshot, count)
        rows.append(run_sync(server.url, snapshot, 4, tmp))
        for workers in args.high_workers:
            rows.append(run_sync(server.url, snapshot, workers, tmp))
        rows.append(run_sync(server.url, snapshot, 4, tmp, mode="webhook"))
        baseline = run_requests(server.url, 100_000, seconds)
        if baseline:
            rows.append(baseline)
        wrk = run_wrk(server.url, int(seconds), max(args.high_workers))
        if wrk:
            rows.append(wrk)
    diff = run_diff(diff_size) if diff_size else None

    base = baseline["requests_per_s"] if baseline else None
    top = wrk["requests_per_s"] if wrk else None
    for row in rows:
        row["x_requests_loop"] = row["requests_per_s"] / base if base else None
        row["of_wrk"] = row["requests_per_s"] / top if top else None
    result = {
        "machine": f"{os.cpu_count()} cores, shared",
        "snapshot_users": count,
        "batch_users": BATCH_USERS,
        "rows": rows,
        "diff": diff,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"cohortctl sync, first sync of {count:,} users in {BATCH_USERS:,}-id add batches,"
        f" loopback fixed-answer server ({result['machine']})"
    )
    for row in rows:
        ratio = f"{row['x_requests_loop']:5.1f}x requests loop" if row["x_requests_loop"] else ""
        share = f"{row['of_wrk']:4.0%} of wrk" if row["of_wrk"] else ""
        wall = f"  (whole command {row['wall_s']:.1f} s)" if "wall_s" in row else ""
        print(
            f"  {row['name']:<38} {row['requests_per_s']:>8,.0f} req/s"
            f" {row['users_per_s']:>12,.0f} users/s  {ratio}  {share}{wall}"
        )
    hook = next((r for r in rows if "--mode webhook" in r["name"]), None)
    if hook is not None:
        print(
            f"webhook mode / list mode at 4 workers: "
            f"{hook['requests_per_s'] / rows[0]['requests_per_s']:.2f}x requests/s"
        )
    if diff:
        print(
            f"diff of two {diff['ids']:,}-id snapshots (10% leave, 10% join):"
            f" {diff['diff_s']:.2f} s, peak RSS {diff['peak_rss_mb']:,.0f} MB"
            f" (snapshot alone {diff['rss_before_mb']:,.0f} MB)"
        )


if __name__ == "__main__":
    main()

"""Benchmark: read + clean + dedupe a big ID file, cohortctl against pandas and a naive loop.

    python -m benchmarks.ingest                      # 10,000,000 ids, then removed
    python -m benchmarks.ingest --count 1000000      # quicker
    python -m benchmarks.ingest --variant crlf --data-dir bench-data --keep

One run generates the file (``user_<n>`` ids, about 5% repeated, about 0.1% blank lines;
``crlf`` uses Windows line ends, ``padded`` adds a BOM and spaces around some ids), then
times each contender in its own subprocess, one after the other, so that each one's peak
memory (``ru_maxrss`` of that process) is its own. Times (wall, and CPU as a check on a
busy machine) cover the work only, not the interpreter start or imports; with ``--repeat``
the best run counts. ``--check`` exits 1 unless cohortctl takes at most half of
pandas' time and peaks under 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONTENDERS = ("cohortctl", "pandas", "naive")
VARIANTS = ("lf", "crlf", "padded")
DUPLICATE_RATE = 0.05
BLANK_RATE = 0.001
GOAL_TIME_RATIO = 0.5
GOAL_PEAK_BYTES = 1.5e9
_BATCH = 1_000_000


def generate(path: Path, count: int, variant: str, seed: int = 20240501) -> None:
    """Write ``count`` lines of ids (some repeated, some blank) to ``path``.

    Standard library only, so the tests can use the same data without numpy.
    """
    rng = random.Random(seed)
    draw = rng.random
    newline = "\r\n" if variant == "crlf" else "\n"
    padded = variant == "padded"
    with open(path, "w", encoding="utf-8", newline="") as out:
        if padded:
            out.write("\ufeff")
        for start in range(0, count, _BATCH):
            lines: list[str] = []
            for index in range(start, min(start + _BATCH, count)):
                if draw() < DUPLICATE_RATE:
                    # A repeat points at an earlier line's id (the first line has none before it).
                    index = int(draw() * max(index, 1))
                # Distinct line indexes give distinct ids: a multiplicative hash mod 2**32.
                line = f"user_{(index * 2654435761 + 97) % 4294967296}"
                if draw() < BLANK_RATE:
                    line = ""
                elif padded and draw() < 0.01:
                    line = f"  {line}\t"
                lines.append(line)
            out.write(newline.join(lines) + newline)


# -- contenders (each runs in a fresh subprocess) ------------------------------------------


def run_cohortctl(path: str) -> int:
    """cohortctl's reader: the unique ids, validated."""
    from cohortctl.ids import read_ids

    return len(read_ids(path).ids)


def run_pandas(path: str) -> int:
    """``pandas.read_csv(...).drop_duplicates()``: no trimming, no validation."""
    import pandas as pd

    frame = pd.read_csv(path, header=None, names=["id"], dtype=str, skip_blank_lines=True)
    return len(frame.drop_duplicates())


def run_naive(path: str) -> int:
    """A plain Python loop over the lines with a set and a list."""
    seen: set[str] = set()
    ids: list[str] = []
    with open(path, encoding="utf-8-sig") as lines:
        for line in lines:
            value = line.strip()
            if value and value not in seen:
                seen.add(value)
                ids.append(value)
    return len(ids)


RUNNERS = {"cohortctl": run_cohortctl, "pandas": run_pandas, "naive": run_naive}
PRELOAD = {"cohortctl": "cohortctl.ids", "pandas": "pandas", "naive": None}


def child(contender: str, path: str) -> None:
    """Subprocess side: import, time the run, print one JSON line."""
    module = PRELOAD[contender]
    if module:
        __import__(module)
    start, cpu_start = time.perf_counter(), time.process_time()
    unique = RUNNERS[contender](path)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_bytes": peak, "unique": unique}))


def measure(contender: str, path: Path) -> dict[str, Any]:
    """Run one contender in its own subprocess and return its figures."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest", "--child", contender, str(path)],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Generate the file, time every contender, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000_000, help="lines to generate")
    parser.add_argument("--variant", choices=VARIANTS, default="lf", help="line ends / padding")
    parser.add_argument("--data-dir", type=Path, help="where the file goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the file")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender (best time)")
    parser.add_argument(
        "--only", action="append", choices=CONTENDERS, help="run only these contenders"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the goals are not met")
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    temp_dir = None
    if args.data_dir is None:
        temp_dir = Path(tempfile.mkdtemp(prefix="cohortctl-bench-"))
        data_dir = temp_dir
    else:
        data_dir = args.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"ids-{args.count}-{args.variant}.txt"
    try:
        if not (args.keep and path.exists()):
            started = time.perf_counter()
            generate(path, args.count, args.variant)
            print(f"generated {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return report(path, args)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)


def report(path: Path, args: argparse.Namespace) -> int:
    """Run the contenders on ``path`` and print the table, ratios and verdict."""
    contenders = args.only or list(CONTENDERS)
    results: dict[str, dict[str, Any]] = {}
    for name in contenders:
        runs = [measure(name, path) for _ in range(max(1, args.repeat))]
        results[name] = {
            "seconds": min(r["seconds"] for r in runs),
            "cpu": min(r["cpu"] for r in runs),
            "peak_bytes": max(r["peak_bytes"] for r in runs),
            "unique": runs[0]["unique"],
        }
        print(f"  {name}: {results[name]['seconds']:.2f} s", file=sys.stderr)

    size_mb = path.stat().st_size / 1e6
    print(f"ingest: {args.count:,} lines, {size_mb:.1f} MB, variant {args.variant}")
    print(
        f"{'contender':<10} {'time (s)':>9} {'CPU (s)':>8} {'peak RSS (MB)':>14} {'unique ids':>12}"
    )
    for name, r in results.items():
        mb = r["peak_bytes"] / 1e6
        print(f"{name:<10} {r['seconds']:>9.2f} {r['cpu']:>8.2f} {mb:>14.0f} {r['unique']:>12,}")
    ours = results.get("cohortctl")
    ok = True
    if ours is not None:
        for other in ("pandas", "naive"):
            if other in results:
                time_ratio = ours["seconds"] / results[other]["seconds"]
                cpu_ratio = ours["cpu"] / results[other]["cpu"]
                mem_ratio = ours["peak_bytes"] / results[other]["peak_bytes"]
                print(
                    f"cohortctl vs {other}: {time_ratio:.2f}x time ({cpu_ratio:.2f}x CPU), "
                    f"{mem_ratio:.2f}x peak memory"
                )
        if "pandas" in results:
            time_ok = ours["seconds"] <= GOAL_TIME_RATIO * results["pandas"]["seconds"]
        else:
            time_ok = True
        memory_ok = ours["peak_bytes"] < GOAL_PEAK_BYTES
        ok = time_ok and memory_ok
        verdict = "met" if ok else "NOT met"
        print(f"goal (<= {GOAL_TIME_RATIO}x pandas time, < 1.5 GB peak): {verdict}")
        differing = {n: r["unique"] for n, r in results.items() if r["unique"] != ours["unique"]}
        if differing:
            print(
                f"note: unique counts differ (pandas neither trims nor strips a BOM): {differing}"
            )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())

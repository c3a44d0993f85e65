"""Benchmark: start-up of ``cohortctl --help`` and ``--version`` against ``import typer``.

    python -m benchmarks.startup              # 15 rounds
    python -m benchmarks.startup --rounds 40 --check

Each round runs the three commands once each, interleaved, as fresh processes of this
interpreter (``python -c "import typer"``, ``python -m cohortctl --help``,
``python -m cohortctl --version``), so a busy machine slows all three alike. The median wall
time of each is compared with the baseline's and printed as a ratio. ``--check`` exits 1 unless
both ratios are at most 2.0 (the goal in issue 13).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

GOAL_RATIO = 2.0

CASES: dict[str, list[str]] = {
    "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    "cohortctl --help": [sys.executable, "-m", "cohortctl", "--help"],
    "cohortctl --version": [sys.executable, "-m", "cohortctl", "--version"],
}
BASELINE = "python -c 'import typer'"


def _time_once(argv: list[str]) -> float:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "80"}
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, float]:
    """Median seconds per case over ``rounds`` interleaved rounds (after one warm-up)."""
    for argv in CASES.values():
        _time_once(argv)  # warm the file cache and .pyc files
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, argv in CASES.items():
            samples[name].append(_time_once(argv))
    return {name: statistics.median(times) for name, times in samples.items()}


def main(argv: list[str] | None = None) -> int:
    """Print each case's median and its ratio to ``import typer``; exit 1 on --check miss."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a ratio > {GOAL_RATIO}")
    args = parser.parse_args(argv)

    medians = measure(args.rounds)
    base = medians[BASELINE]
    print(f"{'case':<28} {'median ms':>10} {'ratio':>7}")
    worst = 0.0
    for name, seconds in medians.items():
        ratio = seconds / base
        if name != BASELINE:
            worst = max(worst, ratio)
        print(f"{name:<28} {seconds * 1000:>10.1f} {ratio:>6.2f}x")
    print(f"goal: at most {GOAL_RATIO:.1f}x import typer; worst {worst:.2f}x")
    return 1 if args.check and worst > GOAL_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())

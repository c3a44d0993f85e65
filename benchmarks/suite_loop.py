"""Run the whole test suite N times in a row and report passes and failures per test.

Not part of CI: it is how "the suite passes 20 times in a row" is shown. Each run is
``pytest -p no:randomly`` in a fresh process (same order every time, so a failure that comes
and goes is the test's own timing, not its neighbours' order), with a JUnit XML file the
script reads back. At the end it prints every test that did not pass every time, the skips and
why, the time per run, and exits 1 if any run failed.

    python -m benchmarks.suite_loop              # 20 runs of the full suite
    python -m benchmarks.suite_loop --runs 5 tests/test_delivery.py -k ctrl_c
    python -m benchmarks.suite_loop --json       # the tally as JSON on stdout

On a shared machine, say how loaded it was: the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_once(junit: Path, pytest_args: list[str]) -> tuple[int, float]:
    """One pytest run writing ``junit``; its exit code and wall seconds."""
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
        f"--junitxml={junit}", *pytest_args,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return done.returncode, time.perf_counter() - started


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """Each test's outcome in one JUnit file: ``{id: (passed|failed|skipped, message)}``."""
    if not junit.exists():
        return {}
    results: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:200]
            elif child.tag == "skipped":
                outcome, message = "skipped", (child.get("message") or "")[:200]
        results[name] = (outcome, message)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the loop, print the tally; exit 1 if any run failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument("--json", action="store_true", help="print the tally as JSON")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (tests, -k ...)")
    args = parser.parse_args(argv)
    # Started in the background by a shell, this process may ignore SIGINT, and the runs would
    # inherit that: the tests that press Ctrl-C on a child would then fail for nothing.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    load_before = os.getloadavg()
    tally: dict[str, Counter[str]] = {}
    messages: dict[str, str] = {}
    codes: list[int] = []
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="suite-loop-") as scratch:
        for number in range(1, args.runs + 1):
            junit = Path(scratch) / f"run-{number}.xml"
            code, seconds = run_once(junit, args.pytest_args)
            codes.append(code)
            times.append(seconds)
            found = outcomes(junit)
            for name, (outcome, message) in found.items():
                tally.setdefault(name, Counter())[outcome] += 1
                if outcome != "passed" and message:
                    messages[name] = message
            failed = sum(1 for outcome, _ in found.values() if outcome == "failed")
            print(
                f"run {number}/{args.runs}: exit {code}, {len(found)} tests, {failed} failed, "
                f"{seconds:.0f} s",
                file=sys.stderr,
            )
    load_after = os.getloadavg()
    unstable = {n: dict(c) for n, c in sorted(tally.items()) if c["failed"]}
    skipped = {n: messages.get(n, "") for n, c in sorted(tally.items()) if c["skipped"]}
    summary: dict[str, Any] = {
        "runs": args.runs,
        "runs_ok": sum(1 for code in codes if code == 0),
        "tests": len(tally),
        "failing_tests": {
            n: {**c, "last_message": messages.get(n, "")} for n, c in unstable.items()
        },
        "skipped_tests": skipped,
        "run_s": {"min": round(min(times), 1), "max": round(max(times), 1)},
        "load_average": {"before": load_before, "after": load_after},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['runs_ok']} of {args.runs} runs passed; {len(tally)} tests")
        print(f"run time {summary['run_s']['min']}-{summary['run_s']['max']} s; load average "
              f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")  # fmt: skip
        for name, counts in summary["failing_tests"].items():
            print(f"FAILED {counts.get('failed', 0)}/{args.runs}  {name}: {counts['last_message']}")
        for name, why in skipped.items():
            print(f"skipped  {name}: {why}")
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

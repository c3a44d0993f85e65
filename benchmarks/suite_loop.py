"""Run the whole test suite N times in a row; stop at the first failing run and name it.

Not part of CI: it is how "the suite passes 20 times in a row" is shown. Each run is
``pytest -p no:randomly`` in a fresh process (same order every time, so a failure that comes
and goes is the test's own timing, not its neighbours' order), with a JUnit XML file the
script reads back. It stops at the first run that fails and names the run and the failing
tests (``--keep-going`` runs all N and tallies every failure). At the end it prints a summary:
runs passed, every test that did not pass every time, the skips and why, the time per run and
the load average before and after; exit 1 if any run failed.

    python -m benchmarks.suite_loop              # 20 runs of the full suite
    python -m benchmarks.suite_loop --runs 30 tests/test_delivery.py -k ctrl_c
    python -m benchmarks.suite_loop --keep-going --json   # every run; the tally as JSON

Options it does not know go to pytest.
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
    """Run the loop, print the summary; exit 1 if any run failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument(
        "--keep-going", action="store_true", help="run all N even after a failing run"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args, pytest_args = parser.parse_known_args(argv)
    # Started in the background by a shell, this process may ignore SIGINT, and the runs would
    # inherit that: the tests that press Ctrl-C on a child would then fail for nothing.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    load_before = os.getloadavg()
    tally: dict[str, Counter[str]] = {}
    messages: dict[str, str] = {}
    codes: list[int] = []
    times: list[float] = []
    first_failure: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="suite-loop-") as scratch:
        for number in range(1, args.runs + 1):
            junit = Path(scratch) / f"run-{number}.xml"
            code, seconds = run_once(junit, pytest_args)
            codes.append(code)
            times.append(seconds)
            found = outcomes(junit)
            for name, (outcome, message) in found.items():
                tally.setdefault(name, Counter())[outcome] += 1
                if outcome != "passed" and message:
                    messages[name] = message
            failed = sorted(name for name, (outcome, _) in found.items() if outcome == "failed")
            print(
                f"run {number}/{args.runs}: exit {code}, {len(found)} tests, {len(failed)} failed, "
                f"{seconds:.0f} s",
                file=sys.stderr,
            )
            if code != 0:
                why = [f"{name}: {messages.get(name, '')}" for name in failed]
                # no failing test: a collection error, a crash or an interruption (see the code)
                for line in why or [f"pytest exited {code} with no failing test"]:
                    print(f"  run {number} FAILED {line}", file=sys.stderr)
                if first_failure is None:
                    first_failure = {"run": number, "exit": code, "tests": failed}
                if not args.keep_going:
                    break
    load_after = os.getloadavg()
    done = len(codes)
    unstable = {n: dict(c) for n, c in sorted(tally.items()) if c["failed"]}
    skipped = {n: messages.get(n, "") for n, c in sorted(tally.items()) if c["skipped"]}
    summary: dict[str, Any] = {
        "runs": args.runs,
        "runs_done": done,
        "runs_ok": sum(1 for code in codes if code == 0),
        "first_failure": first_failure,
        "tests": len(tally),
        "failing_tests": {
            n: {**c, "last_message": messages.get(n, "")} for n, c in unstable.items()
        },
        "skipped_tests": skipped,
        "run_s": {"min": round(min(times), 1), "max": round(max(times), 1)} if times else None,
        "load_average": {"before": load_before, "after": load_after},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        stopped = f" (stopped after run {done})" if done < args.runs else ""
        print(f"{summary['runs_ok']} of {done} runs passed{stopped}; {len(tally)} tests")
        if first_failure is not None:
            tests = ", ".join(first_failure["tests"]) or f"pytest exit {first_failure['exit']}"
            print(f"first failure: run {first_failure['run']}: {tests}")
        if times:
            print(f"run time {min(times):.1f}-{max(times):.1f} s; load average "
                  f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")  # fmt: skip
        for name, counts in summary["failing_tests"].items():
            print(f"FAILED {counts.get('failed', 0)}/{done}  {name}: {counts['last_message']}")
        for name, why in skipped.items():
            print(f"skipped  {name}: {why}")
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

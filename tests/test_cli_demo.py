from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_both_sides_and_exits_0(cli) -> None:
    result = cli("demo", credentials=False)
    assert result.exit_code == 0, result
    assert "$ cohortctl upload" in result.stderr
    assert "$ cohortctl mock flow --mode list" in result.stderr
    assert "$ cohortctl mock flow --mode property" in result.stderr
    assert "demo complete" in result.stderr
    assert "matched / totals" in result.stdout
    assert "Demo power users" in result.stdout


def test_demo_as_a_user_runs_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMPLITUDE_", "COHORTCTL_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "cohortctl", "demo", "--side", "customer"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "demo complete" in proc.stderr

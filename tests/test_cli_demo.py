from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_both_sides_and_exits_0(cli) -> None:
    result = cli("demo", credentials=False)
    assert result.exit_code == 0, result
    # one stream, in order: each command, then what it printed
    out = result.stdout
    assert result.stderr == ""
    assert out.index("$ cohortctl upload") < out.index("matched / totals")
    assert out.index("matched / totals") < out.index("$ cohortctl cohorts list")
    assert out.index("$ cohortctl mock flow --mode list") < out.index("3 request(s): 3 passed")
    assert "$ cohortctl mock flow --mode property" in out
    assert "demo complete" in out and "Demo power users" in out
    # the closing block: commands that work once the demo's servers are gone
    assert "cohortctl serve amplitude --port 8600 &" in out
    assert "cohortctl serve partner --port 8080 &" in out


def test_demo_as_a_user_runs_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMPLITUDE_", "COHORTCTL_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "cohortctl", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "80"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "demo complete" in proc.stdout
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    echoed = [line for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert echoed and all(line.endswith(" \\") or len(line) < 78 for line in echoed)

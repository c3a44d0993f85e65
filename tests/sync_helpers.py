"""What the sync tests share (and benchmarks/sync.py): user ids, ID files, the command line
of a ``cohortctl sync`` run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.credentials import PARTNER_KEY

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
NAME, COHORT_ID = "Power Users", "c7"
COHORT = ["--cohort-name", NAME, "--cohort-id", COHORT_ID]


def users(start: int, stop: int) -> list[str]:
    """``user-000000`` ... : ``stop - start`` ids that sort in order."""
    return [f"user-{i:06d}" for i in range(start, stop)]


def write_ids(path: Path, ids: list[str]) -> Path:
    """``ids`` as a newline ID file at ``path``."""
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def sync_argv(
    snapshot: Path, url: str, *extra: str, name: str = NAME, cohort_id: str = COHORT_ID
) -> list[str]:
    """``python -m cohortctl sync SNAPSHOT --url URL --cohort-name … --cohort-id … EXTRA``."""
    return [
        sys.executable, "-m", "cohortctl", "sync", str(snapshot), "--url", url,
        "--cohort-name", name, "--cohort-id", cohort_id, *extra,
    ]  # fmt: skip


def start_sync(
    snapshot: Path, url: str, state: Path, *extra: str, name: str = NAME, cohort_id: str = COHORT_ID
) -> subprocess.Popen[str]:
    """A sync in its own process, 100 users per batch over 2 workers, output piped."""
    args = sync_argv(
        snapshot, url, "--state", str(state), "--batch-size", "100", "--workers", "2", *extra,
        name=name, cohort_id=cohort_id,
    )  # fmt: skip
    return subprocess.Popen(
        args, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

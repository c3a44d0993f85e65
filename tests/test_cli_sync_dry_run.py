"""``sync --dry-run`` shows every request the sync would send; ``--as-curl`` as curl commands
that run (credentials as $ENV references only)."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from cohortctl.partner import payloads
from cohortctl.partner.destination import AuthMode, Destination
from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync.dry_run import plan_cohort
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.settings import SyncMode, SyncSettings
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory
from tests.sync_helpers import COHORT, ENV, users, write_ids

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
HOOK = "hook-secret-7731"


def _blocks(stdout: str) -> list[str]:
    """The requests of a dry run, each from its ``# n/N`` line."""
    return ["# " + b for b in stdout.split("\n# ") if b.split(" ", 1)[0].count("/") == 1]


def _sync_args(tmp_path: Path, url: str, count: int) -> tuple[Path, Path, list[str]]:
    """A state file, a snapshot of ``count`` users, and the sync command line of both."""
    state = tmp_path / "state.sqlite"
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, count))
    return state, snapshot, ["sync", str(snapshot), "--url", url, *COHORT, "--state", str(state)]


def test_every_request_is_shown_whole_in_the_shared_format(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state, snapshot, args = _sync_args(tmp_path, partner_server.url, 2500)
    result = cli(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    blocks = _blocks(result.stdout)
    assert [b.splitlines()[0] for b in blocks] == [
        "# 1/4 list-create (0 users)",
        "# 2/4 list-add (1,000 users)",
        "# 3/4 list-add (1,000 users)",
        "# 4/4 list-add (500 users)",
    ]
    assert "> POST /lists/{listId}/add HTTP/1.1" in blocks[3]
    assert "> Authorization: Basic ***" in blocks[1] and PARTNER_KEY not in result.output
    for uid in users(0, 2500):  # every id, not a sample
        assert f'"{uid}"' in result.stdout
    assert "4 request(s) shown, nothing sent" in result.stderr
    assert not state.exists()

    # A delta against the state: the list id is known, both directions are shown whole.
    assert cli(*args, env=ENV).exit_code == 0
    write_ids(snapshot, users(100, 2600))
    delta = cli(*args, "--dry-run", "--batch-size", "60")
    titles = [b.splitlines()[0] for b in _blocks(delta.stdout)]
    assert titles == [
        "# 1/4 list-add (60 users)",
        "# 2/4 list-add (40 users)",
        "# 3/4 list-remove (60 users)",
        "# 4/4 list-remove (40 users)",
    ]
    assert "> POST /lists/1/remove HTTP/1.1" in delta.stdout


def test_json_keeps_the_plan_with_the_first_request_of_each_kind(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 2500))
    result = cli(
        "sync", str(snapshot), "--url", partner_server.url, *COHORT, "--dry-run", "-o", "json"
    )
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["dry_run"] is True
    (plan,) = data["cohorts"]
    assert plan["requests"] == 4
    assert [r["call"] for r in plan["first_requests"]] == ["list-create", "list-add"]


def test_the_requests_are_built_as_they_are_asked_for(tmp_path: Path) -> None:
    snapshot = write_ids(tmp_path / "c.txt", users(0, 5000))
    settings = SyncSettings(mode=SyncMode.list, state_path=tmp_path / "s.sqlite", batch_size=10)
    destination = Destination(base_url="http://127.0.0.1:9", auth=AuthMode.basic, api_key="k")
    plan = plan_cohort(destination, CohortSpec("C", "c1", str(snapshot)), settings)
    stream = plan.each_request()
    assert inspect.isgenerator(stream)  # a stream: a huge sync's bodies are never all held
    first, second = next(stream), next(stream)
    assert (first.call, second.call, second.users) == (payloads.LIST_CREATE, payloads.LIST_ADD, 10)
    assert plan.request_count == 501 and sum(1 for _ in stream) == 499


def _commands(stdout: str) -> list[str]:
    return ["\n".join(b.splitlines()[1:]).strip() for b in _blocks(stdout)]


def _run_all(commands: list[str], env: dict[str, str]) -> None:
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command + " --fail"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)


@needs_curl
def test_as_curl_prints_commands_that_bring_the_receiver_to_the_snapshot(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    _, snapshot, args = _sync_args(tmp_path, partner_server.url, 300)
    assert cli(*args, env=ENV).exit_code == 0
    write_ids(snapshot, users(100, 450))
    result = cli(*args, "--dry-run", "--as-curl", "--batch-size", "100", env=ENV)
    assert result.exit_code == 0, result.output
    assert PARTNER_KEY not in result.stdout
    assert '--user "$COHORTCTL_PARTNER_API_KEY:"' in result.stdout
    commands = _commands(result.stdout)
    assert len(commands) == 3  # 150 entered (2 batches), 100 left (1)
    _run_all(commands, {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY})
    members = httpx.get(f"{partner_server.url}/_cohortctl/lists/1").json()["members"]
    assert set(members) == set(users(100, 450))
    assert cli("sync", "--as-curl", str(snapshot), *COHORT).exit_code == 2


@needs_curl
def test_webhook_dry_run_shows_every_message_and_curl_reads_the_header_from_env(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 25))
    args = [
        "sync", str(snapshot), "--url", f"{server.url}/webhook", *COHORT, "--mode", "webhook",
        "-H", f"X-Hook:{HOOK}", "--batch-size", "10", "--state", str(tmp_path / "s.sqlite"),
    ]  # fmt: skip
    shown = cli(*args, "--dry-run")
    assert shown.exit_code == 0, shown.output
    titles = [b.splitlines()[0] for b in _blocks(shown.stdout)]
    assert titles == [
        "# 1/3 webhook (entering) (10 users)",
        "# 2/3 webhook (entering) (10 users)",
        "# 3/3 webhook (entering) (5 users)",
    ]
    assert HOOK not in shown.output and "::enter::2" in shown.stdout
    curl = cli(*args, "--dry-run", "--as-curl")
    assert HOOK not in curl.stdout and '"X-Hook: $COHORTCTL_HEADER_X_HOOK"' in curl.stdout
    _run_all(_commands(curl.stdout), {"COHORTCTL_HEADER_X_HOOK": HOOK})
    cohort = httpx.get(f"{server.url}/_cohortctl/webhooks/cohorts/c7").json()
    assert sorted(cohort["members"]) == users(0, 25)

"""``cohortctl sync`` end to end: the CLI against the embedded receiver on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync.state import SyncState, default_state_path, destination_key
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory
from tests.sync_helpers import COHORT, ENV, start_sync, users, write_ids


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def list_members(url: str, list_id: str = "1") -> set[str]:
    return set(get_json(f"{url}/_cohortctl/lists/{list_id}")["members"])


def journal(url: str) -> list[dict[str, Any]]:
    return get_json(f"{url}/_cohortctl/journal?limit=10000")["requests"]  # type: ignore[no-any-return]


def test_first_sync_then_delta(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    url = partner_server.url
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 3000))
    first = cli("sync", str(snapshot), "--url", url, *COHORT, env=ENV)
    assert first.exit_code == 0, first.output
    assert "added" in first.stdout and "3,000" in first.stdout
    assert "latency p50/p95/p99" in first.stdout and "throughput" in first.stdout
    write_ids(snapshot, users(500, 3500))
    second = cli("sync", str(snapshot), "--url", url, *COHORT, "-o", "json", env=ENV)
    assert second.exit_code == 0, second.output
    (cohort,) = json.loads(second.stdout)["cohorts"]
    assert (cohort["entered"], cohort["left"], cohort["added"], cohort["removed"]) == (
        500,
        500,
        500,
        500,
    )
    for key in ("requests", "retries", "failed_by", "latency_s", "duration_s", "users_per_s"):
        assert key in cohort["delivery"]
    assert set(cohort["delivery"]["latency_s"]) == {"p50", "p95", "p99"}
    assert list_members(url) == set(users(500, 3500))
    state_bytes = default_state_path().read_bytes()
    assert PARTNER_KEY.encode() not in state_bytes


def test_property_mode_with_batch_size(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    url = partner_server.url
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 1000))
    args = ("sync", str(snapshot), "--url", url, "--mode", "property", "--batch-size", "300")
    result = cli(*args, *COHORT, env=ENV)
    assert result.exit_code == 0, result.output
    sizes = [r["users"] for r in journal(url)]
    assert sorted(sizes) == [100, 300, 300, 300]
    assert {r["path"] for r in journal(url)} == {"/batch"}


def test_dry_run_sends_nothing_and_needs_no_key(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 2500))
    result = cli("sync", str(snapshot), "--url", partner_server.url, *COHORT, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "1 list-create, 3 list-add" in result.stdout
    assert '"userIds"' in result.stdout and "nothing sent" in result.stderr
    as_json = cli(
        "sync", str(snapshot), "--url", partner_server.url, *COHORT, "--dry-run", "-o", "json"
    )
    (plan,) = json.loads(as_json.stdout)["cohorts"]
    assert plan["calls"] == {"list-create": 1, "list-add": 3} and plan["requests"] == 4
    assert journal(partner_server.url) == []


def test_failed_batches_exit_1_with_a_report_and_a_retry_file(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    ids = users(0, 3000)
    known = frozenset(ids[:1000] + ids[2000:])  # batch 1 holds unknown users: 404
    server = partner_server_factory(api_key=PARTNER_KEY, known_users=known)
    snapshot = write_ids(tmp_path / "cohort.txt", ids)
    retry_file = tmp_path / "failed.txt"
    args = ("sync", str(snapshot), "--url", server.url, *COHORT, "--retry-file", str(retry_file))
    result = cli(*args, env=ENV)
    assert result.exit_code == 1, result.output
    assert "failed batches" in result.stdout and "list-add:1" in result.stdout
    assert "404" in result.stdout
    assert retry_file.read_text().split() == ids[1000:2000]
    assert PARTNER_KEY not in retry_file.read_text()


def test_plan_file_with_two_cohorts(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    write_ids(tmp_path / "a.txt", users(0, 1200))
    write_ids(tmp_path / "b.txt", users(100, 200))
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"destination:\n  url: {partner_server.url}\n  mode: list\n  batch_size: 500\n"
        "cohorts:\n  - {name: A, id: ca, snapshot: a.txt}\n  - {name: B, id: cb, snapshot: b.txt}\n"
    )
    result = cli("sync", "--plan", str(plan), "-o", "json", env=ENV)
    assert result.exit_code == 0, result.output
    cohorts = json.loads(result.stdout)["cohorts"]
    assert [(c["cohort"]["id"], c["added"]) for c in cohorts] == [("ca", 1200), ("cb", 100)]
    assert list_members(partner_server.url, "1") == set(users(0, 1200))
    assert list_members(partner_server.url, "2") == set(users(100, 200))
    assert max(r["users"] for r in journal(partner_server.url)) == 500


def test_every_repeats_with_a_bounded_run_count(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 100))
    args = ("sync", str(snapshot), "--url", partner_server.url, *COHORT)
    result = cli(*args, "--every", "10ms", "--max-runs", "3", env=ENV)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("next sync at") == 2
    assert result.stderr.count("sync run ") == 3
    assert len(journal(partner_server.url)) == 2  # list-create + add; later runs had no change


def test_verbose_shows_each_retry_and_its_delay(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, fail_rate=1.0, fail_status=503)
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 10))
    args = ("sync", str(snapshot), "--url", server.url, *COHORT, "-v", "--retries", "3")
    result = cli(*args, "--backoff-base", "0.001", env=ENV)
    assert result.exit_code == 1
    for n, delay in ((1, "0.001s"), (2, "0.002s"), (3, "0.004s")):
        assert f"retry {n} of list-create in {delay} after 503" in result.stderr


def test_help_states_retried_statuses_and_schedule(cli: RunCli) -> None:
    text = " ".join(cli("sync", "--help").stdout.split())
    assert "Retried: 429, every 5xx, and requests with no answer" in text
    assert "1, 2, 4, 8, 16, 32, 64, 128 s" in text
    assert "Not retried: 400, 401, 404" in text


def test_usage_errors_exit_2(cli: RunCli, tmp_path: Path) -> None:
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 10))
    assert cli("sync", str(snapshot), "--url", "http://127.0.0.1:1").exit_code == 2
    remote = cli("sync", str(snapshot), "--url", "http://example.com", *COHORT, env=ENV)
    assert remote.exit_code == 2 and "plain http" in remote.stderr
    wrong = cli(
        "sync", str(snapshot), "--url", "http://127.0.0.1:1", *COHORT, "--path", "/x", env=ENV
    )
    assert wrong.exit_code == 2
    missing = cli(
        "sync", str(tmp_path / "nope.txt"), "--url", "http://127.0.0.1:1", *COHORT, env=ENV
    )
    assert missing.exit_code == 2 and "file not found" in missing.stderr


def _wait_for_requests(url: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(journal(url)) < count:
        assert time.monotonic() < deadline, "the sync never got going"
        time.sleep(0.02)


def test_interrupted_and_killed_syncs_converge(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=15)
    ids = users(0, 20_000)
    snapshot = write_ids(tmp_path / "cohort.txt", ids)
    state_file = tmp_path / "state.sqlite"
    key = destination_key(server.url, "list", "c7")

    # Ctrl-C: the run is recorded as interrupted and the command exits 130.
    proc = start_sync(snapshot, server.url, state_file)
    _wait_for_requests(server.url, 20)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    with SyncState.open(state_file, key) as state:
        assert state.runs()[-1].status == "interrupted"
        confirmed = set(state.members())
    assert 0 < len(confirmed) < len(ids)
    assert confirmed <= list_members(server.url)

    # SIGTERM (a CI timeout, a container stop) is an interruption too.
    before = len(journal(server.url))
    proc = start_sync(snapshot, server.url, state_file)
    _wait_for_requests(server.url, before + 20)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    with SyncState.open(state_file, key) as state:
        assert state.runs()[-1].status == "interrupted"
        confirmed_after_term = set(state.members())
    assert confirmed <= confirmed_after_term < set(ids)
    assert confirmed_after_term <= list_members(server.url)
    confirmed = confirmed_after_term

    # A kill: no chance to clean up; whatever the state confirmed is at the receiver.
    before = len(journal(server.url))
    proc = start_sync(snapshot, server.url, state_file)
    _wait_for_requests(server.url, before + 20)
    proc.kill()
    proc.communicate(timeout=60)
    with SyncState.open(state_file, key) as state:
        confirmed_after_kill = set(state.members())
    assert confirmed <= confirmed_after_kill < set(ids)
    assert confirmed_after_kill <= list_members(server.url)

    # The next run sends what is missing and converges.
    result = cli(
        "sync",
        str(snapshot),
        "--url",
        server.url,
        *COHORT,
        "--state",
        str(state_file),
        "--workers",
        "8",
        "-o",
        "json",
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    (cohort,) = json.loads(result.stdout)["cohorts"]
    assert cohort["entered"] == len(ids) - len(confirmed_after_kill)
    assert list_members(server.url) == set(ids)
    creates = [r for r in journal(server.url) if r["path"] == "/lists"]
    assert len(creates) == 1

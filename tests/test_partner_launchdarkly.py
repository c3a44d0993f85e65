"""The launchdarkly profile against a reconstruction of LaunchDarkly's synced segments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver, TwoSyncs, write_ids
from tests.partners.launchdarkly import PATH, LaunchDarkly

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
ENVIRONMENT = "env-client-side-id-1"


def _check(cli: RunCli, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli(
        "check", "--destination", "launchdarkly", "--url", url, "--var",
        f"environment_id={ENVIRONMENT}", "--batch-size", "5", "--output", "json", *args, env=ENV,
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def _failed(data: dict[str, Any]) -> set[str]:
    return {c["name"] for c in data["cases"] if c["result"] == "fail"}


def test_check_passes_against_the_one_endpoint(cli: RunCli, receiver: Receiver) -> None:
    ld = LaunchDarkly(PARTNER_KEY, ENVIRONMENT)
    server = receiver(ld.app)
    code, data = _check(cli, server.url + PATH)
    assert code == 0, data
    by_name = {c["name"]: c for c in data["cases"]}
    wrong = by_name["identify-batch rejects a wrong api key"]
    assert wrong["result"] == "pass" and wrong["expected"].startswith("403 Unauthorized")
    assert by_name["identify-batch rejects a body without batch"]["result"] == "pass"
    assert all(r["url"] == server.url + PATH for c in data["cases"] for r in c["requests"])
    assert data["unclassified"] == []
    assert ld.segments[data["run_id"]] == set()  # every test user left again


def test_needs_the_environment_id(cli: RunCli, receiver: Receiver) -> None:
    server = receiver(LaunchDarkly(PARTNER_KEY, ENVIRONMENT).app)
    result = cli("check", "--destination", "launchdarkly", "--url", server.url + PATH, env=ENV)
    assert result.exit_code == 2
    assert "--var environment_id=VALUE" in result.stderr


def test_sync_20000_users_then_a_delta_ends_exact(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    ld = LaunchDarkly(PARTNER_KEY, ENVIRONMENT)
    server = receiver(ld.app)
    args = (
        "--destination", "launchdarkly", "--url", server.url + PATH,
        "--var", f"environment_id={ENVIRONMENT}",
    )  # fmt: skip
    syncs = TwoSyncs(cli, tmp_path, args, ENV, cohort_name='Power users "β"')
    syncs.sync(syncs.first)
    assert ld.segments["c1"] == set(syncs.first)
    assert ld.names["c1"] == 'Power users "β"'  # the name as is, not slugified
    delta = syncs.sync(syncs.second)
    assert (delta["added"], delta["removed"]) == (500, 700)
    assert ld.segments["c1"] == set(syncs.second)


def test_x_ratelimit_reset_is_honoured(cli: RunCli, receiver: Receiver, tmp_path: Path) -> None:
    ld = LaunchDarkly(PARTNER_KEY, ENVIRONMENT, rate_limit=1, window_s=0.3)
    server = receiver(ld.app)
    users = [f"user-{n}" for n in range(3_000)]
    snapshot = write_ids(tmp_path / "cohort.txt", users)
    result = cli(
        "sync", str(snapshot), "--destination", "launchdarkly", "--url", server.url + PATH,
        "--var", f"environment_id={ENVIRONMENT}", "--cohort-name", "C", "--cohort-id", "c1",
        "--state", str(tmp_path / "s.db"), "--output", "json", env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ld.throttled > 0 and ld.segments["c1"] == set(users)
    _code, data = _check(cli, server.url + PATH, "--burst", "6")
    throttling = next(c for c in data["cases"] if c["name"] == "throttling")
    assert throttling["result"] == "pass", throttling
    assert "X-Ratelimit-Reset" in throttling["actual"]


def test_broken_receivers_fail_the_right_cases(cli: RunCli, receiver: Receiver) -> None:
    any_key = receiver(LaunchDarkly(PARTNER_KEY, ENVIRONMENT, accept_any_key=True).app)
    code, data = _check(cli, any_key.url + PATH)
    assert code == 1 and _failed(data) == {"identify-batch rejects a wrong api key"}
    wrong_field = receiver(LaunchDarkly(PARTNER_KEY, ENVIRONMENT, batch_field="users").app)
    code, data = _check(cli, wrong_field.url + PATH)
    failed = _failed(data)
    assert code == 1
    assert {"identify-batch true accepted (5 users)", "identify-batch false accepted"} <= failed

"""The statsig profile against a reconstruction of Statsig's ID-list segment API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cohortctl.partner import destination_files
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver, TwoSyncs, write_ids
from tests.partners.statsig import Statsig

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}


def _check(cli: RunCli, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli(
        "check", "--destination", "statsig", "--url", url, "--list-id", "seg1",
        "--batch-size", "5", "--output", "json", *args, env=ENV,
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def _failed(data: dict[str, Any]) -> set[str]:
    return {c["name"] for c in data["cases"] if c["result"] == "fail"}


def test_check_passes_on_a_given_segment(cli: RunCli, receiver: Receiver) -> None:
    statsig = Statsig(PARTNER_KEY, segments={"seg1": {"kept"}})
    server = receiver(statsig.app)
    code, data = _check(cli, server.url)
    assert code == 0, data
    by_name = {c["name"]: c for c in data["cases"]}
    assert by_name["list-create accepted"]["result"] == "skip"
    assert by_name["list-add rejects a body without ids"]["result"] == "pass"
    assert by_name["list-add rejects an unknown list"]["expected"].startswith("404")
    methods = {r["method"] for c in data["cases"] for r in c["requests"]}
    assert methods == {"PATCH", "DELETE"}
    assert statsig.segments["seg1"] == {"kept"}  # test users removed, the rest untouched


def test_no_create_call_needs_a_list_id(cli: RunCli, receiver: Receiver) -> None:
    server = receiver(Statsig(PARTNER_KEY, segments={"seg1": set()}).app)
    result = cli("check", "--destination", "statsig", "--url", server.url, env=ENV)
    assert result.exit_code == 2 and "--list-id" in result.stderr


def test_sync_20000_users_then_a_delta_ends_exact_within_the_rate_limit(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    statsig = Statsig(PARTNER_KEY, segments={"seg1": set()})
    server = receiver(statsig.app)
    args = ("--destination", "statsig", "--url", server.url, "--list-id", "seg1")
    syncs = TwoSyncs(cli, tmp_path, args, ENV)
    report = syncs.sync(syncs.first)
    assert (report["list_id"], report["list_source"], report["list_created"]) == (
        "seg1", "given", False,
    )  # fmt: skip
    assert statsig.segments["seg1"] == set(syncs.first)
    syncs.sync(syncs.second)
    assert statsig.segments["seg1"] == set(syncs.second)
    assert statsig.throttled == 0 and statsig.requests <= 12


def test_broken_receivers_fail_the_right_cases(cli: RunCli, receiver: Receiver) -> None:
    any_key = receiver(Statsig(PARTNER_KEY, segments={"seg1": set()}, accept_any_key=True).app)
    code, data = _check(cli, any_key.url)
    assert code == 1 and _failed(data) == {"list-add rejects a wrong api key"}
    wrong = receiver(Statsig(PARTNER_KEY, segments={"seg1": set()}, ids_field="userIds").app)
    code, data = _check(cli, wrong.url)
    assert code == 1 and {"list-add accepted", "list-remove accepted"} <= _failed(data)


def test_rate_limit_keeps_a_sync_under_the_receivers_limit(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    # The receiver allows 3 requests per 0.25 s; the file paces to 3 per 0.5 s.
    statsig = Statsig(PARTNER_KEY, segments={"seg1": set()}, rate_limit=3, window_s=0.25)
    server = receiver(statsig.app)
    file = tmp_path / "statsig-fast.yaml"
    text = destination_files.builtin_text("statsig").replace(
        "rate_limit: {requests: 10, seconds: 10}", "rate_limit: {requests: 3, seconds: 0.5}"
    )
    file.write_text(text, encoding="utf-8")
    users = [f"user-{n}" for n in range(800)]
    snapshot = write_ids(tmp_path / "cohort.txt", users)
    result = cli(
        "sync", str(snapshot), "--destination", str(file), "--url", server.url,
        "--list-id", "seg1", "--batch-size", "100", "--cohort-name", "C", "--cohort-id", "c1",
        "--state", str(tmp_path / "s.db"), env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert statsig.segments["seg1"] == set(users)
    assert statsig.throttled == 0 and statsig.requests == 8

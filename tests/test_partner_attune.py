"""A destination file for a receiver whose create answers no list id (list_id_path: none)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.attune import BASE, Attune
from tests.partners.fixtures import HERE, Receiver, TwoSyncs

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
FILE = str(HERE / "attune.yaml")


def test_check_and_flow_need_no_list_id(cli: RunCli, receiver: Receiver) -> None:
    attune = Attune(PARTNER_KEY)
    server = receiver(attune.app)
    result = cli("check", "--destination", FILE, "--url", server.url + BASE,
                 "--batch-size", "4", "-o", "json", env=ENV)  # fmt: skip
    data = json.loads(result.stdout)
    assert result.exit_code == 0, data
    by_name = {c["name"]: c for c in data["cases"]}
    assert by_name["list-create accepted"]["result"] == "pass"
    assert by_name["list-add rejects a body without user_ids"]["result"] == "pass"
    assert by_name["list-add rejects an unknown list"]["result"] == "skip"
    assert attune.cohorts[data["run_id"]] == set()
    result = cli("mock", "flow", "--destination", FILE, "--url", server.url + BASE,
                 "--cohort-id", "c9", "-o", "json", env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["call"] for r in json.loads(result.stdout)["results"]] == [
        "list-create", "list-add", "list-remove",
    ]  # fmt: skip
    assert attune.cohorts["c9"] == {"mock-user-2", "mock-user-3"}


def test_sync_20000_users_then_a_delta_ends_exact(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    attune = Attune(PARTNER_KEY)
    server = receiver(attune.app)
    syncs = TwoSyncs(cli, tmp_path, ("--destination", FILE, "--url", server.url + BASE), ENV)
    report = syncs.sync(syncs.first)
    assert (report["list_created"], report["list_source"], report["list_id"]) == (
        True, "none", None,
    )  # fmt: skip
    assert attune.cohorts["c1"] == set(syncs.first) and attune.names["c1"] == "Power users"
    delta = syncs.sync(syncs.second)
    assert (delta["list_created"], delta["added"], delta["removed"]) == (False, 500, 700)
    assert attune.cohorts["c1"] == set(syncs.second)

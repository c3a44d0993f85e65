"""The flagsmith profile against a reconstruction of Flagsmith's receiver (partners.md)."""

from __future__ import annotations

import json
from pathlib import Path

from cohortctl.partner import destination_files
from cohortctl.partner.classify import NO_SUCH_ROUTE
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver, TwoSyncs, write_ids
from tests.partners.flagsmith import BASE, Flagsmith

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}


def _check(cli: RunCli, url: str, *args: str) -> tuple[int, dict]:
    result = cli(
        "check", "--destination", "flagsmith", "--url", url, "--batch-size", "5",
        "--output", "json", *args, env=ENV,
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def _failed(data: dict) -> dict[str, dict]:
    return {c["name"]: c for c in data["cases"] if c["result"] == "fail"}


def test_check_passes_with_no_other_flag(cli: RunCli, receiver: Receiver) -> None:
    flagsmith = Flagsmith(PARTNER_KEY)
    server = receiver(flagsmith.app)
    code, data = _check(cli, server.url + BASE)
    assert code == 0, _failed(data)
    names = {c["name"] for c in data["cases"]}
    assert "list-add rejects a body without user_ids" in names
    # Flagsmith's answer holds the id flat only: a warning naming the shape both readers take.
    assert any('"response": {"list_id": "L"}' in w for w in data["warnings"])
    assert flagsmith.members[data["list_id"]] == set()


def test_check_fails_list_id_only_answer_without_the_profile(
    cli: RunCli, receiver: Receiver
) -> None:
    server = receiver(Flagsmith(PARTNER_KEY).app)
    result = cli(
        "check", "--url", server.url + BASE, "--auth", "bearer", "--create-path", "/lists/",
        "--add-path", "/lists/$listId/add/", "--remove-path", "/lists/$listId/remove/",
        "--batch-size", "3", "--output", "json", env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    create = _failed(data)["list-create accepted"]
    assert "only under 'list_id'" in create["detail"] and "reads 'listId'" in create["detail"]
    assert "list_id_path: list_id" in create["detail"]


def test_sync_20000_users_then_a_delta_ends_exact(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    flagsmith = Flagsmith(PARTNER_KEY)
    server = receiver(flagsmith.app)
    args = ("--destination", "flagsmith", "--url", server.url + BASE)
    syncs = TwoSyncs(cli, tmp_path, args, ENV)
    data = syncs.sync(syncs.first)
    list_id = data["list_id"]
    assert data["list_source"] == "created"
    assert flagsmith.names[list_id] == "[Amplitude] Power users: c1"
    assert flagsmith.members[list_id] == set(syncs.first)
    delta = syncs.sync(syncs.second)
    assert (delta["added"], delta["removed"], delta["list_created"]) == (500, 700, False)
    assert flagsmith.members[list_id] == set(syncs.second)


def test_broken_receivers_fail_the_right_cases(cli: RunCli, receiver: Receiver) -> None:
    any_key = receiver(Flagsmith(PARTNER_KEY, accept_any_key=True, newer=True).app)
    code, data = _check(cli, any_key.url + BASE)
    assert code == 1
    assert set(_failed(data)) == {"list-add rejects a wrong api key"}
    wrong_field = receiver(Flagsmith(PARTNER_KEY, users_field="userIds", newer=True).app)
    code, data = _check(cli, wrong_field.url + BASE)
    failed = _failed(data)
    assert code == 1 and "list-add accepted" in failed
    assert failed["list-add accepted"]["actual"].startswith("400 Invalid request")
    assert "list-remove accepted" in failed


def test_missing_slash_and_wrong_base_are_named(cli: RunCli, receiver: Receiver) -> None:
    server = receiver(Flagsmith(PARTNER_KEY).app)
    result = cli(
        "mock", "list-create", "--destination", "flagsmith", "--url", server.url + BASE,
        "--path", "/lists", "-o", "json", env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    meaning = json.loads(result.stdout)["results"][0]["meaning"]
    assert meaning.startswith("redirect (301) to /api/v1/cohort-sync/amplitude/lists/: add a")
    result = cli("mock", "list-create", "--destination", "flagsmith", "--url", server.url,
                 "-o", "json", env=ENV)  # fmt: skip
    assert result.exit_code == 1
    assert json.loads(result.stdout)["results"][0]["meaning"] == NO_SUCH_ROUTE


def test_a_list_deleted_on_the_flagsmith_side_is_named_and_recreated(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    flagsmith = Flagsmith(PARTNER_KEY)
    server = receiver(flagsmith.app)
    snapshot = write_ids(tmp_path / "cohort.txt", [f"user-{n}" for n in range(50)])
    args = (
        "sync", str(snapshot), "--destination", "flagsmith", "--url", server.url + BASE,
        "--cohort-name", "C", "--cohort-id", "c1", "--state", str(tmp_path / "s.db"),
        "--output", "json", "--retries", "0",
    )  # fmt: skip
    first = json.loads(cli(*args, env=ENV).stdout)["cohorts"][0]["list_id"]
    flagsmith.delete_list(first)
    write_ids(snapshot, [f"user-{n}" for n in range(60)])
    result = cli(*args, env=ENV)
    assert result.exit_code == 1
    report = json.loads(result.stdout)["cohorts"][0]
    assert report["lost_list"] == first
    assert report["failures"][0]["meaning"].startswith("List not found")
    result = cli(*args, "--recreate-list", env=ENV)
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)["cohorts"][0]["list_id"]
    assert second != first and len(flagsmith.members[second]) == 60


def test_wait_takes_the_destination_url(cli: RunCli, receiver: Receiver, tmp_path: Path) -> None:
    server = receiver(Flagsmith(PARTNER_KEY).app)
    file = tmp_path / "d.yaml"
    text = destination_files.builtin_text("flagsmith").replace(
        "url: https://api.flagsmith.com/api/v1/cohort-sync/amplitude", f"url: {server.url}{BASE}"
    )
    file.write_text(text, encoding="utf-8")
    result = cli("wait", "--destination", str(file), "--timeout", "5s", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["url"] == server.url + BASE

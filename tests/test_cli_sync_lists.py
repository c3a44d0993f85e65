"""A partner that lost its list: the report says so, ``--recreate-list`` brings it back."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cohortctl.partner import payloads
from cohortctl.servers.partner.app import ReceiverSettings, create_app
from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync.state import SyncState, destination_key
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.sync_helpers import COHORT, ENV, users, write_ids


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def receiver(port: int = 0) -> BackgroundServer:
    """A fresh receiver (in-memory: a restart forgets every list)."""
    settings = ReceiverSettings(api_key=PARTNER_KEY)
    return BackgroundServer(lambda: create_app(settings), port=port).start()


def test_recreate_list_after_the_receiver_lost_its_lists(cli: RunCli, tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    snapshot = tmp_path / "cohort.txt"
    snapshot.write_text("\n".join(users(0, 3000)) + "\n", encoding="utf-8")
    args = ["sync", str(snapshot), *COHORT, "--state", str(state), "--batch-size", "500"]
    first_server = receiver()
    port = first_server.port
    url = first_server.url
    try:
        assert cli(*args, "--url", url, env=ENV).exit_code == 0
    finally:
        first_server.stop()
    key = destination_key(url, "list", "c7")
    with SyncState.open(state, key) as opened:
        old_list = opened.list_id
    assert old_list is not None

    server = receiver(port)  # restarted without its lists
    try:
        snapshot.write_text("\n".join(users(500, 3500)) + "\n", encoding="utf-8")
        lost = cli(*args, "--url", url, "-o", "json", env=ENV)
        assert lost.exit_code == 1, lost.output
        (cohort,) = json.loads(lost.stdout)["cohorts"]
        assert cohort["lost_list"] == old_list
        assert f"the partner no longer has list {old_list}" in cohort["error"]
        assert "--recreate-list" in cohort["error"]
        table = cli(*args, "--url", url, env=ENV)
        assert "no longer has list" in table.stdout and "--recreate-list" in table.stdout

        # Another list takes the next id, so the recreated list's id differs from the old.
        other = urllib.request.Request(
            f"{url}/lists",
            data=json.dumps(payloads.list_create("Other", "zz")).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(f"{PARTNER_KEY}:".encode()).decode(),
            },
        )
        with urllib.request.urlopen(other, timeout=30) as response:
            assert json.loads(response.read())["listId"]
        again = cli(*args, "--url", url, "--recreate-list", "-o", "json", env=ENV)
        assert again.exit_code == 0, again.output
        (cohort,) = json.loads(again.stdout)["cohorts"]
        assert cohort["list_created"] is True and cohort["lost_list"] is None
        new_list = cohort["list_id"]
        assert new_list != old_list
        assert cohort["entered"] == 3000 and cohort["left"] == 0
        members = get_json(f"{url}/_cohortctl/lists/{new_list}")["members"]
        assert sorted(members) == users(500, 3500)
        with SyncState.open(state, key) as opened:
            assert opened.list_id == new_list
            assert sorted(opened.members()) == users(500, 3500)
        # From now on, ordinary deltas go to the new list.
        snapshot.write_text("\n".join(users(600, 3600)) + "\n", encoding="utf-8")
        delta = cli(*args, "--url", url, "-o", "json", env=ENV)
        (cohort,) = json.loads(delta.stdout)["cohorts"]
        assert (cohort["entered"], cohort["left"], cohort["list_id"]) == (100, 100, new_list)
        members = get_json(f"{url}/_cohortctl/lists/{new_list}")["members"]
        assert sorted(members) == users(600, 3600)
    finally:
        server.stop()


@dataclass
class Synced:
    """A receiver that got a first sync of 100 users, and that sync's command line."""

    server: BackgroundServer
    state: Path
    snapshot: Path
    args: list[str]


@pytest.fixture
def synced(cli: RunCli, tmp_path: Path) -> Iterator[Synced]:
    state, snapshot = tmp_path / "state.sqlite", write_ids(tmp_path / "cohort.txt", users(0, 100))
    server = receiver()
    try:
        args = ["sync", str(snapshot), *COHORT, "--state", str(state), "--url", server.url]
        assert cli(*args, env=ENV).exit_code == 0
        yield Synced(server, state, snapshot, args)
    finally:
        server.stop()


def test_a_failed_create_keeps_the_old_list(cli: RunCli, synced: Synced) -> None:
    server, state, args = synced.server, synced.state, synced.args
    key = destination_key(server.url, "list", "c7")
    with SyncState.open(state, key) as opened:
        old_list = opened.list_id
    bad = cli(*args, "--recreate-list", "--create-path", "/nowhere", env=ENV)
    assert bad.exit_code == 1, bad.output
    with SyncState.open(state, key) as opened:
        assert opened.list_id == old_list
        assert opened.member_count() == 100


def test_recreate_list_is_for_list_mode(cli: RunCli, tmp_path: Path) -> None:
    snapshot = tmp_path / "cohort.txt"
    snapshot.write_text("u1\n", encoding="utf-8")
    result = cli(
        "sync",
        str(snapshot),
        *COHORT,
        "--url",
        "http://127.0.0.1:1",
        "--mode",
        "property",
        "--recreate-list",
        env=ENV,
    )
    assert result.exit_code == 2 and "--recreate-list is for list mode" in result.stderr


def test_dry_runs_write_nothing_and_show_the_recreated_list(cli: RunCli, synced: Synced) -> None:
    state, snapshot, args = synced.state, synced.snapshot, synced.args
    snapshot.write_text("\n".join(users(50, 150)) + "\n", encoding="utf-8")
    before = cli("state", "list", "--state", str(state), "--output", "json").stdout
    plain = cli(*args, "--dry-run", "-o", "json", env=ENV)
    (plan,) = json.loads(plain.stdout)["cohorts"]
    assert (plan["entered"], plan["left"], plan["list_id"]) == (50, 50, "1")
    other = cli(*args, "--cohort-id", "c8", "--dry-run", env=ENV)
    assert other.exit_code == 0
    recreate = cli(*args, "--dry-run", "--recreate-list", "-o", "json", env=ENV)
    (plan,) = json.loads(recreate.stdout)["cohorts"]
    assert (plan["entered"], plan["left"], plan["list_id"]) == (100, 0, None)
    assert "list-create" in plan["calls"]
    after = cli("state", "list", "--state", str(state), "--output", "json").stdout
    assert after == before  # no entry for c8, nothing folded or changed

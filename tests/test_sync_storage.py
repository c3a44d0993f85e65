"""State files you can trust: damaged, foreign, newer and old files, through ``cohortctl sync``."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from cohortctl.errors import StateFileError
from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync import storage
from cohortctl.sync.state import SyncState, destination_key
from tests.conftest import CliResult, RunCli
from tests.sync_helpers import COHORT, ENV, users, write_ids


def real_state(path: Path, url: str = "http://127.0.0.1:1", n: int = 30_000) -> str:
    """A state file with ``n`` confirmed members of cohort c7 (several pages of blobs)."""
    key = destination_key(url, "list", "c7")
    with SyncState.open(path, key) as state:
        state.set_list_id("1")
        state.confirm_added(users(0, n))
        state.fold()
    return key


def sync(cli: RunCli, snapshot: Path, url: str, state: Path, *extra: str) -> CliResult:
    return cli("sync", str(snapshot), "--url", url, *COHORT, "--state", str(state), *extra, env=ENV)


def assert_refused(
    cli: RunCli, tmp_path: Path, server: BackgroundServer, state: Path, words: str
) -> str:
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 10))
    before = state.read_bytes() if state.exists() else None
    result = cli(
        "sync", str(snapshot), "--url", server.url, *COHORT, "--state", str(state), env=ENV
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(state) in lines[0] and words in lines[0], lines[0]
    # Nothing was sent, and the file was not touched.
    journal = server_journal(server)
    assert journal == []
    if before is not None:
        assert state.read_bytes() == before
    return lines[0]


def server_journal(server: BackgroundServer) -> list[object]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/_cohortctl/journal?limit=100", timeout=30) as r:
        return json.loads(r.read())["requests"]  # type: ignore[no-any-return]


def test_new_state_carries_application_id_and_version(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.sqlite"
    storage.connect(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == storage.APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    conn.close()


def test_zero_length_file_is_new_state(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"")
    with SyncState.open(path, "k") as state:
        assert state.member_count() == 0
    assert path.stat().st_size > 0


def test_state_check_agrees_with_sync_on_a_zero_length_file(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"")
    check = cli("state", "check", "--state", str(state))
    assert check.exit_code == 0, check.output
    assert "empty" in check.stdout and "new state" in check.stdout
    as_json = json.loads(cli("state", "check", "--state", str(state), "--output", "json").stdout)
    assert as_json["ok"] is True and as_json["empty"] is True and as_json["destinations"] == 0
    assert state.read_bytes() == b""  # looking writes nothing
    snapshot = write_ids(tmp_path / "c.txt", users(0, 10))
    assert sync(cli, snapshot, partner_server.url, state).exit_code == 0  # and sync agrees


def test_missing_file_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="no such file"):
        storage.connect(tmp_path / "nope.sqlite", create=False)


def test_random_bytes(cli: RunCli, tmp_path: Path, partner_server: BackgroundServer) -> None:
    state = tmp_path / "state.sqlite"
    state.write_bytes(random.Random(1).randbytes(50_000))
    assert_refused(cli, tmp_path, partner_server, state, "not a cohortctl state file")


def test_truncated_file(cli: RunCli, tmp_path: Path, partner_server: BackgroundServer) -> None:
    state = tmp_path / "state.sqlite"
    real_state(state, partner_server.url)
    data = state.read_bytes()
    for size in (50, len(data) // 2):
        state.write_bytes(data[:size])
        assert_refused(cli, tmp_path, partner_server, state, "damaged")


def test_garbage_written_mid_file(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state = tmp_path / "state.sqlite"
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 100_000))
    first = sync(cli, snapshot, partner_server.url, state, "--batch-size", "5000")
    assert first.exit_code == 0, first.output
    data = state.read_bytes()
    assert len(data) > 1_000_000
    for where in (0.25, 0.5, 0.75):
        damaged = tmp_path / f"damaged-{where}.sqlite"
        offset = int(len(data) * where)
        garbage = random.Random(offset).randbytes(20_000)
        damaged.write_bytes(data[:offset] + garbage + data[offset + len(garbage) :])
        result = sync(cli, snapshot, partner_server.url, damaged)
        assert result.exit_code == 2, (where, result.output)
        assert str(damaged) in result.stderr and "damaged" in result.stderr


def test_foreign_sqlite_databases(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    plain = tmp_path / "plain.sqlite"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    assert_refused(cli, tmp_path, partner_server, plain, "not a cohortctl state file")

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("PRAGMA application_id=1234")
    conn.execute("CREATE TABLE destinations (x)")
    conn.commit()
    conn.close()
    line = assert_refused(cli, tmp_path, partner_server, other, "another program")
    assert "0x4d2" in line


def test_dropped_tables_are_damage_not_fresh_state(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state = tmp_path / "state.sqlite"
    real_state(state, partner_server.url)
    conn = sqlite3.connect(state)
    conn.execute("DROP TABLE segments")
    conn.commit()
    conn.close()
    line = assert_refused(cli, tmp_path, partner_server, state, "missing tables: segments")
    assert "move it away" in line


def test_newer_version(cli: RunCli, tmp_path: Path, partner_server: BackgroundServer) -> None:
    state = tmp_path / "state.sqlite"
    real_state(state, partner_server.url)
    conn = sqlite3.connect(state)
    conn.execute(f"PRAGMA user_version={storage.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    line = assert_refused(cli, tmp_path, partner_server, state, "newer cohortctl")
    assert "upgrade cohortctl" in line


def test_dry_run_and_state_check_refuse_too(cli: RunCli, tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"hello, not a database\n" * 10)
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 10))
    result = sync(cli, snapshot, "http://127.0.0.1:1", state, "--dry-run")
    assert result.exit_code == 2 and "not a cohortctl state file" in result.stderr


def test_files_from_before_the_application_id_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    conn = sqlite3.connect(path)
    schema = storage.SCHEMA.replace("    planned INTEGER,\n    batch INTEGER\n", "    x INTEGER\n")
    conn.executescript(schema.replace("x INTEGER", "ids2 TEXT"))
    conn.execute("INSERT INTO destinations(key, list_id, created_at) VALUES ('k', '9', 0)")
    conn.execute("INSERT INTO journal(dest, op, n, ids) VALUES (1, 1, 2, 'a\nb')")
    conn.commit()
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0
    conn.close()
    with SyncState.open(path, "k", quick_check=True) as state:
        assert state.list_id == "9"
        assert sorted(state.members()) == ["a", "b"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == storage.APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    conn.close()


def test_a_file_wedged_by_two_runs_at_once_is_repaired(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    """The old bug: run B discarded run A's plan while A still confirmed batches of it."""
    import json

    state_file = tmp_path / "state.sqlite"
    key = destination_key(partner_server.url, "list", "c7")
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 500))
    first = sync(cli, snapshot, partner_server.url, state_file, "--batch-size", "100")
    assert first.exit_code == 0
    with SyncState.open(state_file, key) as state:
        plan = state.plan_batches(1, users(500, 800), 100)
        state.confirm_planned([ref for _, ref in plan.batches()][:2])
        state.confirm_added(users(900, 910))  # a confirmation that does not need the plan
    conn = sqlite3.connect(state_file)
    conn.execute("DELETE FROM planned")  # what the second run's discard_plans did
    conn.commit()
    conn.close()

    write_ids(snapshot, users(0, 1000))
    result = sync(cli, snapshot, partner_server.url, state_file, "-o", "json")
    assert result.exit_code == 0, result.output
    assert "repaired the state file" in result.stderr
    (cohort,) = json.loads(result.stdout)["cohorts"]
    assert cohort["repaired_batches"] == 2
    # The 500 confirmed by the first run and the 10 without the plan stay confirmed.
    assert cohort["entered"] == 490
    with SyncState.open(state_file, key) as state:
        assert set(state.members()) == set(users(0, 1000))
    again = sync(cli, snapshot, partner_server.url, state_file, "-o", "json")
    (cohort,) = json.loads(again.stdout)["cohorts"]
    assert cohort["entered"] == cohort["left"] == cohort["repaired_batches"] == 0


def test_unreadable_state_is_one_line(cli: RunCli, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file: permissions cannot make it unreadable")
    state = tmp_path / "state.sqlite"
    real_state(state)
    state.chmod(0)
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 10))
    result = sync(cli, snapshot, "http://127.0.0.1:1", state)
    assert result.exit_code == 2 and "Permission denied" in result.stderr


def test_garbage_anywhere_in_a_file_left_by_a_real_sync(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    """A first sync at the default batch size leaves the state as a user's would be.

    Its planned batches were dropped after the run: the pages they freed must not be where
    garbage goes unnoticed, and damage inside the member blobs (which ``quick_check`` does
    not read) is found too. Every refusal is one line on stderr and nothing else.
    """
    state = tmp_path / "state.sqlite"
    snapshot = write_ids(tmp_path / "cohort.txt", users(0, 20_000))
    first = sync(cli, snapshot, partner_server.url, state)
    assert first.exit_code == 0, first.output
    data = state.read_bytes()
    sent = len(server_journal(partner_server))
    for tenth in range(1, 10):
        damaged = tmp_path / f"damaged-{tenth}.sqlite"
        offset = len(data) * tenth // 10
        garbage = random.Random(tenth).randbytes(20_000)
        damaged.write_bytes(data[:offset] + garbage + data[offset + len(garbage) :])
        result = sync(cli, snapshot, partner_server.url, damaged)
        assert result.exit_code == 2, (tenth, result.output)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (tenth, result.stderr)
        assert str(damaged) in lines[0] and "damaged" in lines[0], lines[0]
        checked = cli("state", "check", "--state", str(damaged))
        assert checked.exit_code == 2 and len(checked.stderr.strip().splitlines()) == 1
    assert len(server_journal(partner_server)) == sent

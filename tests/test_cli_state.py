"""``cohortctl state``: list, show, export, forget and check a real state file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync import lock
from cohortctl.sync.state import SyncState, destination_key
from tests.conftest import RunCli, cli_into_a_full_stdout, cli_process
from tests.credentials import PARTNER_KEY

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}


URL = "http://127.0.0.1:9"
KEY = destination_key(URL, "list", "c9")


def users(start: int, stop: int) -> list[str]:
    return [f"user-{i:06d}" for i in range(start, stop)]


def holding(tmp_path: Path, ids: list[str]) -> Path:
    """A state file in which ``KEY`` (list c9 at ``URL``) has confirmed ``ids``."""
    state = tmp_path / "state.sqlite"
    with SyncState.open(state, KEY) as opened:
        opened.confirm_added(ids)
    return state


def where(state: Path) -> list[str]:
    """The options naming ``KEY`` in ``state``."""
    return ["--state", str(state), "--url", URL, "--cohort-id", "c9"]


def synced(cli: RunCli, tmp_path: Path, url: str, state: Path) -> None:
    for cohort_id, mode, ids in (("c1", "list", users(0, 300)), ("c2", "property", users(0, 50))):
        snapshot = tmp_path / f"{cohort_id}.txt"
        snapshot.write_text("\n".join(ids) + "\n", encoding="utf-8")
        result = cli(
            "sync",
            str(snapshot),
            "--url",
            url,
            "--mode",
            mode,
            "--cohort-name",
            cohort_id,
            "--cohort-id",
            cohort_id,
            "--state",
            str(state),
            env=ENV,
        )
        assert result.exit_code == 0, result.output


def test_list_show_export_forget_check(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state = tmp_path / "state.sqlite"
    url = partner_server.url
    synced(cli, tmp_path, url, state)

    listed = cli("state", "list", "--state", str(state), "--output", "json")
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)["entries"]
    assert [(e["cohort_id"], e["mode"], e["members"]) for e in entries] == [
        ("c1", "list", 300),
        ("c2", "property", 50),
    ]
    assert entries[0]["url"] == url and entries[0]["list_id"] == "1"
    assert entries[1]["list_id"] is None
    assert entries[0]["last_run"]["outcome"] == "ok"
    table = cli("state", "list", "--state", str(state))
    assert "c1" in table.stdout and "300" in table.stdout and "ok" in table.stdout

    # Any spelling of the URL sync accepts finds the entry.
    show = cli(
        "state", "show", "--url", url + "/", "--cohort-id", "c1", "--state", str(state),
        "--output", "json",
    )  # fmt: skip
    assert show.exit_code == 0, show.output
    shown = json.loads(show.stdout)
    assert shown["members"] == 300 and len(shown["runs"]) == 1
    assert shown["runs"][0]["added"] == 300

    out_file = tmp_path / "held.txt"
    exported = cli(
        "state", "export", "--url", url, "--cohort-id", "c1", "-o", str(out_file),
        "--state", str(state),
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert sorted(out_file.read_text().split()) == users(0, 300)

    checked = cli("state", "check", "--state", str(state), "--output", "json")
    assert checked.exit_code == 0 and json.loads(checked.stdout)["ok"] is True

    forgot = cli("state", "forget", "--url", url, "--cohort-id", "c1", "--state", str(state))
    assert forgot.exit_code == 0, forgot.output
    after = json.loads(cli("state", "list", "--state", str(state), "--output", "json").stdout)
    assert [e["cohort_id"] for e in after["entries"]] == ["c2"]
    missing = cli("state", "show", "--url", url, "--cohort-id", "c1", "--state", str(state))
    assert missing.exit_code == 2 and "nothing stored" in missing.stderr


def test_members_count_what_is_confirmed_but_not_yet_folded(tmp_path: Path, cli: RunCli) -> None:
    state = tmp_path / "state.sqlite"
    key = destination_key("http://127.0.0.1:9/", "list", "c9")
    with SyncState.open(state, key) as opened:
        opened.confirm_added(users(0, 10))
        opened.fold()
        plan = opened.plan_batches(1, users(10, 30), 5)
        opened.confirm_planned([ref for _, ref in plan.batches()][:3])
        opened.confirm_removed(users(0, 2))
    listed = cli("state", "list", "--state", str(state), "--output", "json")
    (entry,) = json.loads(listed.stdout)["entries"]
    assert entry["members"] == 10 + 15 - 2
    out_file = tmp_path / "held.txt"
    cli(
        "state", "export", "--url", "http://127.0.0.1:9", "--cohort-id", "c9",
        "-o", str(out_file), "--state", str(state),
    )  # fmt: skip
    assert sorted(out_file.read_text().split()) == sorted(users(2, 10) + users(10, 25))


def test_forget_while_a_sync_holds_the_cohort_exits_3(tmp_path: Path) -> None:
    state = holding(tmp_path, users(0, 3))
    with lock.acquire(state, KEY):
        proc = cli_process("state", "forget", *where(state), stdout=subprocess.PIPE)
        assert proc.returncode == 3, proc.stderr
        assert "busy" in proc.stderr
        assert "--lock-timeout" not in proc.stderr  # forget has no such option
        assert len(proc.stderr.strip().splitlines()) == 1
        # A run recorded as running by a live holder shows as running.
    with SyncState.open(state, KEY) as opened:
        assert opened.member_count() == 3


def test_check_names_the_damage_and_list_of_no_file_is_empty(cli: RunCli, tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    missing = cli("state", "check", "--state", str(state))
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    empty = cli("state", "list", "--state", str(state), "--output", "json")
    assert empty.exit_code == 0 and json.loads(empty.stdout)["entries"] == []
    assert not state.exists()
    conn = sqlite3.connect(state)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    foreign = cli("state", "check", "--state", str(state))
    assert foreign.exit_code == 2
    (line,) = foreign.stderr.strip().splitlines()
    assert str(state) in line and "not a cohortctl state file" in line
    listed = cli("state", "list", "--state", str(state))
    assert listed.exit_code == 2 and "not a cohortctl state file" in listed.stderr
    as_json = cli("state", "check", "--state", str(state), "--output", "json")
    assert as_json.exit_code == 2
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and "not a cohortctl state file" in data["error"]


def test_a_killed_run_shows_as_unfinished(cli: RunCli, tmp_path: Path) -> None:
    from cohortctl.sync.state import Diff

    state = tmp_path / "state.sqlite"
    with SyncState.open(state, KEY) as opened:
        opened.start_run(Diff(entered=["a"], left=[]))
    listed = cli("state", "list", "--state", str(state), "--output", "json")
    (entry,) = json.loads(listed.stdout)["entries"]
    assert entry["last_run"]["outcome"] == "unfinished"


def test_a_killed_run_stays_unfinished_after_later_runs(cli: RunCli, tmp_path: Path) -> None:
    from cohortctl.sync.state import Diff

    state = tmp_path / "state.sqlite"
    with SyncState.open(state, KEY) as opened:
        opened.start_run(Diff(entered=["a"], left=[]))  # killed: never finished
        later = opened.start_run(Diff(entered=["a"], left=[]))
        opened.finish_run(later, status="ok", added=1, removed=0, failed=0)
    shown = cli("state", "show", *where(state), "--output", "json")
    assert shown.exit_code == 0, shown.output
    assert [run["outcome"] for run in json.loads(shown.stdout)["runs"]] == ["unfinished", "ok"]


def test_export_to_stdout(cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-o -`` writes the ids to stdout, as ``cohorts download -o -`` does (no file named -)."""
    monkeypatch.chdir(tmp_path)
    state = holding(tmp_path, ["u1", "u2", "u3"])
    result = cli("state", "export", *where(state), "-o", "-")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == ["u1", "u2", "u3"]
    assert not (tmp_path / "-").exists()
    as_json = cli("state", "export", *where(state), "-o", "-", "--output", "json")
    assert sorted(as_json.stdout.split()) == ["u1", "u2", "u3"]
    assert json.loads(as_json.stderr)["written"] == 3


def test_export_to_a_full_stdout(tmp_path: Path) -> None:
    """``state export -o -`` into a full device (a real process): one line, exit 2."""
    state = holding(tmp_path, [f"user-{i}" for i in range(50_000)])
    done = cli_into_a_full_stdout("state", "export", *where(state), "-o", "-")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "standard output" in lines[0], done.stderr


@pytest.mark.parametrize("command", ["list", "check"])
def test_tables_to_a_full_stdout(tmp_path: Path, command: str) -> None:
    """A table or line for people into a full device (a real process): one line, exit 2."""
    state = holding(tmp_path, ["a", "b"])
    done = cli_into_a_full_stdout("state", command, "--state", str(state))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "standard output" in lines[0], done.stderr

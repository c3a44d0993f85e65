"""Full and read-only filesystems: one line naming the file, exit 2, nothing confirmed lost.

Real filesystems: a small tmpfs (full) and a tmpfs remounted read-only. Mounting needs root
and the mount syscall; elsewhere the tests skip and say why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync.state import SyncState, destination_key
from tests.conftest import RunCli, cli_process
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
COHORT = ["--cohort-name", "Power Users", "--cohort-id", "c7"]

Mount = Callable[[str], Path]


def users(start: int, stop: int) -> list[str]:
    return [f"user-{i:06d}" for i in range(start, stop)]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``mount(size)``: a fresh tmpfs of that size under tmp_path (unmounted afterwards)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        _run("umount", "-l", str(target))


def read_only(target: Path) -> None:
    done = _run("mount", "-o", "remount,ro", str(target))
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")


def writable(target: Path, size: str | None = None) -> None:
    options = "remount,rw" + (f",size={size}" if size else "")
    assert _run("mount", "-o", options, str(target)).returncode == 0


def fill(target: Path) -> None:
    """Take every free byte of the filesystem."""
    with contextlib.suppress(OSError), (target / "filler").open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith("Power Users (c7):")]
    assert len(lines) == 1, text
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def synced_state(cli: RunCli, disk: Path, tmp_path: Path, url: str) -> tuple[Path, list[str]]:
    """A state on ``disk`` after a first sync of 2,000 users to ``url``; the sync's arguments."""
    state = disk / "state.sqlite"
    snapshot = tmp_path / "cohort.txt"
    snapshot.write_text("\n".join(users(0, 2000)) + "\n", encoding="utf-8")
    args = ["sync", str(snapshot), "--url", url, *COHORT, "--state", str(state)]
    assert cli(*args, env=ENV).exit_code == 0
    return state, args


def test_state_on_a_read_only_filesystem(
    cli: RunCli, tmpfs: Mount, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    disk = tmpfs("16m")
    state, args = synced_state(cli, disk, tmp_path, partner_server.url)
    before = state.read_bytes()
    read_only(disk)
    (tmp_path / "cohort.txt").write_text("\n".join(users(0, 3000)) + "\n", encoding="utf-8")
    sent = len(get_json(f"{partner_server.url}/_cohortctl/journal?limit=1000")["requests"])
    result = cli(*args, env=ENV)
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert str(state) in line and "cannot write" in line
    after = len(get_json(f"{partner_server.url}/_cohortctl/journal?limit=1000")["requests"])
    assert after == sent  # nothing was sent that could not be confirmed
    assert state.read_bytes() == before
    writable(disk)
    assert cli(*args, env=ENV).exit_code == 0


def test_state_on_a_full_filesystem_keeps_what_was_confirmed(
    cli: RunCli, tmpfs: Mount, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY)
    # Room for the plan (about 2.6 MB), not for folding the confirmations into members.
    disk = tmpfs("3m")
    state = disk / "state.sqlite"
    snapshot = tmp_path / "cohort.txt"
    ids = users(0, 200_000)
    snapshot.write_text("\n".join(ids) + "\n", encoding="utf-8")
    args = ["sync", str(snapshot), "--url", server.url, *COHORT, "--state", str(state)]
    result = cli(*args, "--batch-size", "5000", env=ENV)
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert str(state) in line and "full" in line and "what was confirmed is kept" in line

    writable(disk, "64m")
    again = cli(*args, "--batch-size", "5000", "-o", "json", env=ENV)
    assert again.exit_code == 0, again.output
    (cohort,) = json.loads(again.stdout)["cohorts"]
    assert cohort["entered"] == 0  # every confirmed batch survived the full disk
    with SyncState.open(state, destination_key(server.url, "list", "c7")) as opened:
        assert opened.member_count() == len(ids)
        list_id = opened.list_id
    assert sorted(get_json(f"{server.url}/_cohortctl/lists/{list_id}")["members"]) == ids
    creates = [
        r for r in get_json(f"{server.url}/_cohortctl/journal?limit=1000")["requests"]
        if r["path"] == "/lists"
    ]  # fmt: skip
    assert len(creates) == 1  # the list id was kept through the failure


def test_retry_file_on_a_full_filesystem(
    cli: RunCli, tmpfs: Mount, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, fail_rate=1.0, fail_status=400)
    disk = tmpfs("1m")
    snapshot = tmp_path / "cohort.txt"
    snapshot.write_text("\n".join(users(0, 100_000)) + "\n", encoding="utf-8")
    retry = disk / "retry.txt"
    fill(disk)
    result = cli(
        "sync", str(snapshot), "--url", server.url, *COHORT, "--state", str(tmp_path / "s.db"),
        "--retry-file", str(retry), "--retries", "0", "--mode", "property", env=ENV,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert f"cannot write retry file {retry}" in line and "No space left on device" in line
    assert not retry.exists() and leftovers(disk) == []


def test_junit_report_on_full_and_read_only_filesystems(
    cli: RunCli, tmpfs: Mount, partner_server: BackgroundServer
) -> None:
    disk = tmpfs("1m")
    junit = disk / "check.xml"
    junit.write_text("old report\n", encoding="utf-8")
    fill(disk)
    args = ["check", "--url", partner_server.url, "--batch-size", "5", "--junit", str(junit)]
    result = cli(*args, env=ENV)
    assert result.exit_code == 2, result.output
    assert f"cannot write JUnit report {junit}" in result.stderr
    assert "No space left on device" in result.stderr
    assert junit.read_text(encoding="utf-8") == "old report\n"  # the old one, whole
    assert leftovers(disk) == []
    (disk / "filler").unlink()
    read_only(disk)
    result = cli(*args, env=ENV)
    assert result.exit_code == 2 and "Read-only file system" in result.stderr


def test_download_on_a_full_filesystem(
    cli: RunCli, tmpfs: Mount, tmp_path: Path, amplitude_server: BackgroundServer
) -> None:
    from tests.test_cli_cohorts import make_cohort

    cohort_id = make_cohort(cli, amplitude_server, tmp_path, users(0, 20_000))
    disk = tmpfs("1m")
    fill(disk)
    for extra in ((), ("--ids-only",)):
        dest = disk / "members.csv"
        result = cli(
            "cohorts", "download", cohort_id, "-o", str(dest), *extra,
            "--base-url", amplitude_server.url,
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert f"cannot write download file {dest}" in result.stderr
        assert "No space left on device" in result.stderr
        assert not dest.exists()
        assert [p.name for p in disk.iterdir()] == ["filler"]


def test_json_to_a_full_filesystem(tmpfs: Mount, tmp_path: Path) -> None:
    disk = tmpfs("1m")
    state = tmp_path / "state.sqlite"
    with SyncState.open(state, destination_key("http://127.0.0.1:9", "list", "c7")) as opened:
        opened.confirm_added(users(0, 3))
    fill(disk)
    with (disk / "out.json").open("w") as handle:
        args = ["state", "list", "--state", str(state), "--output", "json"]
        proc = cli_process(*args, stdout=handle)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write" in proc.stderr and "No space left on device" in proc.stderr


def test_state_commands_read_a_state_on_a_read_only_filesystem(
    cli: RunCli, tmpfs: Mount, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    """list, show, export and check only read: a read-only disk (a backup) is no obstacle."""
    disk = tmpfs("16m")
    state, _ = synced_state(cli, disk, tmp_path, partner_server.url)
    read_only(disk)
    where = ["--state", str(state), "--url", partner_server.url, "--cohort-id", "c7"]
    listed = cli("state", "list", "--state", str(state), "--output", "json")
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.stdout)["entries"]
    assert entry["members"] == 2000 and entry["cohort_id"] == "c7"
    shown = cli("state", "show", *where, "--output", "json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["members"] == 2000, shown.output
    held = tmp_path / "held.txt"
    exported = cli("state", "export", *where, "-o", str(held))
    assert exported.exit_code == 0, exported.output
    assert sorted(held.read_text().split()) == users(0, 2000)
    checked = cli("state", "check", "--state", str(state))
    assert checked.exit_code == 0, checked.output
    forgot = cli("state", "forget", *where)
    assert forgot.exit_code == 2 and str(state) in one_line(forgot.stderr)

"""One sync per state file, destination and cohort: locks, and real concurrent processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cohortctl.errors import Busy, ExitCode
from cohortctl.servers.runner import BackgroundServer
from cohortctl.sync import lock
from cohortctl.sync.state import SyncState, destination_key
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory
from tests.sync_helpers import COHORT, ENV, start_sync, users


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def list_members(url: str, list_id: str) -> list[str]:
    return sorted(get_json(f"{url}/_cohortctl/lists/{list_id}")["members"])


def journal(url: str) -> list[dict[str, Any]]:
    return get_json(f"{url}/_cohortctl/journal?limit=100000")["requests"]  # type: ignore[no-any-return]


def _sync(
    snapshot: Path, url: str, state: Path, cohort_id: str, *extra: str
) -> subprocess.Popen[str]:
    return start_sync(snapshot, url, state, *extra, name=f"Cohort {cohort_id}", cohort_id=cohort_id)


def test_a_held_lock_names_its_holder(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    with lock.acquire(state, "k1"):
        with pytest.raises(Busy) as caught:
            lock.acquire(state, "k1", what="Power Users (c7)")
        message = caught.value.message
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "since " in message and "Power Users (c7)" in message
        assert caught.value.exit_code == ExitCode.BUSY == 3
        holder = lock.holder(state, "k1")
        assert holder is not None and holder.pid == os.getpid()
        with lock.acquire(state, "k2"):  # another cohort: side by side
            pass
    assert lock.holder(state, "k1") is None
    with lock.acquire(state, "k1"):
        pass


def test_waiting_for_a_lock_uses_the_timeout(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with lock.acquire(state, "k"), pytest.raises(Busy, match="after waiting 2s"):
        lock.acquire(state, "k", timeout=2.0, clock=lambda: now[0], sleep=sleep)
    assert abs(sum(waits) - 2.0) < 1e-6 and all(w <= lock.POLL_INTERVAL + 1e-9 for w in waits)


def test_a_killed_holder_blocks_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from cohortctl.sync import lock\n"
        f"held = lock.acquire(Path({str(state)!r}), 'k')\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"pid {proc.pid}"):
            lock.acquire(state, "k")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with lock.acquire(state, "k"):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for_requests(url: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(journal(url)) < count:
        assert time.monotonic() < deadline, "the sync never got going"
        time.sleep(0.02)


def _list_id(state: Path, url: str, cohort_id: str) -> str:
    with SyncState.open(state, destination_key(url, "list", cohort_id)) as opened:
        list_id = opened.list_id
        assert list_id is not None
        return list_id


def _wait_for_holder(state: Path, url: str, cohort_id: str, pid: int) -> None:
    key = destination_key(url, "list", cohort_id)
    deadline = time.monotonic() + 60
    while True:
        holder = lock.holder(state, key)
        if holder is not None and holder.pid == pid:
            return
        assert time.monotonic() < deadline, "the sync never took its lock"
        time.sleep(0.02)


def test_two_syncs_of_one_cohort_at_once_one_exits_busy_then_both_converge(
    tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=100)
    state = tmp_path / "state.sqlite"
    snapshot = tmp_path / "cohort.txt"
    snapshot.write_text("\n".join(users(0, 20_000)) + "\n", encoding="utf-8")
    # One worker at 100 ms a request: the first run takes 20 s unless interrupted, room
    # enough for the second to start on a loaded machine.
    first = _sync(snapshot, server.url, state, "c7", "--workers", "1")
    try:
        _wait_for_holder(state, server.url, "c7", first.pid)
        second = _sync(snapshot, server.url, state, "c7")
        out2, err2 = second.communicate(timeout=120)
        assert second.returncode == 3, err2
        assert out2 == ""
        (line,) = err2.strip().splitlines()
        assert "busy" in line and f"pid {first.pid}" in line and socket.gethostname() in line
    finally:  # a failed assertion must not leave the first sync running
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
    _, err1 = first.communicate(timeout=120)
    assert first.returncode in (0, 130), err1

    # The snapshot changes; one run waits for the other, and both end on it exactly.
    snapshot.write_text("\n".join(users(3000, 9000)) + "\n", encoding="utf-8")
    a = _sync(snapshot, server.url, state, "c7", "--lock-timeout", "5m")
    _wait_for_holder(state, server.url, "c7", a.pid)
    b = _sync(snapshot, server.url, state, "c7", "--lock-timeout", "5m", "-o", "json")
    _, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    (cohort,) = json.loads(out_b)["cohorts"]
    assert cohort["entered"] == cohort["left"] == 0  # the first one had sent everything
    assert list_members(server.url, _list_id(state, server.url, "c7")) == users(3000, 9000)
    assert len([r for r in journal(server.url) if r["path"] == "/lists"]) == 1


def test_syncs_of_different_cohorts_on_one_state_file_run_side_by_side(
    tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=5)
    state = tmp_path / "state.sqlite"
    snapshots = {}
    for cohort_id, (start, stop) in {"c1": (0, 4000), "c2": (2000, 7000)}.items():
        snapshots[cohort_id] = tmp_path / f"{cohort_id}.txt"
        snapshots[cohort_id].write_text("\n".join(users(start, stop)) + "\n", encoding="utf-8")
    procs = {c: _sync(p, server.url, state, c) for c, p in snapshots.items()}
    for cohort_id, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (cohort_id, stderr)
    assert list_members(server.url, _list_id(state, server.url, "c1")) == users(0, 4000)
    assert list_members(server.url, _list_id(state, server.url, "c2")) == users(2000, 7000)


def test_lock_timeout_is_a_duration(tmp_path: Path, partner_server: BackgroundServer) -> None:
    snapshot = tmp_path / "cohort.txt"
    snapshot.write_text("u1\n", encoding="utf-8")
    proc = _sync(snapshot, partner_server.url, tmp_path / "s.sqlite", "c7", "--lock-timeout", "x")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--lock-timeout" in stderr


def test_every_spelling_of_one_state_file_shares_its_locks(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"")
    link = tmp_path / "link.sqlite"
    link.symlink_to(state)
    with lock.acquire(state, "k"), pytest.raises(Busy):
        lock.acquire(link, "k")
    with lock.acquire(tmp_path / "." / "state.sqlite", "k"):
        pass


def _plan(tmp_path: Path, url: str) -> Path:
    for cohort_id, (start, stop) in {"c1": (0, 300), "c2": (1000, 1200)}.items():
        (tmp_path / f"{cohort_id}.txt").write_text("\n".join(users(start, stop)) + "\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f'destination: {{url: "{url}"}}\n'
        "cohorts:\n"
        "  - {name: One, id: c1, snapshot: c1.txt}\n"
        "  - {name: Two, id: c2, snapshot: c2.txt}\n",
        encoding="utf-8",
    )
    return plan


def test_a_busy_cohort_of_a_plan_is_reported_and_the_others_run(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state = tmp_path / "state.sqlite"
    plan = _plan(tmp_path, partner_server.url)
    args = ["sync", "--plan", str(plan), "--state", str(state)]
    with lock.acquire(state, destination_key(partner_server.url, "list", "c1")):
        result = cli(*args, env=ENV)
        as_json = cli(*args, "-o", "json", env=ENV)
    assert result.exit_code == 3, result.output
    assert "One (c1): busy: another sync of One (c1)" in result.stderr
    assert "Two (c2)" in result.stdout  # its summary: it ran
    assert list_members(partner_server.url, _list_id(state, partner_server.url, "c2")) == users(
        1000, 1200
    )
    assert as_json.exit_code == 3
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    busy, ran = data["cohorts"]
    assert (busy["result"], busy["ok"], ran["result"]) == ("busy", False, "ok")
    assert "busy: another sync" in busy["error"] and f"pid {os.getpid()}" in busy["error"]
    again = cli(*args, env=ENV)  # nobody holds c1 now: it runs, c2 has nothing to send
    assert again.exit_code == 0, again.output


def test_a_busy_sync_in_json_prints_the_json(
    cli: RunCli, tmp_path: Path, partner_server: BackgroundServer
) -> None:
    state = tmp_path / "state.sqlite"
    snapshot = tmp_path / "c7.txt"
    snapshot.write_text("u1\n", encoding="utf-8")
    args = ["sync", str(snapshot), "--url", partner_server.url, *COHORT, "--state", str(state)]
    with lock.acquire(state, destination_key(partner_server.url, "list", "c7")):
        result = cli(*args, "-o", "json", env=ENV)
        plain = cli(*args, env=ENV)
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["interrupted"] is False
    assert data["error"].startswith("busy: another sync of Power Users (c7)")
    (cohort,) = data["cohorts"]
    assert cohort["result"] == "busy" and cohort["error"].startswith("busy: another sync")
    assert plain.exit_code == 3 and plain.stdout == ""
    assert len(plain.stderr.strip().splitlines()) == 1

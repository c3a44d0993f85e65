"""Sync state: diffs, confirmations, runs, and convergence after a crash."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cohortctl.errors import InputError
from cohortctl.sync.state import Diff, SyncState, default_state_path, destination_key, plan_diff

KEY = destination_key("http://127.0.0.1:9000/", "list", "c1")


def ids(start: int, stop: int) -> list[str]:
    return [f"u{i:06d}" for i in range(start, stop)]


def open_state(tmp_path: Path, key: str = KEY) -> SyncState:
    return SyncState.open(tmp_path / "state.sqlite", key)


def test_destination_key_normalizes_and_drops_credentials() -> None:
    a = destination_key("HTTPS://user:secret@Example.COM:443/api/", "list", "c1")
    b = destination_key("https://example.com/api", "list", "c1")
    assert a == b == "https://example.com/api|list|c1"
    assert "secret" not in a
    assert destination_key("http://h:8080", "property", "c1") == "http://h:8080|property|c1"


def test_default_path_follows_data_dir(tmp_path: Path) -> None:
    # conftest points COHORTCTL_DATA_DIR at tmp_path / "data".
    assert default_state_path() == tmp_path / "data" / "state.sqlite"


def test_first_diff_is_everyone_then_only_the_rest(tmp_path: Path) -> None:
    snapshot = ids(0, 100)
    with open_state(tmp_path) as state:
        first = plan_diff(snapshot, state)
        assert first == Diff(entered=snapshot, left=[], unchanged=0)
        state.confirm_added(snapshot[:50])
        second = plan_diff(snapshot, state)
        assert second.entered == snapshot[50:]
        assert second.left == []
        assert second.unchanged == 50


def test_left_users_and_removal_confirmation(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        state.confirm_added(ids(0, 10))
        diff = plan_diff(ids(3, 12), state)
        assert sorted(diff.left) == ids(0, 3)
        assert diff.entered == ids(10, 12)
        state.confirm_removed(diff.left)
        state.confirm_added(diff.entered)
        assert plan_diff(ids(3, 12), state) == Diff([], [], unchanged=9)
        assert sorted(state.members()) == ids(3, 12)
        assert state.member_count() == 9


def test_full_resend_sends_everyone_and_still_removes(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        state.confirm_added(ids(0, 10))
        diff = plan_diff(ids(5, 15), state, full=True)
        assert diff.entered == ids(5, 15)
        assert sorted(diff.left) == ids(0, 5)


def test_duplicates_in_snapshot_are_sent_once(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        diff = plan_diff(["a", "b", "a", "c", "b"], state)
        assert diff.entered == ["a", "b", "c"]


def test_ten_percent_leave_ten_percent_join(tmp_path: Path) -> None:
    rng = random.Random(7)
    old = ids(0, 20_000)
    rng.shuffle(old)
    leaving = set(old[:2_000])
    joining = ids(20_000, 22_000)
    new = [u for u in old if u not in leaving] + joining
    rng.shuffle(new)
    with open_state(tmp_path) as state:
        for i in range(0, len(old), 1000):
            state.confirm_added(old[i : i + 1000])
        diff = plan_diff(new, state)
        assert set(diff.entered) == set(joining)
        assert [u for u in new if u in set(joining)] == diff.entered  # snapshot order
        assert set(diff.left) == leaving
        assert len(diff.left) == len(leaving)
        assert diff.unchanged == 18_000


def test_state_is_per_destination(tmp_path: Path) -> None:
    other = destination_key("http://127.0.0.1:9000", "property", "c1")
    with open_state(tmp_path) as a, open_state(tmp_path, other) as b:
        a.confirm_added(["x"])
        a.set_list_id("L-1")
        assert a.list_id == "L-1"
        assert b.list_id is None
        assert plan_diff(["x"], b).entered == ["x"]
        assert plan_diff(["x"], a).entered == []


def test_crash_after_k_confirmations_converges(tmp_path: Path) -> None:
    snapshot = ids(0, 10_000)
    batches = [snapshot[i : i + 1000] for i in range(0, len(snapshot), 1000)]
    # A real kill: a child process confirms 4 batches and dies without closing anything.
    child = f"""
import os
from cohortctl.sync.state import SyncState, plan_diff
state = SyncState.open({str(tmp_path / "state.sqlite")!r}, {KEY!r})
entered = plan_diff({snapshot!r}, state).entered
for i in range(0, 4000, 1000):
    state.confirm_added(entered[i : i + 1000])
os._exit(9)
"""
    proc = subprocess.run([sys.executable, "-c", child], check=False)
    assert proc.returncode == 9
    with open_state(tmp_path) as state:
        rest = plan_diff(snapshot, state).entered
        assert rest == [u for b in batches[4:] for u in b]
        for batch in plan_batches(rest):
            state.confirm_added(batch)
        assert plan_diff(snapshot, state) == Diff([], [], unchanged=10_000)


def plan_batches(users: list[str], size: int = 1000) -> list[list[str]]:
    return [users[i : i + size] for i in range(0, len(users), size)]


def test_unconfirmed_journal_survives_and_folds_on_next_open(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        state.confirm_added(ids(0, 5))
        state.fold()
        state.confirm_added(ids(5, 8))
        state.confirm_removed(ids(0, 2))
        state.confirm_added(ids(0, 1))  # re-added after removal: last write wins
    with open_state(tmp_path) as state:
        assert sorted(state.members()) == ["u000000", *ids(2, 8)]
        # Folding twice changes nothing.
        state.fold()
        assert state.member_count() == 7


def test_confirmer_groups_writes_and_commits_before_counting(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        with state.confirmer(group=3) as confirmer:
            for i in range(0, 10_000, 1000):
                confirmer.added(ids(i, i + 1000))
            confirmer.removed(ids(0, 10))
        assert confirmer.confirmed_batches == 11
        assert confirmer.confirmed_users == 10_010
        assert state.member_count() == 9_990
    # Committed means visible from a fresh connection.
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] >= 1
    conn.close()


def test_confirmer_reports_write_errors(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        confirmer = state.confirmer()
        confirmer.added(["ok", "bad\nid"])
        with pytest.raises(InputError):
            confirmer.close()


def test_ids_with_newlines_or_empty_are_rejected(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        for bad in (["a\nb"], [""], ["a", ""], ["", "a"]):
            with pytest.raises(InputError):
                state.confirm_added(bad)
        assert state.member_count() == 0


def test_run_records(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        diff = plan_diff(ids(0, 3), state)
        run = state.start_run(diff)
        state.finish_run(run, status="ok", added=3, removed=0, failed=0)
        (record,) = state.runs()
        assert (record.status, record.entered, record.left, record.added) == ("ok", 3, 0, 3)
        assert record.finished_at is not None and record.finished_at >= record.started_at


def test_forget(tmp_path: Path) -> None:
    with open_state(tmp_path) as state:
        state.confirm_added(["a"])
        state.set_list_id("L")
        state.forget()
        assert state.list_id is None
        assert state.member_count() == 0


def test_planned_batches_confirmed_by_reference(tmp_path: Path) -> None:
    from cohortctl.sync.state import ADD, REMOVE

    with open_state(tmp_path) as state:
        state.confirm_added(ids(0, 1000))
        state.fold()
        diff = plan_diff(ids(500, 2500), state)
        enter = state.plan_batches(ADD, diff.entered, 300)
        leave = state.plan_batches(REMOVE, diff.left, 300)
        assert enter.count == 5 and leave.count == 2
        batches = list(enter.batches()) + list(leave.batches())
        assert [len(chunk) for chunk, _ in batches] == [300, 300, 300, 300, 300, 300, 200]
        with state.confirmer(group=2) as confirmer:
            for _chunk, ref in batches[:2] + batches[5:]:  # two adds fail
                confirmer.confirm(ref)
        assert confirmer.confirmed_users == 600 + 500
        state.discard_plans()
        rest = plan_diff(ids(500, 2500), state)
        assert rest.entered == ids(1600, 2500) and rest.left == []


def test_plans_span_parts_and_survive_a_kill(tmp_path: Path) -> None:
    from cohortctl.sync import state as syncstate

    snapshot = ids(0, 250_000)
    child = f"""
import os
from cohortctl.sync.state import ADD, SyncState, plan_diff
state = SyncState.open({str(tmp_path / "state.sqlite")!r}, {KEY!r})
snapshot = [f"u{{i:06d}}" for i in range(250_000)]
plan = state.plan_batches(ADD, plan_diff(snapshot, state).entered, 1000)
assert len(plan.parts) == 3
refs = [ref for i, (_, ref) in enumerate(plan.batches()) if i % 2 == 0]
state.confirm_planned(refs)
os._exit(9)
"""
    proc = subprocess.run([sys.executable, "-c", child], check=False)
    assert proc.returncode == 9
    assert syncstate.SEGMENT_SIZE == 100_000
    with open_state(tmp_path) as state:
        rest = plan_diff(snapshot, state)
        expected = [u for i in range(0, 250, 2) for u in snapshot[(i + 1) * 1000 : (i + 2) * 1000]]
        assert rest.entered == expected
        state.discard_plans()
        assert state.member_count() == 125_000

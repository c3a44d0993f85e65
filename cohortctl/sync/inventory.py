"""What a state file says each destination holds: list, show, export, forget, check.

Read-only except :func:`forget`: listing never creates a destination or folds a journal,
so it works on a state file another sync is writing (or on a read-only copy).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from cohortctl.errors import InputError
from cohortctl.files import write_atomically
from cohortctl.sync import lock, storage
from cohortctl.sync.state import ADD, RunRecord, destination_key

MODES = ("list", "property", "webhook")

UNFINISHED = "unfinished"
"""A run recorded as running whose process is gone (killed, or its disk filled)."""


def parse_key(key: str) -> tuple[str, str, str]:
    """``(url, mode, cohort_id)`` of a destination key (see ``destination_key``)."""
    url, mode, cohort_id = key, "", ""
    for candidate in MODES:
        marker = f"|{candidate}|"
        at = key.rfind(marker)
        if at >= 0:
            url, mode, cohort_id = key[:at], candidate, key[at + len(marker) :]
            break
    else:
        parts = key.rsplit("|", 2)
        if len(parts) == 3:
            url, mode, cohort_id = parts
    return url, mode, cohort_id


def iso(when: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (``null`` for unset)."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")


def run_dict(run: RunRecord) -> dict[str, Any]:
    """JSON-ready fields of one run."""
    return {
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "outcome": run.status,  # ok, failed, unfinished...: `status` is only ever HTTP's
        "full": run.full,
        "entered": run.entered,
        "left": run.left,
        "added": run.added,
        "removed": run.removed,
        "failed": run.failed,
    }


@dataclass
class Entry:
    """One destination and cohort of a state file, as the state believes it is."""

    key: str
    url: str
    mode: str
    cohort_id: str
    list_id: str | None
    members: int
    runs: list[RunRecord]

    @property
    def last_run(self) -> RunRecord | None:
        """The most recent run, if any."""
        return self.runs[-1] if self.runs else None

    def to_dict(self, *, with_runs: bool = False) -> dict[str, Any]:
        """JSON-ready: ``url``, ``cohort_id``, ``mode``, ``list_id``, ``members`` and runs."""
        data: dict[str, Any] = {
            "url": self.url,
            "cohort_id": self.cohort_id,
            "mode": self.mode,
            "list_id": self.list_id,
            "members": self.members,
            "run_count": len(self.runs),
            "last_run": run_dict(self.last_run) if self.last_run else None,
        }
        if with_runs:
            data["runs"] = [run_dict(r) for r in self.runs]
        return data


def _open(path: Path) -> sqlite3.Connection:
    return storage.connect(path, create=False, readable=True)


def _runs(conn: sqlite3.Connection, dest: int, *, running: bool) -> list[RunRecord]:
    rows = conn.execute(
        "SELECT id, started_at, finished_at, status, full_resend, entered, left_count,"
        " added, removed, failed FROM runs WHERE dest = ? ORDER BY id",
        (dest,),
    ).fetchall()
    runs = [
        RunRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9]) for r in rows
    ]
    # Only the newest run can be live (one sync per destination at a time).
    live = len(runs) - 1 if running else -1
    return [
        replace(run, status=UNFINISHED) if run.status == "running" and at != live else run
        for at, run in enumerate(runs)
    ]


def _members(conn: sqlite3.Connection, dest: int) -> set[str] | int:
    """The believed members (a set), or only their count when no journal needs replaying."""
    (pending,) = conn.execute("SELECT COUNT(*) FROM journal WHERE dest = ?", (dest,)).fetchone()
    if not pending:
        (count,) = conn.execute(
            "SELECT COALESCE(SUM(n), 0) FROM segments WHERE dest = ?", (dest,)
        ).fetchone()
        return int(count)
    return set(_member_ids(conn, dest))


def _member_ids(conn: sqlite3.Connection, dest: int) -> Iterable[str]:
    """Segments plus the journal replayed in memory, as a fold would (nothing written)."""
    members: dict[str, None] = {}
    for (text,) in conn.execute("SELECT ids FROM segments WHERE dest = ?", (dest,)):
        members.update(dict.fromkeys(text.split("\n")))
    parts: dict[int, tuple[int, list[str]] | None] = {}
    rows = conn.execute(
        "SELECT op, ids, planned, batch FROM journal WHERE dest = ? ORDER BY seq", (dest,)
    )
    for op, text, part, index in rows:
        if part is None:
            chunk = text.split("\n")
        else:
            if part not in parts:
                row = conn.execute(
                    "SELECT batch_size, ids FROM planned WHERE id = ?", (part,)
                ).fetchone()
                parts[part] = None if row is None else (int(row[0]), row[1].split("\n"))
            found = parts[part]
            if found is None:  # a discarded plan: the next sync drops it (and resends)
                continue
            size, ids = found
            chunk = ids[index * size : (index + 1) * size]
        if op == ADD:
            members.update(dict.fromkeys(chunk))
        else:
            for user_id in chunk:
                members.pop(user_id, None)
    return members.keys()


def entries(path: Path) -> list[Entry]:
    """Every destination and cohort of the state file ``path`` (none when it does not exist)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    conn = _open(path)
    try:
        rows = conn.execute("SELECT id, key, list_id FROM destinations ORDER BY key").fetchall()
        found = []
        for dest, key, list_id in rows:
            url, mode, cohort_id = parse_key(key)
            members = _members(conn, dest)
            running = lock.holder(path, key) is not None
            found.append(
                Entry(
                    key=key,
                    url=url,
                    mode=mode,
                    cohort_id=cohort_id,
                    list_id=list_id,
                    members=members if isinstance(members, int) else len(members),
                    runs=_runs(conn, dest, running=running),
                )
            )
        return found
    except sqlite3.Error as exc:
        raise storage.state_error(path, exc) from None
    finally:
        conn.close()


def believed(path: Path, key: str) -> tuple[str | None, list[str]] | None:
    """``(list id, members)`` stored for destination ``key``; None when nothing is stored."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    conn = _open(path)
    try:
        row = conn.execute("SELECT id, list_id FROM destinations WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return row[1], list(_member_ids(conn, row[0]))
    except sqlite3.Error as exc:
        raise storage.state_error(path, exc) from None
    finally:
        conn.close()


def find(path: Path, url: str, cohort_id: str, mode: str | None = None) -> Entry:
    """The entry of ``url`` + ``cohort_id`` (+ ``mode`` when both modes are stored).

    The URL is normalized as sync does, so any spelling of it that sync accepts matches.
    """
    wanted = {destination_key(url, m, cohort_id) for m in ([mode] if mode else MODES)}
    matches = [e for e in entries(path) if e.key in wanted]
    if not matches:
        what = f"{url} cohort {cohort_id}" + (f" ({mode} mode)" if mode else "")
        raise InputError(f"state file {path}: nothing stored for {what} (see cohortctl state list)")
    if len(matches) > 1:
        modes = " and ".join(e.mode for e in matches)
        raise InputError(
            f"state file {path}: {url} cohort {cohort_id} is stored in {modes} mode; "
            "pass --mode to pick one"
        )
    return matches[0]


def export(path: Path, entry: Entry, dest: Path | TextIO) -> int:
    """Write the user ids the partner is believed to hold to ``dest``, one per line.

    ``dest`` is a file (replaced only once complete) or an open text stream (stdout).
    """
    conn = _open(path)
    try:
        (dest_id,) = conn.execute(
            "SELECT id FROM destinations WHERE key = ?", (entry.key,)
        ).fetchone()

        def write_to(handle: TextIO) -> int:
            count = 0
            for user_id in _member_ids(conn, dest_id):
                handle.write(user_id)
                handle.write("\n")
                count += 1
            return count

        def write(tmp: Path) -> int:
            with tmp.open("w", encoding="utf-8") as handle:
                return write_to(handle)

        if not isinstance(dest, Path):
            return write_to(dest)
        return write_atomically(dest, write, what="export")
    except sqlite3.Error as exc:
        raise storage.state_error(path, exc) from None
    finally:
        conn.close()


def forget(path: Path, entry: Entry) -> None:
    """Drop everything about ``entry`` (members, list id, runs): the next sync is a first sync.

    Takes the entry's sync lock first: a sync running on it makes this :class:`Busy`.
    """
    with lock.acquire(
        path, entry.key, what=f"cohort {entry.cohort_id}", hint="forget it once that sync ends"
    ):
        conn = _open(path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT id FROM destinations WHERE key = ?", (entry.key,)).fetchone()
            if row is not None:
                for table in ("segments", "journal", "planned", "properties", "runs"):
                    conn.execute(f"DELETE FROM {table} WHERE dest = ?", (row[0],))
                conn.execute("DELETE FROM destinations WHERE id = ?", (row[0],))
            conn.execute("COMMIT")
            storage.compact(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise storage.state_error(path, exc) from None
        finally:
            conn.close()


@dataclass(frozen=True)
class CheckResult:
    """A state file that passed every check."""

    path: str
    schema_version: int
    destinations: int
    size_bytes: int
    empty: bool = False  # a zero-length file: new state, as sync takes it

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``ok`` is always true: a failed check raises)."""
        return {
            "ok": True,
            "file": self.path,
            "schema_version": self.schema_version,
            "destinations": self.destinations,
            "size_bytes": self.size_bytes,
            "empty": self.empty,
            "error": None,
        }


def check(path: Path) -> CheckResult:
    """Every integrity check of ``path`` (identity, version, ``quick_check``), or StateFileError.

    A missing file fails too: ``state check`` is asked about a file that should exist. A
    zero-length file passes as new state (``empty``), as ``sync`` takes it; it is not written.
    """
    if path.is_file() and path.stat().st_size == 0:
        return CheckResult(str(path), 0, 0, 0, empty=True)
    conn = storage.connect(path, create=False, quick_check=True, readable=True)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        (count,) = conn.execute("SELECT COUNT(*) FROM destinations").fetchone()
    except sqlite3.Error as exc:
        raise storage.state_error(path, exc) from None
    finally:
        conn.close()
    return CheckResult(str(path), int(version), int(count), path.stat().st_size)

"""What each destination already has, and what a new snapshot changes (``cohortctl sync``).

One SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=NORMAL``) holds any number of
destinations; a destination is a partner base URL + sync mode + cohort id
(:func:`destination_key`). Per destination it keeps the list id (list mode), the members the
destination confirmed with a 2xx, and a record of every sync run.

Storage is shaped by two numbers from the issue: confirming 1,000-id batches at 10,000
batches/s, and diffing 10,000,000 ids in seconds. A row per member cannot do either
(random-order B-tree inserts run at ~200k rows/s), so members live in two tables of
newline-joined id blobs:

* ``segments``: the members as of the last fold, disjoint chunks of up to
  :data:`SEGMENT_SIZE` ids;
* ``journal``: one row per confirmed batch (add or remove), appended in commit order.

A confirmation is one small append, committed before it is acknowledged; :meth:`SyncState.fold`
replays the journal into the segments in one transaction. A kill at any moment therefore
leaves either the journal row (the batch counts as confirmed) or nothing (it is resent).

The hot path (``cohortctl sync``) does not even write the ids of a confirmed batch: before
sending, :meth:`SyncState.plan_batches` stores the run's entered / left ids once, in
``planned`` parts aligned to the batch size, and a confirmation is then a journal row that
only names its part and batch index (:class:`BatchRef`). The writer thread does no per-id
work at all; the fold resolves the references. Planned parts are dropped only after a fold
resolved every reference to them (:meth:`SyncState.discard_plans`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import filterfalse
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cohortctl.errors import InputError
from cohortctl.ids import chunked, spans
from cohortctl.sync import storage

SEGMENT_SIZE = 100_000
"""Ids per stored segment: big enough that reading 10M ids is a few hundred C-level splits."""

ADD = 1
REMOVE = 0
LIST_CREATED, LIST_GIVEN, LIST_NONE = "created", "given", "none"


def default_state_path() -> Path:
    """``$COHORTCTL_DATA_DIR/state.sqlite``, else the user data dir of cohortctl."""
    env = os.environ.get("COHORTCTL_DATA_DIR")
    if env:
        return Path(env) / "state.sqlite"
    from cohortctl.config import app_dir

    return app_dir() / "state.sqlite"


def destination_key(base_url: str, mode: str, cohort_id: str) -> str:
    """The key of one destination: normalized base URL, sync mode and cohort id.

    Scheme and host are lower-cased, default ports and trailing slashes dropped, and any
    user-info, query or fragment removed, so a credential in a URL is never stored.
    """
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and not (
        (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    ):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/")
    url = urlunsplit((scheme, host, path, "", ""))
    return f"{url}|{mode}|{cohort_id}"


def _join_ids(ids: Sequence[str]) -> str:
    """Newline-join ids, rejecting empty ids and ids with a newline (C-speed checks)."""
    text = "\n".join(ids)
    if (
        text.count("\n") != len(ids) - 1
        or "\n\n" in text
        or text.startswith("\n")
        or text.endswith("\n")
        or (len(ids) == 1 and not text)
    ):
        raise InputError("user ids must be non-empty and must not contain a newline")
    return text


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an already checked state file (the confirmer's own)."""
    try:
        return storage.raw_connect(path)
    except sqlite3.Error as exc:
        raise storage.state_error(path, exc) from None


@dataclass(frozen=True)
class Diff:
    """What a snapshot changes: who entered (to add / trait true), who left (remove / false)."""

    entered: list[str]
    left: list[str]
    unchanged: int = 0


BatchRef = tuple[int, int, int, str, int, int]
"""A planned batch as the journal row that confirms it: ``(dest, op, n, "", part, index)``.

Built once per batch when the run is planned, so confirming it allocates nothing.
"""


@dataclass(frozen=True)
class PlannedBatches:
    """One direction of a run (entered or left), stored before sending; see :meth:`batches`."""

    dest: int
    op: int
    batch_size: int
    parts: list[tuple[int, int, int]]  # (part id, first id index, id count)
    user_ids: Sequence[str]

    def batches(self) -> Iterator[tuple[Sequence[str], BatchRef]]:
        """Each batch's user ids (a slice of the plan) and the reference that confirms it."""
        size, ids, dest, op = self.batch_size, self.user_ids, self.dest, self.op
        for part_id, start, count in self.parts:
            end = start + count
            for index, offset in enumerate(range(start, end, size)):
                chunk = ids[offset : min(offset + size, end)]
                yield chunk, (dest, op, len(chunk), "", part_id, index)

    @property
    def count(self) -> int:
        """How many batches the plan holds."""
        size = self.batch_size
        return sum(-(-count // size) for _, _, count in self.parts)


@dataclass(frozen=True)
class RunRecord:
    """One sync run of a destination, as recorded in the state file."""

    id: int
    started_at: float
    finished_at: float | None
    status: str
    full: bool
    entered: int
    left: int
    added: int
    removed: int
    failed: int


class SyncState:
    """The state of one destination in a state file; open with :meth:`SyncState.open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, key: str, dest_id: int) -> None:
        self._conn = conn
        self.path = path
        self.key = key
        self._dest = dest_id
        self.repaired_batches = 0
        """Confirmations dropped by :meth:`fold` because their plan was gone (see there)."""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None,
        destination: str,
        *,
        quick_check: bool = False,
    ) -> SyncState:
        """Open (creating if needed) ``path`` and the state of ``destination`` in it.

        ``path`` None means :func:`default_state_path`; ``destination`` is a
        :func:`destination_key`. The file is checked first (:func:`storage.connect`): a file
        that is not usable state raises :class:`StateFileError`, never silently fresh state.
        """
        db_path = Path(path) if path is not None else default_state_path()
        conn = storage.connect(db_path, quick_check=quick_check)
        try:
            conn.execute(
                "INSERT OR IGNORE INTO destinations(key, created_at) VALUES (?, ?)",
                (destination, time.time()),
            )
            (dest_id,) = conn.execute(
                "SELECT id FROM destinations WHERE key = ?", (destination,)
            ).fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise storage.state_error(db_path, exc) from None
        return cls(conn, db_path, destination, int(dest_id))

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- list id ---------------------------------------------------------------------------
    @property
    def list_id(self) -> str | None:
        """The partner's list id (list mode), once the list was created."""
        row = self._conn.execute(
            "SELECT list_id FROM destinations WHERE id = ?", (self._dest,)
        ).fetchone()
        return None if row is None else row[0]

    @property
    def list_source(self) -> str | None:
        """Where the list id came from: ``created`` (the create answer), ``given``
        (``--list-id``), ``none`` (the create answers no id); None before any list."""
        row = self._conn.execute(
            "SELECT list_source FROM destinations WHERE id = ?", (self._dest,)
        ).fetchone()
        if row is None or self.list_id is None:
            return None
        return row[0] or LIST_CREATED

    def set_list_id(self, list_id: str, source: str = "created") -> None:
        """Record the list id and where it came from (committed at once); ``""`` with source
        ``none``: the list was created and has no id."""
        self._conn.execute(
            "UPDATE destinations SET list_id = ?, list_source = ? WHERE id = ?",
            (list_id, source, self._dest),
        )

    # -- confirmations ----------------------------------------------------------------------
    def confirm_added(self, ids: Sequence[str]) -> None:
        """Record that the destination has ``ids`` (after a 2xx); committed before returning."""
        if ids:
            self._append(((ADD, ids),))

    def confirm_removed(self, ids: Sequence[str]) -> None:
        """Record that the destination dropped ``ids`` (after a 2xx); committed at once."""
        if ids:
            self._append(((REMOVE, ids),))

    def _append(self, items: Iterable[tuple[int, Sequence[str]]]) -> None:
        rows = [(self._dest, op, len(ids), _join_ids(ids)) for op, ids in items]
        with _transaction(self._conn):
            self._conn.executemany(
                "INSERT INTO journal(dest, op, n, ids) VALUES (?, ?, ?, ?)", rows
            )

    def confirm_planned(self, refs: Iterable[BatchRef]) -> None:
        """Record planned batches as confirmed (after their 2xx); committed before returning."""
        with _transaction(self._conn):
            self._conn.executemany(
                "INSERT INTO journal(dest, op, n, ids, planned, batch) VALUES (?, ?, ?, ?, ?, ?)",
                list(refs),
            )

    def confirmer(self, *, group: int = 256, interval: float = 0.05) -> Confirmer:
        """A background writer that groups confirmations into transactions (hot path)."""
        return Confirmer(self.path, self._dest, group=group, interval=interval)

    def plan_batches(self, op: int, user_ids: Sequence[str], batch_size: int) -> PlannedBatches:
        """Store ``user_ids`` (to add: ``ADD``, to remove: ``REMOVE``) as batches to confirm.

        Committed before returning, in parts of about :data:`SEGMENT_SIZE` ids aligned to
        ``batch_size``; confirm each batch with :meth:`Confirmer.confirm` and its
        :data:`BatchRef`. Call :meth:`discard_plans` only after the confirmations were folded.
        """
        if batch_size < 1:
            raise InputError("batch size must be at least 1")
        per_part = max(1, SEGMENT_SIZE // batch_size) * batch_size
        parts: list[tuple[int, int, int]] = []
        with _transaction(self._conn):
            for start, end in spans(len(user_ids), per_part):
                chunk = user_ids[start:end]
                cur = self._conn.execute(
                    "INSERT INTO planned(dest, op, batch_size, n, ids) VALUES (?, ?, ?, ?, ?)",
                    (self._dest, op, batch_size, len(chunk), _join_ids(chunk)),
                )
                parts.append((int(cur.lastrowid or 0), start, len(chunk)))
        return PlannedBatches(self._dest, op, batch_size, parts, user_ids)

    def discard_plans(self) -> None:
        """Fold, then drop every planned part of this destination (their batches are settled)."""
        self.fold()
        self._conn.execute("DELETE FROM planned WHERE dest = ?", (self._dest,))
        storage.compact(self._conn)

    # -- reading ---------------------------------------------------------------------------
    def fold(self) -> None:
        """Replay the journal into the member segments, in one transaction.

        Memory grows with the journal (the ids changed since the last fold), not with the
        number of members: segments are streamed and rewritten only when touched.
        """
        conn = self._conn
        with _transaction(conn, immediate=True):
            rows = conn.execute(
                "SELECT seq, op, ids, planned, batch FROM journal WHERE dest = ? ORDER BY seq",
                (self._dest,),
            ).fetchall()
            if not rows:
                return
            last_seq = rows[-1][0]
            net: dict[str, bool] = {}
            parts: dict[int, tuple[int, list[str]]] = {}
            dead: set[int] = set()
            for _, op, text, part, index in rows:
                if part is None:
                    net.update(dict.fromkeys(text.split("\n"), op == ADD))
                    continue
                if part in dead:
                    self.repaired_batches += 1
                    continue
                if part not in parts:
                    found = self._planned_part(part)
                    if found is None:
                        dead.add(part)
                        self.repaired_batches += 1
                        continue
                    parts[part] = found
                size, part_ids = parts[part]
                chunk = part_ids[index * size : (index + 1) * size]
                net.update(dict.fromkeys(chunk, op == ADD))
            del rows, parts
            touched = net.keys()
            segs = conn.execute(
                "SELECT id, ids FROM segments WHERE dest = ?", (self._dest,)
            ).fetchall()
            for seg_id, text in segs:
                chunk = text.split("\n")
                if touched.isdisjoint(chunk):
                    continue
                keep = list(filterfalse(net.__contains__, chunk))
                if keep:
                    conn.execute(
                        "UPDATE segments SET n = ?, ids = ? WHERE id = ?",
                        (len(keep), "\n".join(keep), seg_id),
                    )
                else:
                    conn.execute("DELETE FROM segments WHERE id = ?", (seg_id,))
            del segs
            added = [uid for uid, member in net.items() if member]
            conn.executemany(
                "INSERT INTO segments(dest, n, ids) VALUES (?, ?, ?)",
                ((self._dest, len(part), "\n".join(part)) for part in chunked(added, SEGMENT_SIZE)),
            )
            conn.execute("DELETE FROM journal WHERE dest = ? AND seq <= ?", (self._dest, last_seq))

    def _planned_part(self, part: int) -> tuple[int, list[str]] | None:
        """The batch size and ids of a planned part; None when it is gone.

        A part is gone only when another run discarded it while this one still confirmed
        its batches (two syncs of one destination at once, before the sync lock existed).
        Those confirmations cannot be resolved to ids, so :meth:`fold` drops them: their
        users count as not confirmed and the next run sends them again (adds and removes
        are idempotent), while every other confirmation is kept.
        """
        row = self._conn.execute(
            "SELECT batch_size, ids FROM planned WHERE id = ? AND dest = ?", (part, self._dest)
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), row[1].split("\n")

    def planned_users(self) -> tuple[set[str], set[str]]:
        """The users of the planned batches still stored, to add and to remove.

        Plans are dropped when a run ends; what is left belongs to a run that was
        interrupted or killed, whose unconfirmed batches may have reached the destination
        all the same (a request in flight when it stopped).
        """
        adds: set[str] = set()
        removes: set[str] = set()
        rows = self._conn.execute("SELECT op, ids FROM planned WHERE dest = ?", (self._dest,))
        for op, text in rows:
            (adds if op == ADD else removes).update(text.split("\n"))
        return adds, removes

    def _segments(self) -> Iterator[list[str]]:
        cur = self._conn.execute("SELECT ids FROM segments WHERE dest = ?", (self._dest,))
        for (text,) in cur:
            yield text.split("\n")

    def members(self) -> Iterator[str]:
        """Every member the destination confirmed (folds the journal first)."""
        self.fold()
        for chunk in self._segments():
            yield from chunk

    def member_count(self) -> int:
        """How many members the destination confirmed (folds the journal first)."""
        self.fold()
        (count,) = self._conn.execute(
            "SELECT COALESCE(SUM(n), 0) FROM segments WHERE dest = ?", (self._dest,)
        ).fetchone()
        return int(count)

    def replace_list(self, list_id: str, source: str = LIST_CREATED) -> None:
        """Switch to a new, empty list ``list_id`` (after its create answered 2xx).

        In one transaction the members, journal and plans of the old list are dropped and the
        list id replaced, so the next diff sends the whole cohort to the new list.
        """
        with _transaction(self._conn, immediate=True):
            for table in ("segments", "journal", "planned", "properties"):
                self._conn.execute(f"DELETE FROM {table} WHERE dest = ?", (self._dest,))
            self._conn.execute(
                "UPDATE destinations SET list_id = ?, list_source = ? WHERE id = ?",
                (list_id, source, self._dest),
            )

    def forget(self) -> None:
        """Drop everything known about this destination (members, journal, list id)."""
        with _transaction(self._conn, immediate=True):
            for table in ("segments", "journal", "planned"):
                self._conn.execute(f"DELETE FROM {table} WHERE dest = ?", (self._dest,))
            self._conn.execute(
                "UPDATE destinations SET list_id = NULL, list_source = NULL WHERE id = ?",
                (self._dest,),
            )

    # -- webhook user properties ---------------------------------------------------------
    def sent_properties(self) -> dict[str, str]:
        """The user properties last sent to each user (canonical JSON text), webhook mode."""
        rows = self._conn.execute(
            "SELECT user_id, props FROM properties WHERE dest = ?", (self._dest,)
        )
        return dict(rows)

    def record_properties(self, sent: Iterable[tuple[str, str]], dropped: Iterable[str]) -> None:
        """Remember the properties confirmed sent, and forget those of users who left."""
        with _transaction(self._conn, immediate=True):
            self._conn.executemany(
                "INSERT OR REPLACE INTO properties(dest, user_id, props) VALUES (?, ?, ?)",
                ((self._dest, uid, props) for uid, props in sent),
            )
            self._conn.executemany(
                "DELETE FROM properties WHERE dest = ? AND user_id = ?",
                ((self._dest, uid) for uid in dropped),
            )

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, diff: Diff, *, full: bool = False) -> int:
        """Record the start of a sync run and return its id."""
        cur = self._conn.execute(
            "INSERT INTO runs(dest, started_at, status, full_resend, entered, left_count)"
            " VALUES (?, ?, 'running', ?, ?, ?)",
            (self._dest, time.time(), int(full), len(diff.entered), len(diff.left)),
        )
        return int(cur.lastrowid or 0)

    def finish_run(
        self, run_id: int, *, status: str, added: int, removed: int, failed: int
    ) -> None:
        """Record how a run ended (``ok``, ``failed``, ``interrupted``) and its counts."""
        self._conn.execute(
            "UPDATE runs SET finished_at = ?, status = ?, added = ?, removed = ?, failed = ?"
            " WHERE id = ? AND dest = ?",
            (time.time(), status, added, removed, failed, run_id, self._dest),
        )

    def runs(self) -> list[RunRecord]:
        """Every run of this destination, oldest first."""
        rows = self._conn.execute(
            "SELECT id, started_at, finished_at, status, full_resend, entered, left_count,"
            " added, removed, failed FROM runs WHERE dest = ? ORDER BY id",
            (self._dest,),
        ).fetchall()
        return [
            RunRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9])
            for r in rows
        ]


class _transaction:
    """``BEGIN`` … ``COMMIT`` on an autocommit connection, ``ROLLBACK`` on error."""

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = False) -> None:
        self._conn = conn
        self._begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:  # SQLite may have rolled back already (disk full)
            self._conn.execute("ROLLBACK")


class Confirmer:
    """Writes confirmations from a background thread, many batches per transaction.

    :meth:`added` / :meth:`removed` only append to a deque (safe and cheap to call from the
    event loop); the writer wakes when ``group`` confirmations are waiting or every
    ``interval`` seconds, so the two threads do not trade the GIL once per batch. The
    counters :attr:`confirmed_batches` and :attr:`confirmed_users` move only after the
    transaction holding those batches committed. :meth:`close` waits until everything
    queued is committed and re-raises a write error.
    """

    def __init__(
        self, path: Path, dest_id: int, *, group: int = 256, interval: float = 0.05
    ) -> None:
        self._path = path
        self._dest = dest_id
        self._group = group
        self._interval = interval
        self._pending: deque[BatchRef | tuple[int, Sequence[str]]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self.confirmed_batches = 0
        self.confirmed_users = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cohortctl-confirm", daemon=True)
        self._thread.start()

    def added(self, ids: Sequence[str]) -> None:
        """Queue the confirmation that ``ids`` were added (after a 2xx)."""
        if ids:
            self._pending.append((ADD, ids))
            if len(self._pending) >= self._group:
                self._wake.set()

    def removed(self, ids: Sequence[str]) -> None:
        """Queue the confirmation that ``ids`` were removed (after a 2xx)."""
        if ids:
            self._pending.append((REMOVE, ids))
            if len(self._pending) >= self._group:
                self._wake.set()

    def confirm(self, ref: BatchRef) -> None:
        """Queue the confirmation of a planned batch (after a 2xx); allocation-free."""
        pending = self._pending
        pending.append(ref)
        if len(pending) >= self._group:
            self._wake.set()

    def _row(self, item: BatchRef | tuple[int, Sequence[str]]) -> BatchRef | tuple[object, ...]:
        if len(item) == 6:
            return item
        op, ids = item
        return (self._dest, op, len(ids), _join_ids(ids), None, None)

    def _run(self) -> None:
        conn = _connect(self._path)
        pending = self._pending
        row = self._row
        popleft = pending.popleft
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                stopping = self._stopping  # read before draining: nothing is added after it
                while pending:
                    count = min(len(pending), self._group)
                    rows = [row(popleft()) for _ in range(count)]
                    with _transaction(conn):
                        conn.executemany(
                            "INSERT INTO journal(dest, op, n, ids, planned, batch)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            rows,
                        )
                    self.confirmed_batches += len(rows)
                    self.confirmed_users += sum(r[2] for r in rows)  # type: ignore[misc]
                if stopping:
                    break
        except BaseException as exc:  # reported by close()
            self.error = exc
        finally:
            conn.close()

    def close(self) -> None:
        """Commit everything queued, stop the thread, and raise if a write failed."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Confirmer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_diff(snapshot_ids: Sequence[str], state: SyncState, *, full: bool = False) -> Diff:
    """Who entered and who left, comparing ``snapshot_ids`` to what ``state`` confirmed.

    ``entered`` keeps the snapshot's order (duplicates dropped); ``left`` follows storage
    order. With ``full`` every snapshot id counts as entered (a full resend); ``left`` is
    computed the same way. Stored members are streamed segment by segment against one set
    of the snapshot, so memory is the snapshot plus its set, not a second copy of the members.
    """
    state.fold()
    unsure_added, unsure_removed = state.planned_users()
    still_held: set[str] = set()  # unsure removes the state still counts as members
    snap = set(snapshot_ids)
    unique = len(snap)
    left: list[str] = []
    for chunk in state._segments():
        left.extend(filterfalse(snap.__contains__, chunk))
        if unsure_added:
            unsure_added.difference_update(chunk)  # confirmed: no doubt about these
        if unsure_removed:
            still_held.update(filter(unsure_removed.__contains__, chunk))
        if not full:
            # Segments are disjoint, so dropping this chunk cannot change a later verdict.
            snap.difference_update(chunk)
    if unsure_added or still_held:
        # A stopped run's unconfirmed batches may have reached the destination all the same:
        # remove again who may have been added and left the cohort, add again who may have
        # been removed and is in it. Adds and removes are idempotent.
        cohort = set(snapshot_ids)
        left.extend(sorted(uid for uid in unsure_added if uid not in cohort))
        snap.update(uid for uid in still_held if uid in cohort)
    entered = list(filter(snap.__contains__, snapshot_ids))
    if len(entered) > len(snap):
        entered = list(dict.fromkeys(entered))
    return Diff(entered=entered, left=left, unchanged=unique - len(entered))

"""The partner receiver's SQLite side: the schema, the append-only log, the snapshot, the journal.

:class:`PartnerLog` writes one :class:`CommitGroup` per transaction and folds the database
back into a :class:`PartnerState` at startup (snapshot, then the log in order), compacting a
log of :data:`COMPACT_AFTER` rows or more. :mod:`cohortctl.servers.partner.store` is the
event loop's side (group commit, reads from memory).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from cohortctl.ids import chunked

DEFAULT_JOURNAL_LIMIT = 10_000
COMPACT_AFTER = 1_000
_PRUNE_EVERY = 500
_CHUNK = 100_000  # ids per snapshot row, far below SQLite's 1 GB limit on a value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY,
    list_id INTEGER,
    op TEXT NOT NULL,
    ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_members (
    list_id INTEGER NOT NULL,
    ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_traits (
    key TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL,
    user_count INTEGER NOT NULL,
    body_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_log (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_journal (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    message_id TEXT,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""
TABLES = (
    "lists", "ops", "snapshot_members", "snapshot_traits", "journal", "counters", "webhook_log",
    "webhook_journal",
)  # fmt: skip
# Each applied Cohort Webhook message, as received: replayed in order at startup.
WEBHOOK_LOG = "INSERT INTO webhook_log(message_id, body) VALUES (?, ?)"
# Every webhook attempt (the webhook journal) and the webhook counters, kept like the journal.
WEBHOOK_JOURNAL = (
    "INSERT INTO webhook_journal(at, message_id, sha256, bytes, status, reason) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
WEBHOOK_JOURNAL_LIMIT = 100_000
WEBHOOK_COUNTER = "webhook:"  # the prefix of the webhook counters in the counters table
# Earlier versions kept one row per membership and per trait; they are read once, then
# compacted into the snapshot tables and dropped.
_LEGACY = {
    "members": "SELECT list_id, user_id FROM members",
    "traits": "SELECT key, user_id, value FROM traits",
}

LIST_INSERT = "INSERT INTO lists(id, name, created_at) VALUES (?, ?, ?)"
OP_INSERT = "INSERT INTO ops(list_id, op, ids) VALUES (?, ?, ?)"
JOURNAL_INSERT = (
    "INSERT INTO journal(at, method, path, status, reason, user_count, body_size) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
COUNT = (
    "INSERT INTO counters(name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)

JournalRow = tuple[float, str, str, "int | None", str, int, int]


@dataclass
class StoredList:
    """One list: its name and its members."""

    name: str
    members: set[str] = field(default_factory=set)


@dataclass
class PartnerState:
    """Everything the receiver knows, in memory (used from the event loop only)."""

    journal_limit: int = DEFAULT_JOURNAL_LIMIT
    lists: dict[int, StoredList] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)  # name -> the first list of that name
    traits: dict[str, dict[str, bool]] = field(default_factory=dict)  # key -> user -> value
    next_list_id: int = 1
    counters: Counter[str] = field(default_factory=Counter)
    journal: deque[JournalRow] = field(init=False)

    def __post_init__(self) -> None:
        self.journal = deque(maxlen=self.journal_limit)

    def apply(self, list_id: int | None, op: str, text: str) -> None:
        """Replay one row of the log."""
        if op == "traits":
            for key, user_id, value in json.loads(text):
                self.traits.setdefault(key, {})[user_id] = bool(value)
            return
        assert list_id is not None
        members = self.lists[list_id].members
        if op == "add":
            members.update(text.split("\n"))
        else:
            members.difference_update(text.split("\n"))


@dataclass
class CommitGroup:
    """The changes committed in one transaction, and how to publish or undo them in memory."""

    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    journal_rows: int = 0
    undo: list[Callable[[], None]] = field(default_factory=list)
    publish: list[Callable[[], None]] = field(default_factory=list)


class PartnerLog:
    """The SQLite side (``":memory:"`` or a file path): the log, the snapshot, the journal.

    Not thread-safe by design: create it, and call every method, from one thread.
    """

    def __init__(self, db: str = ":memory:", *, journal_limit: int = DEFAULT_JOURNAL_LIMIT):
        self.db = db
        self.journal_limit = max(1, journal_limit)
        self._journaled = 0
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        try:
            if db == ":memory:" or db.startswith("file::memory:"):
                # Nothing to recover after a crash, and without a rollback journal SQLite does
                # not copy every page it touches (a failed write is rolled back in memory).
                conn.execute("PRAGMA journal_mode=MEMORY")
            else:
                # Committed means handed to the OS: it survives the receiver, not the machine.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Close the connection (a file database keeps everything committed)."""
        self._conn.close()

    def write(self, group: CommitGroup) -> None:
        """Write one group of changes in one transaction; nothing of it stays if it fails."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for sql, same in groupby(group.statements, key=itemgetter(0)):
                conn.executemany(sql, [params for _, params in same])
            if group.counts:
                conn.executemany(COUNT, group.counts.items())
            self._journaled += group.journal_rows
            if self._journaled >= _PRUNE_EVERY:
                self._journaled = 0
                conn.execute(
                    "DELETE FROM journal WHERE id <= (SELECT max(id) FROM journal) - ?",
                    (self.journal_limit,),
                )
                conn.execute(
                    "DELETE FROM webhook_journal "
                    "WHERE seq <= (SELECT max(seq) FROM webhook_journal) - ?",
                    (WEBHOOK_JOURNAL_LIMIT,),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def webhook_bodies(self) -> list[bytes]:
        """The applied webhook messages, in the order they were applied."""
        rows = self._conn.execute("SELECT body FROM webhook_log ORDER BY seq")
        return [bytes(body) for (body,) in rows]

    def webhook_history(self) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
        """The webhook journal (oldest first, at most :data:`WEBHOOK_JOURNAL_LIMIT` rows:
        at, message_id, sha256, bytes, status, reason) and the webhook counters."""
        rows = self._conn.execute(
            "SELECT at, message_id, sha256, bytes, status, reason FROM webhook_journal "
            "ORDER BY seq DESC LIMIT ?",
            (WEBHOOK_JOURNAL_LIMIT,),
        ).fetchall()
        counters = self._conn.execute(
            "SELECT name, value FROM counters WHERE substr(name, 1, ?) = ?",
            (len(WEBHOOK_COUNTER), WEBHOOK_COUNTER),
        )
        return rows[::-1], {name[len(WEBHOOK_COUNTER) :]: value for name, value in counters}

    def load(self) -> PartnerState:
        """The state the database holds: snapshot, then the log folded in order.

        A long log (or tables of an earlier version) is compacted into the snapshot.
        """
        conn = self._conn
        state = PartnerState(self.journal_limit)
        for list_id, name in conn.execute("SELECT id, name FROM lists ORDER BY id"):
            state.lists[list_id] = StoredList(name)
            state.names.setdefault(name, list_id)
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'lists'").fetchone()
        state.next_list_id = max([0, row[0] if row else 0, *state.lists]) + 1
        legacy = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name in _LEGACY
        ]
        if "members" in legacy:
            for list_id, user_id in conn.execute(_LEGACY["members"]):
                if list_id in state.lists:
                    state.lists[list_id].members.add(user_id)
        if "traits" in legacy:
            for key, user_id, value in conn.execute(_LEGACY["traits"]):
                state.traits.setdefault(key, {})[user_id] = bool(value)
        for list_id, text in conn.execute("SELECT list_id, ids FROM snapshot_members"):
            state.lists[list_id].members.update(text.split("\n"))
        for key, data in conn.execute("SELECT key, data FROM snapshot_traits"):
            state.traits.setdefault(key, {}).update(json.loads(data))
        replayed = 0
        for list_id, op, text in conn.execute("SELECT list_id, op, ids FROM ops ORDER BY seq"):
            state.apply(list_id, op, text)
            replayed += 1
        state.counters.update(dict(conn.execute("SELECT name, value FROM counters")))
        rows = conn.execute(
            "SELECT at, method, path, status, reason, user_count, body_size FROM journal "
            "ORDER BY id DESC LIMIT ?",
            (self.journal_limit,),
        ).fetchall()
        state.journal.extend(reversed(rows))
        if legacy or replayed >= COMPACT_AFTER:
            self.compact(state, drop=legacy)
        return state

    def compact(self, state: PartnerState, *, drop: Iterable[str] = ()) -> None:
        """Replace the snapshot by ``state`` and empty the log, in one transaction."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.execute("DELETE FROM snapshot_members")
            conn.execute("DELETE FROM snapshot_traits")
            for list_id, stored in state.lists.items():
                conn.executemany(
                    "INSERT INTO snapshot_members(list_id, ids) VALUES (?, ?)",
                    [(list_id, "\n".join(ids)) for ids in chunked(list(stored.members), _CHUNK)],
                )
            for key, users in state.traits.items():
                conn.executemany(
                    "INSERT INTO snapshot_traits(key, data) VALUES (?, ?)",
                    [
                        (key, json.dumps(dict(items)))
                        for items in chunked(list(users.items()), _CHUNK)
                    ],
                )
            conn.execute("DELETE FROM ops")
            for table in drop:
                conn.execute(f"DROP TABLE {table}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

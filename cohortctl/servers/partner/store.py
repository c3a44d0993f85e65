"""Partner receiver state: lists, memberships and traits in memory, an append-only SQLite log.

The authoritative state lives in Python sets and dicts owned by the event loop, so a 1,000-id
add costs a few C-level set operations instead of 1,000 unique-index lookups in SQLite
(about 2 us each at millions of rows when ids arrive in random order). Every change is also
written as ONE row of an append-only log (``ops``: the list, the operation and the ids that
changed, newline-joined; validated ids hold no control character), with its journal row and
counters, by a single writer thread. Changes that queue up while a transaction is in flight
are applied together and committed in the next one (group commit): at most one group is
applied-but-uncommitted at any time. A request is answered only once its transaction is
committed; when a commit fails, its group is undone in memory and every request of the group
fails. Reads wait for :meth:`PartnerStore.committed` (at most one commit), so they never see
a group that is not committed.

At startup the database is folded back into memory: the snapshot tables, then the log in
order. A log of :data:`COMPACT_AFTER` rows or more is then compacted into the snapshot.

Memory grows with the members (roughly 100 bytes per membership, plus the log itself when
the database is ``":memory:"``): fine for a test receiver, not for a production store.

The journal holds what a person needs to follow a session (time, method, path, status,
reason, number of users, body size) and never headers or credentials.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from itertools import groupby, islice
from operator import itemgetter
from typing import Any, TypeVar

from cohortctl.servers.partner.validation import TraitUpdate

T = TypeVar("T")

DEFAULT_JOURNAL_LIMIT = 10_000
COMPACT_AFTER = 1_000
_PRUNE_EVERY = 500
_CHUNK = 100_000  # ids per snapshot row, far below SQLite's 1 GB limit on a value
_MISSING = object()

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
_TABLES = (
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

_NEW_LIST = "INSERT INTO lists(id, name, created_at) VALUES (?, ?, ?)"
_OP = "INSERT INTO ops(list_id, op, ids) VALUES (?, ?, ?)"
_JOURNAL = (
    "INSERT INTO journal(at, method, path, status, reason, user_count, body_size) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
COUNT = (
    "INSERT INTO counters(name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)

JournalRow = tuple[float, str, str, "int | None", str, int, int]


@dataclass(frozen=True)
class JournalEntry:
    """What the journal keeps of one request (no headers, no credentials, no body)."""

    method: str
    path: str
    users: int = 0
    body_size: int = 0
    at: float = 0.0


class StoreError(Exception):
    """A change could not be committed; nothing of it is kept, in memory or on disk."""


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).isoformat(timespec="milliseconds")


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
class _Group:
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

    def write(self, group: _Group) -> None:
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
                ids = list(stored.members)
                conn.executemany(
                    "INSERT INTO snapshot_members(list_id, ids) VALUES (?, ?)",
                    [(list_id, "\n".join(ids[i : i + _CHUNK])) for i in range(0, len(ids), _CHUNK)],
                )
            for key, users in state.traits.items():
                items = list(users.items())
                conn.executemany(
                    "INSERT INTO snapshot_traits(key, data) VALUES (?, ?)",
                    [
                        (key, json.dumps(dict(items[i : i + _CHUNK])))
                        for i in range(0, len(items), _CHUNK)
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


Change = Callable[[_Group], Any]


class PartnerStore:
    """The receiver's state for the event loop: changes are group-committed, reads are in memory.

    Create it with :meth:`open` on the event loop that will use it; every method must be
    called from that loop. The SQLite log is only touched from the store's writer thread.
    """

    def __init__(self, log: PartnerLog, state: PartnerState, executor: ThreadPoolExecutor):
        self.log = log
        self._state = state
        self._executor = executor
        self._queue: list[tuple[Change, asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._uncommitted = False  # a group is applied in memory, its commit under way
        self._readers: list[asyncio.Future[None]] = []

    @classmethod
    async def open(
        cls, db: str = ":memory:", *, journal_limit: int = DEFAULT_JOURNAL_LIMIT
    ) -> PartnerStore:
        """Open the database and load its state, on a new writer thread."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="partner-store")
        loop = asyncio.get_running_loop()
        try:
            log = await loop.run_in_executor(
                executor, partial(PartnerLog, db, journal_limit=journal_limit)
            )
            state = await loop.run_in_executor(executor, log.load)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(log, state, executor)

    async def close(self) -> None:
        """Wait for the changes under way, close the database and stop the writer thread."""
        while self._committer is not None:
            await asyncio.shield(self._committer)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.log.close)
        self._executor.shutdown(wait=True)

    @property
    def pending(self) -> int:
        """Changes waiting for the next transaction (the one under way not counted)."""
        return len(self._queue)

    async def committed(self) -> None:
        """Return once memory holds only committed changes (read the state right after)."""
        if self._uncommitted:
            reader: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._readers.append(reader)
            await reader

    # --- group commit ----------------------------------------------------------------------------

    async def _submit(self, change: Change) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((change, future))
        if self._committer is None:
            self._committer = loop.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        """Apply what queued up, commit it in one transaction, answer; repeat until idle."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                queued, self._queue = self._queue, []
                group = _Group()
                results: list[tuple[asyncio.Future[Any], Any]] = []
                self._uncommitted = True
                for change, future in queued:
                    try:
                        results.append((future, change(group)))
                    except Exception as exc:  # a bug in one change fails that request only
                        if not future.done():
                            future.set_exception(exc)
                try:
                    await loop.run_in_executor(self._executor, self.log.write, group)
                except Exception as exc:
                    for undo in reversed(group.undo):
                        undo()
                    for future, _ in results:
                        if not future.done():
                            future.set_exception(StoreError(f"commit failed: {exc}"))
                else:
                    for publish in group.publish:
                        publish()
                    self._state.counters.update(group.counts)
                    for future, result in results:
                        if not future.done():
                            future.set_result(result)
                self._uncommitted = False
                if self._readers:
                    readers, self._readers = self._readers, []
                    for reader in readers:
                        if not reader.done():
                            reader.set_result(None)
                    # The readers' tasks were woken first: they read before the next group.
                    await asyncio.sleep(0)
        finally:
            self._uncommitted = False
            self._committer = None

    def _journal(self, group: _Group, entry: JournalEntry, status: int | None, reason: str) -> None:
        row: JournalRow = (
            entry.at or time.time(),
            entry.method,
            entry.path,
            status,
            reason,
            entry.users,
            entry.body_size,
        )
        group.statements.append((_JOURNAL, row))
        group.journal_rows += 1
        group.counts["requests"] += 1
        group.counts[f"status:{status if status is not None else 'reset'}"] += 1
        if status is not None and 200 <= status < 300 and entry.users:
            group.counts["users_received"] += entry.users
        group.publish.append(partial(self._state.journal.append, row))

    # --- changes: each answered once committed ------------------------------------------------

    async def record(
        self,
        entry: JournalEntry,
        status: int | None,
        reason: str,
        statements: Iterable[tuple[str, tuple[Any, ...]]] = (),
    ) -> None:
        """Journal a request that changed nothing here (rejected, faulted, throttled), or
        whose change is kept elsewhere in memory and persisted by ``statements``."""

        def change(group: _Group) -> None:
            group.statements.extend(statements)
            self._journal(group, entry, status, reason)

        await self._submit(change)

    async def webhook_bodies(self) -> list[bytes]:
        """The applied webhook messages, in order (the receiver replays them at startup)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.log.webhook_bodies)

    async def webhook_history(self) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
        """The webhook journal and counters the database keeps (read at startup)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.log.webhook_history)

    async def create_list(self, name: str, entry: JournalEntry) -> tuple[int, bool]:
        """The id of the list called ``name`` (created if new) and whether it was created.

        Creating a list with the name of an existing one returns the existing list, so
        running a first sync twice does not leave an orphan list behind.
        """

        def change(group: _Group) -> tuple[int, bool]:
            state = self._state
            existing = state.names.get(name)
            if existing is not None:
                self._journal(group, entry, 200, "existing list returned")
                return existing, False
            list_id = state.next_list_id
            state.next_list_id += 1
            state.lists[list_id] = StoredList(name)
            state.names[name] = list_id
            group.undo.append(partial(self._forget_list, state, list_id, name))
            group.statements.append((_NEW_LIST, (list_id, name, time.time())))
            self._journal(group, entry, 200, "list created")
            return list_id, True

        result: tuple[int, bool] = await self._submit(change)
        return result

    @staticmethod
    def _forget_list(state: PartnerState, list_id: int, name: str) -> None:
        del state.lists[list_id]
        del state.names[name]
        state.next_list_id = list_id

    async def change_members(
        self, list_id: int, user_ids: list[str], entry: JournalEntry, *, add: bool
    ) -> tuple[int, int] | None:
        """Add (or remove) users: ``(changed, size)``, or None for an unknown list.

        Adding a member twice, or removing a non-member, changes nothing and is no error.
        Nothing is journaled for an unknown list: the caller decides the answer.
        """

        def change(group: _Group) -> tuple[int, int] | None:
            stored = self._state.lists.get(list_id)
            if stored is None:
                return None
            members = stored.members
            if add:
                changed = set(user_ids).difference(members)
                members.update(changed)
                group.undo.append(partial(members.difference_update, changed))
            else:
                changed = members.intersection(user_ids)
                members.difference_update(changed)
                group.undo.append(partial(members.update, changed))
            if changed:
                op = "add" if add else "remove"
                group.statements.append((_OP, (list_id, op, "\n".join(changed))))
            self._journal(group, entry, 200, f"{len(changed)} {'added' if add else 'removed'}")
            return len(changed), len(members)

        result: tuple[int, int] | None = await self._submit(change)
        return result

    async def set_traits(self, updates: list[TraitUpdate], entry: JournalEntry) -> int:
        """Store each user's cohort trait (the last value sent wins); the number stored."""

        def change(group: _Group) -> int:
            traits = self._state.traits
            previous: list[tuple[dict[str, bool], str, object]] = []
            for update in updates:
                users = traits.setdefault(update.key, {})
                previous.append((users, update.user_id, users.get(update.user_id, _MISSING)))
                users[update.user_id] = update.value
            group.undo.append(partial(self._restore_traits, previous))
            text = json.dumps([[u.key, u.user_id, u.value] for u in updates])
            group.statements.append((_OP, (None, "traits", text)))
            self._journal(group, entry, 200, f"{len(updates)} trait(s) set")
            return len(updates)

        result: int = await self._submit(change)
        return result

    @staticmethod
    def _restore_traits(previous: list[tuple[dict[str, bool], str, object]]) -> None:
        for users, user_id, value in reversed(previous):
            if value is _MISSING:
                del users[user_id]
            else:
                users[user_id] = value  # type: ignore[assignment]

    async def clear(self) -> None:
        """Forget every list, membership, trait, journal entry and counter."""

        def change(group: _Group) -> None:
            state = self._state
            saved = (state.lists, state.names, state.traits)
            state.lists, state.names, state.traits = {}, {}, {}
            group.undo.append(partial(self._restore_all, state, saved))
            group.statements.extend((f"DELETE FROM {table}", ()) for table in _TABLES)
            group.counts.clear()
            group.publish.append(state.journal.clear)
            group.publish.append(state.counters.clear)

        await self._submit(change)

    @staticmethod
    def _restore_all(
        state: PartnerState,
        saved: tuple[dict[int, StoredList], dict[str, int], dict[str, dict[str, bool]]],
    ) -> None:
        state.lists, state.names, state.traits = saved

    # --- reads, from memory -------------------------------------------------------------------

    def list_exists(self, list_id: int) -> bool:
        """True when a list with this id exists."""
        return list_id in self._state.lists

    def state(self) -> dict[str, Any]:
        """Lists with their sizes, trait users and keys, and the request counters."""
        state = self._state
        lists = [
            {"listId": str(list_id), "name": stored.name, "size": len(stored.members)}
            for list_id, stored in sorted(state.lists.items())
        ]
        trait_users: set[str] = set().union(*state.traits.values())
        keys = sorted(key for key, users in state.traits.items() if users)
        counters = state.counters
        by_status = {
            name.partition(":")[2]: value
            for name, value in sorted(counters.items())
            if name.startswith("status:") and value
        }
        return {
            "lists": lists,
            "traits": {"users": len(trait_users), "keys": keys},
            "counters": {
                "requests": counters.get("requests", 0),
                "by_status": by_status,
                "users_received": counters.get("users_received", 0),
            },
        }

    def members(self, list_id: int) -> dict[str, Any] | None:
        """A list's id, name and sorted members, or None when there is no such list."""
        stored = self._state.lists.get(list_id)
        if stored is None:
            return None
        return {"listId": str(list_id), "name": stored.name, "members": sorted(stored.members)}

    def traits(self, key: str) -> dict[str, Any]:
        """The users whose trait ``key`` is true, and those whose trait is false (sorted)."""
        users = self._state.traits.get(key, {})
        return {
            "key": key,
            "true": sorted(u for u, value in users.items() if value),
            "false": sorted(u for u, value in users.items() if not value),
        }

    def trait_counts(self) -> list[dict[str, Any]]:
        """Each trait key with how many users have it true and how many false."""
        counts = []
        for key, users in sorted(self._state.traits.items()):
            true = sum(1 for value in users.values() if value)
            counts.append({"key": key, "true": true, "false": len(users) - true})
        return counts

    def journal(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` requests, oldest first."""
        journal = self._state.journal
        count = max(0, min(limit, len(journal)))
        return [
            {
                "at": _iso(at),
                "method": method,
                "path": path,
                "status": status,
                "reason": reason,
                "users": users,
                "bytes": size,
            }
            for at, method, path, status, reason, users, size in islice(
                journal, len(journal) - count, None
            )
        ]

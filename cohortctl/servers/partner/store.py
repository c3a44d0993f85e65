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

The SQLite side (schema, log, snapshot, startup folding) is :mod:`.database`.

The journal holds what a person needs to follow a session (time, method, path, status,
reason, number of users, body size) and never headers or credentials.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from cohortctl.servers.partner.database import (
    COUNT,
    DEFAULT_JOURNAL_LIMIT,
    JOURNAL_INSERT,
    LIST_INSERT,
    OP_INSERT,
    TABLES,
    WEBHOOK_COUNTER,
    WEBHOOK_JOURNAL,
    WEBHOOK_JOURNAL_LIMIT,
    WEBHOOK_LOG,
    CommitGroup,
    JournalRow,
    PartnerLog,
    PartnerState,
    StoredList,
)
from cohortctl.servers.partner.validation import TraitUpdate

# Names the receiver and its webhooks take from here (the SQL lives in ``database``).
__all__ = [
    "COUNT",
    "DEFAULT_JOURNAL_LIMIT",
    "WEBHOOK_COUNTER",
    "WEBHOOK_JOURNAL",
    "WEBHOOK_JOURNAL_LIMIT",
    "WEBHOOK_LOG",
    "JournalEntry",
    "PartnerLog",
    "PartnerState",
    "PartnerStore",
    "StoreError",
]

T = TypeVar("T")
_MISSING = object()


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


Change = Callable[[CommitGroup], Any]


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
                group = CommitGroup()
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

    def _journal(
        self, group: CommitGroup, entry: JournalEntry, status: int | None, reason: str
    ) -> None:
        row: JournalRow = (
            entry.at or time.time(),
            entry.method,
            entry.path,
            status,
            reason,
            entry.users,
            entry.body_size,
        )
        group.statements.append((JOURNAL_INSERT, row))
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

        def change(group: CommitGroup) -> None:
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

        def change(group: CommitGroup) -> tuple[int, bool]:
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
            group.statements.append((LIST_INSERT, (list_id, name, time.time())))
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

        def change(group: CommitGroup) -> tuple[int, int] | None:
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
                group.statements.append((OP_INSERT, (list_id, op, "\n".join(changed))))
            self._journal(group, entry, 200, f"{len(changed)} {'added' if add else 'removed'}")
            return len(changed), len(members)

        result: tuple[int, int] | None = await self._submit(change)
        return result

    async def set_traits(self, updates: list[TraitUpdate], entry: JournalEntry) -> int:
        """Store each user's cohort trait (the last value sent wins); the number stored."""

        def change(group: CommitGroup) -> int:
            traits = self._state.traits
            previous: list[tuple[dict[str, bool], str, object]] = []
            for update in updates:
                users = traits.setdefault(update.key, {})
                previous.append((users, update.user_id, users.get(update.user_id, _MISSING)))
                users[update.user_id] = update.value
            group.undo.append(partial(self._restore_traits, previous))
            text = json.dumps([[u.key, u.user_id, u.value] for u in updates])
            group.statements.append((OP_INSERT, (None, "traits", text)))
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

        def change(group: CommitGroup) -> None:
            state = self._state
            saved = (state.lists, state.names, state.traits)
            state.lists, state.names, state.traits = {}, {}, {}
            group.undo.append(partial(self._restore_all, state, saved))
            group.statements.extend((f"DELETE FROM {table}", ()) for table in TABLES)
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

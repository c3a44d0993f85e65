"""SQLite state of the partner receiver: lists, memberships, traits, a bounded journal, counters.

One connection, used from one thread only (the receiver's writer thread): every method runs
in one transaction and returns once it is committed, so the receiver answers 2xx only for
state that is stored. Memberships are written set-based (``json_each`` over the JSON array of
ids) so SQLite does the per-row work in C without the GIL, while the event loop parses the
next request on the other core.

The journal holds what a person needs to follow a session (time, method, path, status,
reason, number of users, body size) and never headers or credentials.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cohortctl.servers.partner_validation import TraitUpdate

DEFAULT_JOURNAL_LIMIT = 10_000
_PRUNE_EVERY = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS lists_by_name ON lists(name);
CREATE TABLE IF NOT EXISTS members (
    list_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (list_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traits (
    key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    value INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (key, user_id)
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

_ADD = "INSERT OR IGNORE INTO members(list_id, user_id) SELECT ?, value FROM json_each(?, ?)"
_REMOVE = "DELETE FROM members WHERE list_id = ? AND user_id IN (SELECT value FROM json_each(?, ?))"
_COUNT = (
    "INSERT INTO counters(name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)
_TRAIT = (
    "INSERT INTO traits(key, user_id, value, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(key, user_id) DO UPDATE SET "
    "value = excluded.value, updated_at = excluded.updated_at"
)


@dataclass(frozen=True)
class Entry:
    """What the journal keeps of one request (no headers, no credentials, no body)."""

    method: str
    path: str
    users: int = 0
    body_size: int = 0
    at: float = 0.0


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).isoformat(timespec="milliseconds")


class PartnerStore:
    """The receiver's state in one SQLite database (``":memory:"`` or a file path).

    Not thread-safe by design: create it, and call every method, from one thread.
    """

    def __init__(self, db: str = ":memory:", *, journal_limit: int = DEFAULT_JOURNAL_LIMIT):
        self.db = db
        self.journal_limit = max(1, journal_limit)
        self._since_prune = 0
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        if db == ":memory:" or db.startswith("file::memory:"):
            # Nothing to recover after a crash; the statements used here do not fail midway,
            # and without a rollback journal SQLite does not copy every page it touches.
            conn.execute("PRAGMA journal_mode=OFF")
        else:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def close(self) -> None:
        """Close the connection (a file database keeps everything committed)."""
        self._conn.close()

    # --- writes: one transaction each, committed before returning -----------------------------

    def _record(self, entry: Entry, status: int | None, reason: str) -> None:
        at = entry.at or time.time()
        cur = self._conn.execute(
            "INSERT INTO journal(at, method, path, status, reason, user_count, body_size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, entry.method, entry.path, status, reason, entry.users, entry.body_size),
        )
        counts = [("requests", 1), (f"status:{status if status is not None else 'reset'}", 1)]
        if status is not None and 200 <= status < 300 and entry.users:
            counts.append(("users_received", entry.users))
        self._conn.executemany(_COUNT, counts)
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY and cur.lastrowid is not None:
            self._since_prune = 0
            self._conn.execute(
                "DELETE FROM journal WHERE id <= ?", (cur.lastrowid - self.journal_limit,)
            )

    def record(self, entry: Entry, status: int | None, reason: str) -> None:
        """Journal a request that changed nothing (rejected, faulted, throttled)."""
        self._conn.execute("BEGIN")
        try:
            self._record(entry, status, reason)
        finally:
            self._conn.execute("COMMIT")

    def create_list(self, name: str, entry: Entry) -> tuple[int, bool]:
        """The id of the list called ``name`` (created if new) and whether it was created.

        Creating a list with the name of an existing one returns the existing list, so
        running a first sync twice does not leave an orphan list behind.
        """
        self._conn.execute("BEGIN")
        try:
            row = self._conn.execute(
                "SELECT id FROM lists WHERE name = ? ORDER BY id LIMIT 1", (name,)
            ).fetchone()
            created = row is None
            if created:
                cur = self._conn.execute(
                    "INSERT INTO lists(name, created_at) VALUES (?, ?)", (name, time.time())
                )
                list_id = int(cur.lastrowid or 0)
            else:
                list_id = int(row[0])
            self._record(entry, 200, "list created" if created else "existing list returned")
        finally:
            self._conn.execute("COMMIT")
        return list_id, created

    def change_members(
        self,
        list_id: int,
        user_ids: list[str] | str,
        entry: Entry,
        *,
        add: bool,
        path: str = "$",
    ) -> tuple[int, int] | None:
        """Add (or remove) users: ``(changed, size)``, or None for an unknown list.

        ``user_ids`` is a list, or JSON text holding the array of (validated) ids at the
        JSON ``path``: the request body itself can be handed over, and SQLite extracts the
        ids in C. Adding a member twice, or removing a non-member, changes nothing and is
        no error. Nothing is journaled for an unknown list: the caller decides the answer.
        """
        ids_json = user_ids if isinstance(user_ids, str) else json.dumps(user_ids)
        self._conn.execute("BEGIN")
        try:
            row = self._conn.execute("SELECT size FROM lists WHERE id = ?", (list_id,)).fetchone()
            if row is None:
                return None
            changed = self._conn.execute(
                _ADD if add else _REMOVE, (list_id, ids_json, path)
            ).rowcount
            size = int(row[0]) + (changed if add else -changed)
            self._conn.execute("UPDATE lists SET size = ? WHERE id = ?", (size, list_id))
            verb = "added" if add else "removed"
            self._record(entry, 200, f"{changed} {verb}")
        finally:
            self._conn.execute("COMMIT")
        return changed, size

    def set_traits(self, updates: list[TraitUpdate], entry: Entry) -> int:
        """Store each user's cohort trait (the last value sent wins); the number stored."""
        now = time.time()
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(_TRAIT, [(u.key, u.user_id, int(u.value), now) for u in updates])
            self._record(entry, 200, f"{len(updates)} trait(s) set")
        finally:
            self._conn.execute("COMMIT")
        return len(updates)

    def clear(self) -> None:
        """Forget every list, membership, trait, journal entry and counter."""
        self._conn.execute("BEGIN")
        try:
            for table in ("lists", "members", "traits", "journal", "counters"):
                self._conn.execute(f"DELETE FROM {table}")
        finally:
            self._conn.execute("COMMIT")

    # --- reads ---------------------------------------------------------------------------------

    def list_exists(self, list_id: int) -> bool:
        """True when a list with this id exists."""
        return (
            self._conn.execute("SELECT 1 FROM lists WHERE id = ?", (list_id,)).fetchone()
            is not None
        )

    def state(self) -> dict[str, Any]:
        """Lists with their sizes, trait users and keys, and the request counters."""
        lists = [
            {"listId": str(i), "name": name, "size": size}
            for i, name, size in self._conn.execute("SELECT id, name, size FROM lists ORDER BY id")
        ]
        users = self._conn.execute("SELECT count(DISTINCT user_id) FROM traits").fetchone()[0]
        keys = [k for (k,) in self._conn.execute("SELECT DISTINCT key FROM traits ORDER BY key")]
        counters = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
        by_status = {
            name.partition(":")[2]: value
            for name, value in sorted(counters.items())
            if name.startswith("status:")
        }
        return {
            "lists": lists,
            "traits": {"users": users, "keys": keys},
            "counters": {
                "requests": counters.get("requests", 0),
                "by_status": by_status,
                "users_received": counters.get("users_received", 0),
            },
        }

    def members(self, list_id: int) -> dict[str, Any] | None:
        """A list's id, name and sorted members, or None when there is no such list."""
        row = self._conn.execute("SELECT name FROM lists WHERE id = ?", (list_id,)).fetchone()
        if row is None:
            return None
        members = [
            u
            for (u,) in self._conn.execute(
                "SELECT user_id FROM members WHERE list_id = ? ORDER BY user_id", (list_id,)
            )
        ]
        return {"listId": str(list_id), "name": row[0], "members": members}

    def traits(self, key: str) -> dict[str, Any]:
        """The users whose trait ``key`` is true, and those whose trait is false (sorted)."""
        result: dict[str, Any] = {"key": key, "true": [], "false": []}
        for user_id, value in self._conn.execute(
            "SELECT user_id, value FROM traits WHERE key = ? ORDER BY user_id", (key,)
        ):
            result["true" if value else "false"].append(user_id)
        return result

    def journal(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` requests, oldest first."""
        rows = self._conn.execute(
            "SELECT at, method, path, status, reason, user_count, body_size FROM journal "
            "ORDER BY id DESC LIMIT ?",
            (max(0, min(limit, self.journal_limit)),),
        ).fetchall()
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
            for at, method, path, status, reason, users, size in reversed(rows)
        ]

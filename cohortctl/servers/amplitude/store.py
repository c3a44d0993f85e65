"""SQLite state of the fake Amplitude API: cohorts, their members, export jobs.

One ``CohortStore`` is shared by the server (which calls it from a worker thread) and by tests
(which read it from their own thread): every method takes the store's lock, and the connection
is opened with ``check_same_thread=False``. Each write is one transaction.

Tables added later are created with ``IF NOT EXISTS``, so an older database file still opens.

Every member has an Amplitude id; members added by user id also keep the user id, and their
Amplitude id is a stable fake derived from it (``amplitude_id_for``), as if Amplitude had
resolved the user. So a user added ``BY_NAME`` can be removed ``BY_ID`` and vice versa.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STORE_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cohorts (
    id TEXT PRIMARY KEY,
    app_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    published INTEGER NOT NULL,
    count_group TEXT NOT NULL,
    id_type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_mod INTEGER NOT NULL,
    last_computed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    cohort_id TEXT NOT NULL REFERENCES cohorts(id),
    amplitude_id INTEGER NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (cohort_id, amplitude_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exports (
    request_id TEXT PRIMARY KEY,
    cohort_id TEXT NOT NULL REFERENCES cohorts(id),
    prop_keys TEXT,
    polls INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_properties (
    amplitude_id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL DEFAULT '',
    properties TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cohort_syncs (
    cohort_id TEXT NOT NULL REFERENCES cohorts(id),
    position INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (cohort_id, position)
);
"""

_COHORT_ID_ALPHABET = string.ascii_lowercase + string.digits
MAX_AMPLITUDE_ID = 2**63 - 1
# Derived ids live in their own range, far above the ids tests and demos usually pick.
_DERIVED_BASE = 10**17
_DERIVED_SPAN = 9 * 10**17


def amplitude_id_for(user_id: str) -> int:
    """The stable fake Amplitude id of a user id (the same on every run and machine)."""
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return _DERIVED_BASE + int.from_bytes(digest, "big") % _DERIVED_SPAN


def new_cohort_id() -> str:
    """A random cohort id shaped like Amplitude's: 7 lowercase letters and digits."""
    return "".join(secrets.choice(_COHORT_ID_ALPHABET) for _ in range(7))


class CohortTooLarge(Exception):
    """A change would make a cohort larger than the store's limit; nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"cohort would have {size} members: at most {limit} per cohort")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Cohort:
    """One cohort's row and current size."""

    id: str
    app_id: int
    name: str
    owner: str
    published: bool
    count_group: str
    id_type: str
    created_at: int
    last_mod: int
    last_computed: int
    size: int

    def as_api(self) -> dict[str, Any]:
        """The cohort as Amplitude shows it in ``cohortsById`` and ``GET /api/3/cohorts``."""
        return {
            "appId": self.app_id,
            "archived": False,
            "definition": {
                "version": 3,
                "countGroup": self.count_group,
                "cohortType": "UNIQUES",
                "andClauses": [],
                "referenceFrameTimeParams": {},
            },
            "description": None,
            "finished": True,
            "id": self.id,
            "name": self.name,
            "owners": [self.owner],
            "published": self.published,
            "size": self.size,
            "type": "manual_upload",
            "lastMod": self.last_mod,
            "createdAt": self.created_at,
            "lastComputed": self.last_computed,
            "hidden": False,
            "metadata": None,
            "view_count": None,
            "popularity": None,
            "last_viewed": None,
            "chart_id": None,
            "edit_id": None,
            "is_predictive": False,
            "is_official_content": False,
            "location_id": None,
            "shortcut_ids": [],
        }


@dataclass(frozen=True)
class ExportJob:
    """An export request and how many times its status was polled."""

    request_id: str
    cohort_id: str
    prop_keys: tuple[str, ...] | None
    polls: int
    created_at: int


@dataclass(frozen=True)
class MemberChange:
    """One validated membership operation: ADD or REMOVE these members."""

    operation: str  # "ADD" | "REMOVE"
    members: Sequence[tuple[int, str]]  # (amplitude_id, user_id or "")


_COHORT_COLUMNS = (
    "id, app_id, name, owner, published, count_group, id_type, created_at, last_mod, last_computed"
)


class CohortStore:
    """Thread-safe SQLite state; ``path`` is a file or ``":memory:"``."""

    def __init__(
        self,
        path: str = ":memory:",
        *,
        max_cohort_size: int = 2_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_cohort_size = max_cohort_size
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?)",
                    (str(STORE_SCHEMA_VERSION),),
                )
            elif int(row[0]) != STORE_SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path}: fake Amplitude database has schema {row[0]}, "
                    f"expected {STORE_SCHEMA_VERSION}: use a new --db file"
                )

    def close(self) -> None:
        """Close the connection (the server does this on shutdown)."""
        with self._lock:
            self._conn.close()

    def _now(self) -> int:
        return int(self._clock())

    # -- reads ---------------------------------------------------------------------------

    def cohort(self, cohort_id: str) -> Cohort | None:
        """The cohort with this id and its current size, or None."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COHORT_COLUMNS} FROM cohorts WHERE id = ?", (cohort_id,)
            ).fetchone()
            if row is None:
                return None
            return self._cohort_from_row(row, self._size(cohort_id))

    def cohorts(self) -> list[Cohort]:
        """Every cohort, oldest first, with current sizes."""
        with self._lock:
            sizes = dict(
                self._conn.execute("SELECT cohort_id, COUNT(*) FROM members GROUP BY cohort_id")
            )
            rows = self._conn.execute(
                f"SELECT {_COHORT_COLUMNS} FROM cohorts ORDER BY created_at, rowid"
            ).fetchall()
            return [self._cohort_from_row(row, sizes.get(row[0], 0)) for row in rows]

    def members(self, cohort_id: str) -> list[tuple[str, str]]:
        """Members as ``(amplitude_id, user_id)`` strings, ordered by Amplitude id."""
        with self._lock:
            return [
                (str(amp), user)
                for amp, user in self._conn.execute(
                    "SELECT amplitude_id, user_id FROM members WHERE cohort_id = ? "
                    "ORDER BY amplitude_id",
                    (cohort_id,),
                )
            ]

    def user_ids(self, cohort_id: str) -> set[str]:
        """The user ids of the members that have one."""
        with self._lock:
            return {
                user
                for (user,) in self._conn.execute(
                    "SELECT user_id FROM members WHERE cohort_id = ? AND user_id != ''",
                    (cohort_id,),
                )
            }

    def amplitude_ids(self, cohort_id: str) -> set[str]:
        """The Amplitude ids of every member, as strings."""
        with self._lock:
            return {
                str(amp)
                for (amp,) in self._conn.execute(
                    "SELECT amplitude_id FROM members WHERE cohort_id = ?", (cohort_id,)
                )
            }

    def size(self, cohort_id: str) -> int:
        """How many members the cohort has (0 for an unknown cohort)."""
        with self._lock:
            return self._size(cohort_id)

    def _size(self, cohort_id: str) -> int:
        (count,) = self._conn.execute(
            "SELECT COUNT(*) FROM members WHERE cohort_id = ?", (cohort_id,)
        ).fetchone()
        return int(count)

    @staticmethod
    def _cohort_from_row(row: Sequence[Any], size: int) -> Cohort:
        return Cohort(
            id=row[0],
            app_id=row[1],
            name=row[2],
            owner=row[3],
            published=bool(row[4]),
            count_group=row[5],
            id_type=row[6],
            created_at=row[7],
            last_mod=row[8],
            last_computed=row[9],
            size=size,
        )

    # -- writes --------------------------------------------------------------------------

    def save_upload(
        self,
        *,
        name: str,
        app_id: int,
        owner: str,
        published: bool,
        count_group: str,
        id_type: str,
        members: Iterable[tuple[int, str]],
        existing_cohort_id: str | None = None,
    ) -> Cohort:
        """Create a cohort, or replace the members of ``existing_cohort_id``, in one transaction.

        Raises KeyError for an unknown existing cohort and CohortTooLarge over the size limit.
        """
        now = self._now()
        with self._lock, self._transaction():
            if existing_cohort_id is not None:
                cohort_id = existing_cohort_id
                cur = self._conn.execute(
                    "UPDATE cohorts SET app_id=?, name=?, owner=?, published=?, count_group=?, "
                    "id_type=?, last_mod=?, last_computed=? WHERE id=?",
                    (app_id, name, owner, published, count_group, id_type, now, now, cohort_id),
                )
                if cur.rowcount == 0:
                    raise KeyError(cohort_id)
                self._conn.execute("DELETE FROM members WHERE cohort_id = ?", (cohort_id,))
            else:
                cohort_id = self._unused_cohort_id()
                self._conn.execute(
                    f"INSERT INTO cohorts({_COHORT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        cohort_id,
                        app_id,
                        name,
                        owner,
                        published,
                        count_group,
                        id_type,
                        now,
                        now,
                        now,
                    ),
                )
            self._add(cohort_id, members)
            size = self._check_size(cohort_id)
            row = self._conn.execute(
                f"SELECT {_COHORT_COLUMNS} FROM cohorts WHERE id = ?", (cohort_id,)
            ).fetchone()
            return self._cohort_from_row(row, size)

    def apply_membership(self, cohort_id: str, changes: Sequence[MemberChange]) -> Cohort:
        """Apply ADD/REMOVE changes in order, in one transaction (all or nothing).

        Raises KeyError for an unknown cohort and CohortTooLarge over the size limit.
        """
        now = self._now()
        with self._lock, self._transaction():
            cur = self._conn.execute(
                "UPDATE cohorts SET last_mod=?, last_computed=? WHERE id=?", (now, now, cohort_id)
            )
            if cur.rowcount == 0:
                raise KeyError(cohort_id)
            for change in changes:
                if change.operation == "ADD":
                    self._add(cohort_id, change.members)
                else:
                    self._conn.executemany(
                        "DELETE FROM members WHERE cohort_id = ? AND amplitude_id = ?",
                        ((cohort_id, amp) for amp, _ in change.members),
                    )
            size = self._check_size(cohort_id)
            row = self._conn.execute(
                f"SELECT {_COHORT_COLUMNS} FROM cohorts WHERE id = ?", (cohort_id,)
            ).fetchone()
            return self._cohort_from_row(row, size)

    def _add(self, cohort_id: str, members: Iterable[tuple[int, str]]) -> None:
        # Adding a user id to a member known only by Amplitude id fills in its user id.
        self._conn.executemany(
            "INSERT INTO members(cohort_id, amplitude_id, user_id) VALUES (?, ?, ?) "
            "ON CONFLICT(cohort_id, amplitude_id) DO UPDATE SET user_id = excluded.user_id "
            "WHERE members.user_id = '' AND excluded.user_id != ''",
            ((cohort_id, amp, user) for amp, user in members),
        )

    def _check_size(self, cohort_id: str) -> int:
        size = self._size(cohort_id)
        if size > self.max_cohort_size:
            raise CohortTooLarge(size, self.max_cohort_size)
        return size

    def _unused_cohort_id(self) -> str:
        while True:
            candidate = new_cohort_id()
            if self._conn.execute("SELECT 1 FROM cohorts WHERE id=?", (candidate,)).fetchone():
                continue
            return candidate

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # -- exports -------------------------------------------------------------------------

    def create_export(self, cohort_id: str, prop_keys: Sequence[str] | None) -> ExportJob:
        """Record a new export request for an existing cohort."""
        job = ExportJob(
            request_id=secrets.token_hex(16),
            cohort_id=cohort_id,
            prop_keys=tuple(prop_keys) if prop_keys is not None else None,
            polls=0,
            created_at=self._now(),
        )
        with self._lock:
            self._conn.execute(
                "INSERT INTO exports(request_id, cohort_id, prop_keys, polls, created_at) "
                "VALUES (?, ?, ?, 0, ?)",
                (
                    job.request_id,
                    cohort_id,
                    None if job.prop_keys is None else json.dumps(list(job.prop_keys)),
                    job.created_at,
                ),
            )
        return job

    def export(self, request_id: str) -> ExportJob | None:
        """The export request with this id, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT request_id, cohort_id, prop_keys, polls, created_at FROM exports "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        keys = None if row[2] is None else tuple(json.loads(row[2]))
        return ExportJob(row[0], row[1], keys, row[3], row[4])

    def poll_export(self, request_id: str) -> ExportJob | None:
        """Count one status poll of an export and return it (None when unknown)."""
        with self._lock:
            self._conn.execute(
                "UPDATE exports SET polls = polls + 1 WHERE request_id = ?", (request_id,)
            )
            return self.export(request_id)

    def exports_polled_at_most(self, polls: int, *, within: float | None = None) -> int:
        """How many export requests have been polled at most ``polls`` times (still running).

        With ``within`` (seconds) only requests made that recently count: a request nobody
        polls (a client that only checks the cohort exists) stops counting after a while,
        as Amplitude's job would have finished on its own.
        """
        since = self._now() - within if within is not None else None
        with self._lock:
            (count,) = self._conn.execute(
                "SELECT COUNT(*) FROM exports WHERE polls <= ? AND (? IS NULL OR created_at > ?)",
                (polls, since, since),
            ).fetchone()
            return int(count)

    def export_csv(self, job: ExportJob) -> bytes:
        """The export file: header ``"amplitude_id","user_id"``, then property columns.

        ``prop_keys`` None (no ``props=1``): ids only; ``()``: every property key the fake
        holds for the members, sorted; else those keys. A member without a value gets ``""``.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
        members = self.members(job.cohort_id)
        by_amp: dict[str, dict[str, Any]] = {}
        by_user: dict[str, dict[str, Any]] = {}
        if job.prop_keys is not None:
            for known_amp, known_user, props in self.user_properties():
                by_amp[str(known_amp)] = props
                if known_user:
                    by_user[known_user] = props
        held = [by_amp.get(amp) or by_user.get(user) or {} for amp, user in members]
        extra = list(job.prop_keys) if job.prop_keys else sorted({k for p in held for k in p})
        writer.writerow(["amplitude_id", "user_id", *extra])
        for (amp, user), props in zip(members, held, strict=True):
            writer.writerow([amp, user, *(_csv_value(props.get(key)) for key in extra)])
        return buffer.getvalue().encode("utf-8")

    # -- users: properties and search ------------------------------------------------------

    def set_user_properties(
        self,
        properties: Mapping[str, Any],
        *,
        user_id: str | None = None,
        amplitude_id: int | None = None,
    ) -> int:
        """Hold user properties for one user (by user id, Amplitude id or both); returns its
        Amplitude id. A user id alone gets its stable derived Amplitude id."""
        if amplitude_id is None:
            if not user_id:
                raise ValueError("a user needs a user_id or an amplitude_id")
            amplitude_id = amplitude_id_for(user_id)
        with self._lock:
            self._conn.execute(
                "INSERT INTO user_properties(amplitude_id, user_id, properties) VALUES (?, ?, ?) "
                "ON CONFLICT(amplitude_id) DO UPDATE SET properties = excluded.properties, "
                "user_id = CASE WHEN excluded.user_id != '' THEN excluded.user_id "
                "ELSE user_properties.user_id END",
                (amplitude_id, user_id or "", json.dumps(dict(properties), sort_keys=True)),
            )
        return amplitude_id

    def user_properties(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Every user with properties: ``(amplitude_id, user_id or "", properties)``.

        An export matches a member by Amplitude id, else by user id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT amplitude_id, user_id, properties FROM user_properties"
            ).fetchall()
        return [(int(amp), user, json.loads(props)) for amp, user, props in rows]

    def search_users(self, query: str, *, limit: int = 100) -> list[tuple[str, int]]:
        """Users the fake knows (members of its cohorts, users with properties) matching
        ``query``: its Amplitude id, its user id, or a prefix of its user id. Exact matches
        come first; ``(user_id, amplitude_id)`` pairs, user id ``""`` when there is none."""
        found: dict[int, str] = {}
        sources = (
            "SELECT amplitude_id, user_id FROM members UNION "
            "SELECT amplitude_id, user_id FROM user_properties"
        )
        with self._lock:
            if query.isascii() and query.isdigit() and int(query) <= MAX_AMPLITUDE_ID:
                for amp, user in self._conn.execute(
                    f"SELECT amplitude_id, MAX(user_id) FROM ({sources}) WHERE amplitude_id = ? "
                    "GROUP BY amplitude_id",
                    (int(query),),
                ):
                    found[int(amp)] = user
            for amp, user in self._conn.execute(
                f"SELECT DISTINCT amplitude_id, user_id FROM ({sources}) "
                "WHERE user_id != '' AND substr(user_id, 1, length(?)) = ? "
                "ORDER BY user_id != ?, user_id LIMIT ?",
                (query, query, query, limit),
            ):
                found.setdefault(int(amp), user)
        return [(user, amp) for amp, user in list(found.items())[:limit]]

    # -- sync destinations -------------------------------------------------------------------

    def set_sync_metadata(self, cohort_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
        """Set the cohort's ``syncMetadata`` (its sync destinations) as the API shows it."""
        with self._lock, self._transaction():
            if self._conn.execute("SELECT 1 FROM cohorts WHERE id=?", (cohort_id,)).fetchone():
                self._conn.execute("DELETE FROM cohort_syncs WHERE cohort_id = ?", (cohort_id,))
                self._conn.executemany(
                    "INSERT INTO cohort_syncs(cohort_id, position, metadata) VALUES (?, ?, ?)",
                    ((cohort_id, n, json.dumps(dict(e))) for n, e in enumerate(entries)),
                )
            else:
                raise KeyError(cohort_id)

    def sync_metadata(self) -> dict[str, list[dict[str, Any]]]:
        """Every cohort's ``syncMetadata`` entries, by cohort id (absent: none)."""
        result: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for cohort_id, metadata in self._conn.execute(
                "SELECT cohort_id, metadata FROM cohort_syncs ORDER BY cohort_id, position"
            ):
                result.setdefault(cohort_id, []).append(json.loads(metadata))
        return result


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _Transaction:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")

"""Opening a sync state file safely: identity, schema version, integrity, migrations.

A cohortctl state file is an SQLite database whose header carries
:data:`APPLICATION_ID` (``PRAGMA application_id``) and the schema version
(``PRAGMA user_version``). Before anything is read, :func:`connect` tells apart:

* a missing or zero-length file: new state (the schema is written in one transaction, so a
  kill while creating leaves a zero-length file, which is new state again);
* a cohortctl state of this or an older schema (older ones are migrated);
* files written before the application id existed (application id 0 and today's tables):
  migrated in place;
* everything else, each a one-line :class:`StateFileError` saying what to do: not an SQLite
  database, an SQLite database of another program, a damaged file (``PRAGMA quick_check``),
  a state written by a newer cohortctl, or a file the OS does not let us read or write.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from cohortctl.errors import StateFileError
from cohortctl.files import os_reason

APPLICATION_ID = 0x63435354  # "cCST": cohortctl state
SCHEMA_VERSION = 3
"""The schema this cohortctl writes; files of a higher version are refused, lower migrated.

1: destinations, segments, journal, planned, runs. 2: ``properties``, the user properties a
webhook-mode sync last sent per user (created by the migration from 1). 3:
``destinations.list_source``, where the list id came from (created, given, none).
"""

SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS destinations (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    list_id TEXT,
    created_at REAL NOT NULL,
    list_source TEXT
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    dest INTEGER NOT NULL REFERENCES destinations(id),
    n INTEGER NOT NULL,
    ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_dest ON segments(dest);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    dest INTEGER NOT NULL REFERENCES destinations(id),
    op INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ids TEXT NOT NULL,
    planned INTEGER,
    batch INTEGER
);
CREATE INDEX IF NOT EXISTS journal_dest ON journal(dest, seq);
CREATE TABLE IF NOT EXISTS planned (
    id INTEGER PRIMARY KEY,
    dest INTEGER NOT NULL REFERENCES destinations(id),
    op INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS planned_dest ON planned(dest);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    dest INTEGER NOT NULL REFERENCES destinations(id),
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    full_resend INTEGER NOT NULL,
    entered INTEGER NOT NULL,
    left_count INTEGER NOT NULL,
    added INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS properties (
    dest INTEGER NOT NULL REFERENCES destinations(id),
    user_id TEXT NOT NULL,
    props TEXT NOT NULL,
    PRIMARY KEY (dest, user_id)
) WITHOUT ROWID;
"""

TABLES = frozenset({"destinations", "segments", "journal", "planned", "runs"})

MOVE_AWAY = "move it away (the next sync then sends everyone again) or restore a backup"


def state_error(path: Path, exc: BaseException) -> StateFileError:
    """A one-line error for an SQLite or OS failure while using the state file ``path``."""
    text = os_reason(exc)
    lowered = text.lower()
    if "disk is full" in lowered or "no space" in lowered:
        return StateFileError(
            path,
            f"cannot write: {text}; free some space and run the same command again "
            "(what was confirmed is kept)",
        )
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return StateFileError(
            path,
            f"cannot write: {text}; the state file and its directory must be writable "
            "(or pass --state FILE somewhere writable)",
        )
    if isinstance(exc, OSError):
        return StateFileError(path, f"cannot use: {text}")
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return StateFileError(path, f"damaged ({text}); {MOVE_AWAY}")
    return StateFileError(path, f"cannot use: {text}")


def _tune(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=4096")
    conn.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")


COMPACT_MIN_FREE = 64  # pages
COMPACT_FREE_SHARE = 8  # compact when more than 1/8 of the pages are free
COMPACT_ALWAYS_PAGES = 4096  # files up to 64 MiB (16 KiB pages): compact any free page


def compact(conn: sqlite3.Connection) -> bool:
    """``VACUUM`` when much of the file is free pages (after a big plan was dropped).

    Free pages hold nothing SQLite checks, so damage there would go unnoticed by
    ``quick_check``; keeping the file dense means damage lands in pages that are checked.
    Best effort: a disk too full (or too busy) to compact leaves the file as it is.
    Returns True when it compacted.
    """
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    if not free:
        return False
    if pages > COMPACT_ALWAYS_PAGES and (
        free < COMPACT_MIN_FREE or free * COMPACT_FREE_SHARE < pages
    ):
        return False
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's space, for VACUUM's copy
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError:
        return False
    return True


def raw_connect(path: Path) -> sqlite3.Connection:
    """A tuned autocommit connection to an existing, already checked state file."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60.0)
    try:
        _tune(conn)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def connect(
    path: Path, *, create: bool = True, quick_check: bool = False, readable: bool = False
) -> sqlite3.Connection:
    """Open the state file ``path``, checked and migrated; create it when missing or empty.

    Raises :class:`StateFileError` for every file that is not usable state (see the module
    docstring); ``quick_check`` also runs SQLite's ``PRAGMA quick_check`` over the whole file.
    With ``create`` false a missing file is an error, not new state. With ``readable`` (only
    reading wanted), a file on a read-only disk or in a directory we cannot write is opened
    read-only, as it is (nothing migrated), instead of refused.
    """
    try:
        return _connect(path, create=create, quick_check=quick_check)
    except StateFileError:
        if not readable or not path.is_file() or _writable(path):
            raise
    return _connect(path, create=False, quick_check=quick_check, read_only=True)


def _writable(path: Path) -> bool:
    """Whether SQLite can write ``path`` and its journal files next to it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect(
    path: Path, *, create: bool, quick_check: bool, read_only: bool = False
) -> sqlite3.Connection:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if not create:
            raise StateFileError(path, "no such file") from None
        size = 0
    except OSError as exc:
        raise state_error(path, exc) from None
    if size:
        _check_header(path, size)
    elif create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise state_error(path, exc) from None
    # Nobody can write a file on a read-only disk, so SQLite may read it as immutable (it
    # cannot create the WAL index next to it otherwise).
    where = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(
            where if read_only else path,
            isolation_level=None,
            check_same_thread=False,
            timeout=60.0,
            uri=read_only,
        )
    except sqlite3.Error as exc:
        raise state_error(path, exc) from None
    try:
        _prepare(conn, path, create=create, quick_check=quick_check, read_only=read_only)
    except StateFileError:
        conn.close()
        raise
    except (sqlite3.Error, OSError) as exc:
        conn.close()
        raise state_error(path, exc) from None
    return conn


def _check_header(path: Path, size: int) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(100)
    except OSError as exc:
        raise state_error(path, exc) from None
    if not head.startswith(SQLITE_MAGIC):
        raise StateFileError(
            path,
            "not a cohortctl state file (not an SQLite database); pass the right --state "
            f"FILE, or {MOVE_AWAY}",
        )
    if size < 100 or len(head) < 100:
        raise StateFileError(path, f"damaged (truncated to {size} bytes); {MOVE_AWAY}")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }


def _prepare(
    conn: sqlite3.Connection, path: Path, *, create: bool, quick_check: bool, read_only: bool
) -> None:
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    if pages == 0:
        if not create:
            raise StateFileError(path, "empty file (no state yet)")
        _initialise(conn)
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    if app_id not in (APPLICATION_ID, 0):
        raise StateFileError(
            path,
            f"not a cohortctl state file (an SQLite database of another program, application "
            f"id {app_id:#x}); pass the right --state FILE",
        )
    tables = _tables(conn)
    if app_id == 0 and not (tables >= TABLES):
        raise StateFileError(
            path,
            "not a cohortctl state file (an SQLite database without cohortctl's tables); "
            "pass the right --state FILE",
        )
    if version > SCHEMA_VERSION:
        raise StateFileError(
            path,
            f"written by a newer cohortctl (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade cohortctl to use it",
        )
    missing = TABLES - tables
    if missing:
        raise StateFileError(
            path, f"damaged (missing tables: {', '.join(sorted(missing))}); {MOVE_AWAY}"
        )
    if quick_check:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StateFileError(path, f"damaged (quick_check: {_one_line(problems)}); {MOVE_AWAY}")
    if not read_only:
        _tune(conn)
        if app_id == 0 or version < SCHEMA_VERSION:
            _migrate(conn, version if app_id else 0)
    if quick_check:
        _check_blobs(conn, path)


def _one_line(problems: list[str]) -> str:
    """quick_check's answer (several lines, each maybe several) as one short line."""
    lines = [line.strip() for text in problems for line in text.splitlines()]
    found = [line for line in lines if line and not line.startswith("***")]
    text = "; ".join(found[:2]) or "not ok"
    return text if len(text) <= 200 else text[:199] + "…"


_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]")


def _check_blobs(conn: sqlite3.Connection, path: Path) -> None:
    """Every stored id list holds as many ids as its row says, valid UTF-8 without controls.

    ``quick_check`` does not read the content of overflow pages, where the big id lists
    live: garbage written there would otherwise become ids nobody sent.
    """
    for table in ("segments", "journal", "planned"):
        planned = ", planned" if table == "journal" else ", NULL"
        rows = conn.execute(f"SELECT rowid, n, CAST(ids AS BLOB){planned} FROM {table}")
        for rowid, n, blob, part in rows:
            blob = bytes(blob or b"")
            if part is not None:
                ok = not blob  # a confirmed planned batch: its ids live in ``planned``
            elif not blob:
                ok = n == 0
            else:
                ok = blob.count(b"\n") + 1 == n and _CONTROL.search(blob) is None
                if ok:
                    try:
                        blob.decode("utf-8")
                    except UnicodeDecodeError:
                        ok = False
            if not ok:
                raise StateFileError(
                    path,
                    f"damaged (the ids of {table} row {rowid} are not what was stored); "
                    f"{MOVE_AWAY}",
                )


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` (if SQLite has not already) on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _write_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing of :data:`SCHEMA` and stamp the file as this version's."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _initialise(conn: sqlite3.Connection) -> None:
    """Write the schema into an empty file in one transaction (racing creators serialize)."""
    # page_size only takes effect on a new file; big pages suit the big id blobs.
    conn.execute("PRAGMA page_size=16384")
    with _immediate(conn):
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        if app_id == 0 and not _tables(conn):  # not written by a racing creator meanwhile
            _write_schema(conn)


def _to_version_1(conn: sqlite3.Connection) -> None:
    """Files from before planned batches (journal without ``planned`` / ``batch``)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(journal)")}
    for name in ("planned", "batch"):
        if name not in columns:
            conn.execute(f"ALTER TABLE journal ADD COLUMN {name} INTEGER")


def _to_version_2(conn: sqlite3.Connection) -> None:
    """Nothing to change: the new ``properties`` table comes from :data:`SCHEMA`."""


def _to_version_3(conn: sqlite3.Connection) -> None:
    """``destinations.list_source``: where the list id came from (created, given, none)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(destinations)")}
    if columns and "list_source" not in columns:
        conn.execute("ALTER TABLE destinations ADD COLUMN list_source TEXT")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _to_version_1,
    2: _to_version_2,
    3: _to_version_3,
}
"""``MIGRATIONS[n]`` brings a file of schema ``n - 1`` to ``n`` (0: before application ids).

To change the schema: raise :data:`SCHEMA_VERSION`, change :data:`SCHEMA` (new files) and add
the step from the previous version here (existing files); the steps run in one transaction.
"""


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a state file of schema ``version`` (0: no application id yet) up to date."""
    with _immediate(conn):
        (current,) = conn.execute("PRAGMA user_version").fetchone()  # a racing migrator's
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        if app_id == APPLICATION_ID and current >= SCHEMA_VERSION:
            return
        for step in range(max(version, 0) + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](conn)
        _write_schema(conn)

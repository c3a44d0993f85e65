"""One sync per state file, destination and cohort at a time.

Each destination key of a state file has its own lock file in ``<state file>.locks/``,
held with ``flock`` for as long as a sync of it runs. The kernel drops the lock when the
holder's file is closed, so a holder killed at any moment leaves nothing that blocks the
next run. The holder writes who it is (pid, host, since when) into the lock file, which a
run that finds the lock taken reads to name it. Different keys are different files: syncs of
different cohorts on one state file proceed side by side.

Lock files stay in place (removing one would race with a process opening it); they are
empty of meaning without the kernel lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from cohortctl.errors import Busy
from cohortctl.sync.storage import state_error

POLL_INTERVAL = 0.1  # seconds between tries while waiting for a lock


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as it wrote itself into the lock file."""

    pid: int | None
    host: str
    since: float | None

    def describe(self) -> str:
        """``pid 123 on host h since 2026-12-01T08:00:00``; unknown parts left out."""
        parts = [f"pid {self.pid}" if self.pid is not None else "a process"]
        if self.host:
            parts.append(f"on {self.host}")
        if self.since is not None:
            when = datetime.fromtimestamp(self.since).isoformat(timespec="seconds")
            parts.append(f"since {when}")
        return " ".join(parts)


def lock_dir(state_path: Path) -> Path:
    """The directory holding the lock files of ``state_path`` (symlinks resolved, so every
    spelling of one state file shares its locks)."""
    real = state_path.resolve()
    return real.with_name(real.name + ".locks")


def lock_path(state_path: Path, key: str) -> Path:
    """The lock file of destination ``key`` in ``state_path``."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return lock_dir(state_path) / f"{digest}.lock"


def _read_holder(handle: IO[str]) -> Holder:
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid, since = data.get("pid"), data.get("since")
    return Holder(
        pid if isinstance(pid, int) else None,
        str(data.get("host") or ""),
        float(since) if isinstance(since, (int, float)) else None,
    )


class SyncLock:
    """A held lock of one destination key; release with :meth:`release` (or ``with``)."""

    def __init__(self, handle: IO[str], key: str) -> None:
        self._handle: IO[str] | None = handle
        self.key = key

    def release(self) -> None:
        """Drop the lock (closing the file drops the kernel lock), clearing the holder."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
                self._handle.flush()
            self._handle.close()
            self._handle = None

    def __enter__(self) -> SyncLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(state_path: Path, key: str) -> Holder | None:
    """Who holds the lock of ``key`` right now, as far as can be seen; None when nobody does.

    For display only (``state list``): it reads what the holder wrote and, on this host,
    whether that process is alive, without touching the kernel lock, so looking can never
    make a starting sync find the lock taken.
    """
    try:
        with lock_path(state_path, key).open("r", encoding="utf-8") as handle:
            found = _read_holder(handle)
    except OSError:
        return None
    if found.pid is None:
        return None
    if found.host == socket.gethostname() and not _alive(found.pid):
        return None
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def acquire(
    state_path: Path,
    key: str,
    *,
    timeout: float = 0.0,
    what: str = "",
    hint: str = "--lock-timeout DURATION waits for it",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> SyncLock:
    """Take the lock of ``key``, waiting up to ``timeout`` seconds; :class:`Busy` otherwise.

    ``what`` names the destination and cohort in the message, ``hint`` what to do.
    """
    path = lock_path(state_path, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise state_error(path, exc) from None
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    deadline = clock() + max(0.0, timeout)
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise state_error(path, exc) from None
            if clock() >= deadline:
                who = _read_holder(handle).describe()
                waited = f" after waiting {timeout:g}s" if timeout > 0 else ""
                subject = f" of {what}" if what else ""
                raise Busy(
                    f"busy: another sync{subject} holds {state_path}{waited}: {who} ({hint})"
                )
            sleep(min(POLL_INTERVAL, max(0.0, deadline - clock())))
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        )
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return SyncLock(handle, key)


@contextlib.contextmanager
def acquire_all(
    state_path: Path, keys: Iterable[tuple[str, str]], *, timeout: float = 0.0
) -> Iterator[list[SyncLock]]:
    """Hold the locks of every ``(key, what)`` (taken in key order) for the ``with`` body."""
    with contextlib.ExitStack() as stack:
        locks = [
            stack.enter_context(acquire(state_path, key, timeout=timeout, what=what))
            for key, what in sorted(set(keys))
        ]
        yield locks

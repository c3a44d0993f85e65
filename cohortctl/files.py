"""Writing output files whole or not at all: a temp file in the same directory, then rename.

A full or read-only disk leaves the old file (or no file) in place, never a partial one, and
the error is one line naming the file and the OS's reason (:class:`FileWriteError`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cohortctl.errors import FileWriteError

T = TypeVar("T")


def os_reason(exc: BaseException) -> str:
    """The OS's words for an error (``No space left on device``), without a Python repr."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def write_atomically(path: Path, write: Callable[[Path], T], *, what: str = "file") -> T:
    """Call ``write(tmp)`` on a temp file next to ``path``, then move it onto ``path``.

    Returns what ``write`` returned. Any OSError (full disk, read-only directory, missing
    directory) becomes a :class:`FileWriteError` naming ``path`` and the temp file is removed.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise FileWriteError(what, path, os_reason(exc)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        value = write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FileWriteError(what, path, os_reason(exc)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return value


def write_text_atomically(path: Path, text: str, *, what: str = "file") -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; see :func:`write_atomically`."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what=what)


def append_text(path: Path, text: str, *, what: str = "file") -> None:
    """Append ``text`` to ``path``; on failure cut the file back to its old length."""
    data = memoryview(text.encode("utf-8"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FileWriteError(what, path, os_reason(exc)) from None
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise FileWriteError(what, path, os_reason(exc)) from None
    finally:
        os.close(fd)

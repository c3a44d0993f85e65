"""Read ID files: newline lists, CSV/TSV with a header, stdin, gzip; validate and dedupe.

Formats (detected, never configured):

- ``.csv`` / ``.tsv`` (also ``.csv.gz`` ...): the first non-blank line is a header.
- otherwise, a first non-blank line containing a comma or a tab: CSV/TSV with a header.
- otherwise a newline list, whose first line is a one-column header when it is exactly
  ``user_id``, ``id`` or ``amplitude_id`` (any case) or the ``--column`` name.

Gzip is recognised by its magic bytes, so a compressed stdin works too. Ids are trimmed,
CRLF and a UTF-8 BOM are accepted, blank lines skipped, duplicates dropped (first-seen
order kept) and counted. Anything wrong is an :class:`~cohortctl.errors.IdFileError`
naming the file and, where there is one, the line.

Memory grows with the number of unique ids, not with the file size: the file is read in
blocks of :data:`CHUNK_SIZE` bytes. Newline lists take a block-at-a-time path (one decode,
one control-character scan, one split per block); only real CSV goes through :mod:`csv`.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import chain, filterfalse
from pathlib import PurePath
from typing import BinaryIO, TypeVar

from cohortctl.errors import IdFileError, InputError

__all__ = [
    "CHUNK_SIZE",
    "KNOWN_COLUMNS",
    "IdFileStats",
    "IdList",
    "IdType",
    "chunked",
    "open_input",
    "read_ids",
    "spans",
]

T = TypeVar("T")

CHUNK_SIZE = 1 << 20
"""Bytes read (and decompressed) at a time."""

MAX_LINE_BYTES = 1 << 20
"""A longer line is not an id: refuse it rather than buffer an unbounded line."""

KNOWN_COLUMNS = ("user_id", "id", "amplitude_id")
"""Header names recognised without ``--column`` (case-insensitive)."""

STDIN_NAME = "<stdin>"

_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Ids per dedupe batch: small enough that the set slots probed by the lookup are still in
# cache when the same ids are inserted right after.
_DEDUPE_BATCH = 256
_CSV_BATCH = 65536

# Control characters other than tab, LF and CR (those three are whitespace to trim).
_CTRL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_CTRL_BYTES_RE = re.compile(b"[" + re.escape(_CTRL_BYTES) + b"]")
_CTRL_RE = re.compile("[\x00-\x1f\x7f]")
_TAB_CR_RE = re.compile("[\t\r]")
_DIGITS_NL = b"0123456789\n"
_NOT_DIGIT_RE = re.compile(b"[^0-9\n]")


class IdType(str, Enum):
    """What the ids are: Amplitude user ids or Amplitude (integer) ids."""

    user = "user"  # Amplitude BY_USER_ID / BY_NAME
    amplitude = "amplitude"  # Amplitude BY_AMP_ID / BY_ID; ids must be integers


@dataclass(frozen=True)
class IdFileStats:
    """What reading one ID file found."""

    source: str  # the path as given, or "<stdin>"
    rows: int  # data rows read (excluding header and blank lines)
    blank: int  # blank lines skipped
    duplicates: int  # rows dropped as duplicates
    unique: int  # len(ids)
    column: str | None  # the header name of the column used, None for newline lists
    gzip: bool


@dataclass
class IdList:
    """Unique ids in first-seen order, and how they were read."""

    ids: list[str]
    stats: IdFileStats


def read_ids(
    source: str | os.PathLike[str],
    *,
    column: str | None = None,
    id_type: IdType = IdType.user,
    stdin: BinaryIO | None = None,
    chunk_size: int | None = None,
) -> IdList:
    """Read, validate and dedupe the ids of an ID file (``"-"`` reads ``stdin``).

    ``column`` picks the CSV/TSV column by header name; without it the only column, or
    one named ``user_id``, ``id`` or ``amplitude_id`` is used. With ``IdType.amplitude``
    every id must be an integer. ``stdin`` defaults to ``sys.stdin.buffer``;
    ``chunk_size`` (bytes per read) defaults to :data:`CHUNK_SIZE`.

    Raises :class:`IdFileError` (naming the file and line) for anything that is not a
    usable ID file: missing or unreadable file, invalid UTF-8 or gzip, missing column,
    ragged CSV row, control character, non-integer Amplitude id, no ids at all.
    """
    id_type = IdType(id_type)
    chunk = CHUNK_SIZE if chunk_size is None else chunk_size
    if chunk < 1:
        raise ValueError("chunk_size must be at least 1")
    path = os.fspath(source)
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return _Reader(STDIN_NAME, None, column, id_type, chunk).read(stream)
    with open_input(path) as stream:
        return _Reader(path, path, column, id_type, chunk).read(stream)


def spans(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of consecutive runs of at most ``size`` of ``total`` ids, in order.

    The one chunking rule of cohortctl: upload and membership requests, reconcile changes,
    mock batches and sync batches are all cut this way. ``size`` below 1 is an InputError.
    """
    if size < 1:
        raise InputError(f"batch size must be at least 1, got {size}")
    for start in range(0, total, size):
        yield start, min(start + size, total)


def chunked(ids: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``ids`` of at most ``size`` each (see :func:`spans`)."""
    for start, end in spans(len(ids), size):
        yield ids[start:end]


def open_input(path: str | os.PathLike[str]) -> BinaryIO:
    """Open an input file (ids, users) unbuffered for reading; a failure is one IdFileError."""
    shown = os.fspath(path)
    try:
        return open(shown, "rb", buffering=0)
    except FileNotFoundError:
        raise IdFileError(shown, "file not found") from None
    except IsADirectoryError:
        raise IdFileError(shown, "is a directory, not a file") from None
    except PermissionError:
        raise IdFileError(shown, "permission denied") from None
    except OSError as exc:
        raise IdFileError(shown, f"cannot open: {exc.strerror or exc}") from None


class _Prefixed:
    """A read-only stream that first returns ``head``, then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                head, self._head = self._head, b""
                return head
            head, self._head = self._head[:size], self._head[size:]
            return head
        return self._stream.read(size)


class _Deduper:
    """Unique ids in first-seen order.

    A set answers "seen before?": at millions of ids it is much faster than a dict, whose
    probes dereference every colliding key. Each batch is looked up with one C-level
    ``intersection`` and inserted with one ``update`` (tight loops, so the cache misses of
    the big table overlap); only the rare repeats need a per-id pass, over a tiny set.
    """

    def __init__(self) -> None:
        # "" is what a blank line becomes: never an id.
        self.seen: set[str] = {""}
        self.ids: list[str] = []

    def add(self, values: list[str]) -> None:
        """Append the values not seen before, in order, each once."""
        seen = self.seen
        ids = self.ids
        for start in range(0, len(values), _DEDUPE_BATCH):
            batch = values[start : start + _DEDUPE_BATCH]
            repeated = seen.intersection(batch)
            before = len(seen)
            seen.update(batch)
            added = len(seen) - before
            if repeated:
                batch = list(filterfalse(repeated.__contains__, batch))
            if added == len(batch):
                ids += batch
            else:  # the batch repeats a new id of its own: keep its first occurrence
                ids += dict.fromkeys(batch)


class _Reader:
    """One read of one ID file."""

    def __init__(
        self,
        name: str,
        path: str | None,
        column: str | None,
        id_type: IdType,
        chunk: int,
    ) -> None:
        self.name = name
        self.path = path
        self.column = column
        self.amplitude = id_type is IdType.amplitude
        self.chunk = chunk
        self.gzip = False
        self.blank = 0
        self.rows = 0
        self.dedupe = _Deduper()

    def error(self, message: str, line: int | None = None) -> IdFileError:
        """An IdFileError about this file."""
        return IdFileError(self.name, message, line=line)

    # -- bytes -------------------------------------------------------------------------

    def _read(self, stream: BinaryIO, size: int) -> bytes:
        try:
            return stream.read(size) or b""
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise self.error(f"invalid gzip data: {exc}") from None
        except EOFError:
            raise self.error("truncated gzip data: the file ends too early") from None
        except IsADirectoryError:
            raise self.error("is a directory, not an ID file") from None
        except OSError as exc:
            raise self.error(f"cannot read: {exc.strerror or exc}") from None

    def _read_at_least(self, stream: BinaryIO, size: int) -> bytes:
        data = self._read(stream, max(size, self.chunk))
        while data and len(data) < size:
            more = self._read(stream, self.chunk)
            if not more:
                break
            data += more
        return data

    def _byte_blocks(self, stream: BinaryIO) -> Iterator[bytes]:
        """The file's bytes (decompressed, BOM removed) in blocks of about ``chunk``."""
        head = self._read_at_least(stream, 2)
        if head.startswith(_GZIP_MAGIC):
            self.gzip = True
            stream = gzip.GzipFile(fileobj=_Prefixed(head, stream), mode="rb")  # type: ignore[call-overload]
            head = self._read_at_least(stream, 3)
        else:
            more = self._read_at_least(stream, 1) if len(head) < 3 else b""
            head += more
        if head.startswith(_BOM):
            head = head[len(_BOM) :]
        elif head.startswith(_UTF16_BOMS):
            raise self.error("the file is UTF-16 encoded: save it as UTF-8")
        if head:
            yield head
        while True:
            block = self._read(stream, self.chunk)
            if not block:
                return
            yield block

    def _line_blocks(self, first: bytes, blocks: Iterator[bytes], line: int) -> Iterator[bytes]:
        """Blocks of whole lines, each ending with ``\\n``; ``line`` is the first's number."""
        carry = first
        for block in blocks:
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
            else:
                carry = data[cut + 1 :]
                yield data if cut == len(data) - 1 else data[: cut + 1]
                line += data.count(b"\n", 0, cut + 1)
            if len(carry) > MAX_LINE_BYTES:
                raise self.error(f"line longer than {MAX_LINE_BYTES} bytes: not an ID file", line)
        if carry:
            yield carry if carry.endswith(b"\n") else carry + b"\n"

    def decode(self, data: bytes, line: int) -> str:
        """``data`` as text; invalid UTF-8 is an error at its line (``line`` = first line)."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = line + data.count(b"\n", 0, exc.start)
            bad = data[exc.start : exc.start + 1].hex()
            raise self.error(f"invalid UTF-8 (byte 0x{bad})", at) from None

    # -- format ------------------------------------------------------------------------

    def read(self, stream: BinaryIO) -> IdList:
        """Read everything from ``stream``: detect the format, then stream the ids."""
        blocks = self._byte_blocks(stream)
        found = self._first_line(blocks)
        if found is None:
            what = "only blank lines" if self.blank else "the file is empty"
            raise self.error(f"no ids: {what}")
        buf, start, end, line_no, text = found
        stripped = text.strip()
        suffix = _data_suffix(self.path)
        column_name: str | None = None
        if suffix in (".csv", ".tsv") or "," in text or "\t" in text:
            tabs = suffix == ".tsv" or ("\t" in text and "," not in text)
            delimiter = "\t" if tabs else ","
            try:
                header = _parse_header(text, delimiter)
            except csv.Error as exc:
                raise self.error(f"invalid CSV header: {exc}", line_no) from None
            index = self._pick_column(header, line_no)
            column_name = header[index]
            rest = self._line_blocks(buf[end + 1 :], blocks, line_no + 1)
            self._read_csv(rest, line_no, len(header), index, delimiter)
        else:
            known = stripped.lower() in KNOWN_COLUMNS
            if self.column is not None and stripped.lower() != self.column.strip().lower():
                if known:
                    raise self.error(
                        f"column {self.column.strip()!r} not found; the header has: {stripped!r}",
                        line_no,
                    )
                raise self.error(
                    f"column {self.column.strip()!r} not found: the file has no header "
                    f"(its first line {_shown(stripped)} looks like an id); drop --column",
                    line_no,
                )
            if known or self.column is not None:
                column_name = stripped
                rest = self._line_blocks(buf[end + 1 :], blocks, line_no + 1)
                self._read_lines(rest, line_no + 1)
            else:
                rest = self._line_blocks(buf[start:], blocks, line_no)
                self._read_lines(rest, line_no)
        ids = self.dedupe.ids
        if not ids:
            what = "a header and blank lines" if self.blank else "a header"
            raise self.error(f"no ids: only {what}")
        return IdList(
            ids=ids,
            stats=IdFileStats(
                source=self.name,
                rows=self.rows,
                blank=self.blank,
                duplicates=self.rows - len(ids),
                unique=len(ids),
                column=column_name,
                gzip=self.gzip,
            ),
        )

    def _first_line(self, blocks: Iterator[bytes]) -> tuple[bytes, int, int, int, str] | None:
        """Find the first non-blank line: (buffer, its start, its end, its number, its text).

        Blank lines before it are counted. ``end`` is the index of its ``\\n`` (or the end).
        """
        buf = b""
        pos = 0
        line_no = 1
        exhausted = False
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE_BYTES:
                    raise self.error(
                        f"line longer than {MAX_LINE_BYTES} bytes: not an ID file", line_no
                    )
                block = None if exhausted else next(blocks, None)
                if block is not None:
                    buf = buf[pos:] + block
                    pos = 0
                    continue
                exhausted = True
                if pos >= len(buf):
                    return None
                end = len(buf)
            text = self.decode(buf[pos:end], line_no)
            if text.strip() or _CTRL_RE.search(text.replace("\t", "").replace("\r", "")):
                return buf, pos, end, line_no, text
            self.blank += 1
            line_no += 1
            pos = end + 1

    def _pick_column(self, header: list[str], line: int) -> int:
        """Index of the column to read, from ``--column`` or the defaults."""
        columns = ", ".join(repr(h) for h in header)
        if self.column is not None:
            wanted = self.column.strip()
            if wanted in header:
                return header.index(wanted)
            folded = [h.lower() for h in header]
            if folded.count(wanted.lower()) == 1:
                return folded.index(wanted.lower())
            raise self.error(f"column {wanted!r} not found; the header has: {columns}", line)
        if len(header) == 1:
            return 0
        folded = [h.lower() for h in header]
        preferred = (
            ("amplitude_id", "id", "user_id")
            if self.amplitude
            else ("user_id", "id", "amplitude_id")
        )
        for name in preferred:
            if name in folded:
                return folded.index(name)
        raise self.error(
            f"{len(header)} columns and none named {', '.join(KNOWN_COLUMNS)}: "
            f"choose one with --column ({columns})",
            line,
        )

    # -- newline lists -----------------------------------------------------------------

    def _read_lines(self, blocks: Iterable[bytes], line: int) -> None:
        """The fast path: whole blocks of lines, checked and split at C speed."""
        for block in blocks:
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n")
            if len(block.translate(None, _CTRL_BYTES)) != len(block):
                match = _CTRL_BYTES_RE.search(block)
                assert match is not None
                at = line + block.count(b"\n", 0, match.start())
                raise self.error(_control_message(chr(block[match.start()])), at)
            text = self.decode(block, line)
            lines = text.split("\n")
            lines.pop()  # the block ends with "\n"
            checked = block
            if b" " in block or b"\t" in block or b"\r" in block or not text.isascii():
                lines = list(map(str.strip, lines))
                joined = "\n".join(lines)
                if b"\t" in block or b"\r" in block:
                    found = _TAB_CR_RE.search(joined)
                    if found is not None:
                        at = line + joined.count("\n", 0, found.start())
                        raise self.error(_control_message(found.group()), at)
                checked = joined.encode("utf-8") if self.amplitude else block
            if self.amplitude and checked.translate(None, _DIGITS_NL):
                bad = _NOT_DIGIT_RE.search(checked)
                assert bad is not None
                at = line + checked.count(b"\n", 0, bad.start())
                raise self.error(_not_integer_message(lines[at - line]), at)
            blank = lines.count("")
            self.blank += blank
            self.rows += len(lines) - blank
            self.dedupe.add(lines)
            line += len(lines)

    # -- CSV / TSV ---------------------------------------------------------------------

    def _texts(self, blocks: Iterable[bytes], line: int) -> Iterator[str]:
        for block in blocks:
            yield self.decode(block, line)
            line += block.count(b"\n")

    def _read_csv(
        self, blocks: Iterable[bytes], header_line: int, width: int, index: int, delimiter: str
    ) -> None:
        """Rows after the header, through :mod:`csv` (quoting, embedded delimiters)."""
        texts = self._texts(blocks, header_line + 1)
        lines = chain.from_iterable(io.StringIO(text, newline="") for text in texts)
        reader = csv.reader(lines, delimiter=delimiter)
        values: list[str] = []
        amplitude = self.amplitude
        try:
            for row in reader:
                if len(row) != width:
                    if not any(field.strip() for field in row):
                        self.blank += 1
                        continue
                    raise self.error(
                        f"ragged row: {len(row)} fields, the header has {width}",
                        header_line + reader.line_num,
                    )
                cell = row[index]
                value = cell.strip()
                if not value:
                    self.blank += 1
                    continue
                if _CTRL_RE.search(cell) is not None:
                    self._check_cell(cell, value, header_line + reader.line_num)
                if amplitude and not (value.isascii() and value.isdigit()):
                    raise self.error(_not_integer_message(value), header_line + reader.line_num)
                values.append(value)
                if len(values) >= _CSV_BATCH:
                    self._add(values)
                    values = []
        except csv.Error as exc:
            raise self.error(f"invalid CSV: {exc}", header_line + reader.line_num) from None
        self._add(values)

    def _check_cell(self, cell: str, value: str, line: int) -> None:
        """Raise for a control character in a cell (tab/CR only count inside the id)."""
        for found in _CTRL_RE.finditer(cell):
            char = found.group()
            if char not in "\t\r" or char in value:
                raise self.error(_control_message(char), line)

    def _add(self, values: list[str]) -> None:
        self.rows += len(values)
        self.dedupe.add(values)


def _data_suffix(path: str | None) -> str:
    """The file's type suffix, ignoring a trailing ``.gz``: ``.csv``, ``.tsv``, ``.txt`` ..."""
    if path is None:
        return ""
    suffixes = [s.lower() for s in PurePath(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _parse_header(text: str, delimiter: str) -> list[str]:
    row = next(csv.reader([text], delimiter=delimiter), [])
    return [name.strip() for name in row]


def _shown(value: str, limit: int = 60) -> str:
    """An id as shown in an error: quoted, cut if long."""
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def _control_message(char: str) -> str:
    names = {"\t": "tab", "\r": "carriage return", "\n": "line feed", "\x00": "NUL"}
    name = names.get(char)
    label = f"U+{ord(char):04X}" + (f" ({name})" if name else "")
    return f"control character {label} in an id"


def _not_integer_message(value: str) -> str:
    return f"not an integer Amplitude id: {_shown(value)}"

"""User properties of a CSV snapshot, for Cohort Webhooks (``--property``, ``--all-properties``).

The columns of a CSV/TSV snapshot other than the id column are user properties. Which ones
are sent is chosen by name (``--property COL``, repeatable) or all of them
(``--all-properties``), at most :data:`MAX_PROPERTIES`, as Amplitude allows. Values are
strings, unless ``--typed-properties`` reads whole numbers, decimal numbers and
``true``/``false`` as JSON numbers and booleans. An empty cell is no property.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cohortctl.errors import IdFileError, InputError
from cohortctl.ids import STDIN_NAME, IdList, read_ids
from cohortctl.partner.webhooks.payload import MAX_PROPERTIES

Properties = dict[str, Any]
_INTEGER = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)\.[0-9]+$")


@dataclass(frozen=True)
class PropertySelection:
    """Which snapshot columns become user properties, and how their values are read."""

    names: tuple[str, ...] = ()
    everything: bool = False
    typed: bool = False

    def __post_init__(self) -> None:
        if self.names and self.everything:
            raise InputError("give --property COL or --all-properties, not both")
        if len(set(self.names)) > MAX_PROPERTIES:
            raise InputError(
                f"{len(set(self.names))} --property columns: Amplitude sends at most "
                f"{MAX_PROPERTIES} user properties"
            )

    @property
    def active(self) -> bool:
        """True when any property is selected."""
        return bool(self.names) or self.everything


def typed_value(text: str) -> Any:
    """``text`` as a JSON number or boolean when it reads as one, else the string."""
    if _INTEGER.match(text):
        return int(text)
    if _DECIMAL.match(text):
        return float(text)
    folded = text.lower()
    if folded in ("true", "false"):
        return folded == "true"
    return text


def _open_text(path: str, data: bytes | None) -> io.TextIOBase:
    if data is None:
        if path == "-":
            raise InputError(
                "user properties from stdin: read the snapshot with read_with_properties"
            )
        data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return io.StringIO(data.decode("utf-8-sig"), newline="")


def _rows(path: str, data: bytes | None = None) -> Iterator[tuple[int, list[str]]]:
    try:
        handle = _open_text(path, data)
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise IdFileError(_shown(path), f"cannot read user properties: {exc}") from None
    with handle:
        first = handle.readline()
        handle.seek(0)
        tsv = path.endswith((".tsv", ".tsv.gz")) or ("\t" in first and "," not in first)
        reader = csv.reader(handle, delimiter="\t" if tsv else ",")
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row


def _shown(path: str) -> str:
    return STDIN_NAME if path == "-" else path


def read_with_properties(
    path: str,
    column: str | None,
    selection: PropertySelection,
    *,
    stdin: BinaryIO | None = None,
) -> tuple[IdList, dict[str, Properties]]:
    """The ids of a snapshot and the selected properties of its users, reading it once.

    ``"-"`` reads ``stdin`` (default ``sys.stdin.buffer``) a single time: the ids and the
    properties come from the same bytes.
    """
    if path != "-" or not selection.active:
        read = read_ids(path, column=column, stdin=stdin)
        return read, read_properties(path, read.stats.column, selection)
    data = (stdin if stdin is not None else sys.stdin.buffer).read()
    read = read_ids(path, column=column, stdin=io.BytesIO(data))
    return read, read_properties(path, read.stats.column, selection, data=data)


def read_properties(
    path: str, id_column: str | None, selection: PropertySelection, *, data: bytes | None = None
) -> dict[str, Properties]:
    """The selected properties of every user of a CSV snapshot, keyed by user id.

    ``id_column`` is the header name of the id column (as the id reader picked it);
    IdFileError names the file and line of a missing column or a ragged row. ``data`` is
    the snapshot's bytes when they were read already (stdin: see :func:`read_with_properties`).
    """
    if not selection.active:
        return {}
    rows = _rows(path, data)
    path = _shown(path)
    if id_column is None:
        raise IdFileError(path, "user properties need a CSV snapshot with a header row")
    try:
        line, header = next(rows)
    except StopIteration:
        raise IdFileError(path, "no header row") from None
    header = [h.strip() for h in header]
    if id_column not in header:
        raise IdFileError(path, f"no column {id_column!r}", line=line)
    id_index = header.index(id_column)
    if selection.everything:
        names = [h for h in header if h != id_column]
    else:
        missing = [n for n in selection.names if n not in header]
        if missing:
            shown = ", ".join(repr(h) for h in header)
            raise IdFileError(
                path, f"--property {missing[0]!r} is not a column ({shown})", line=line
            )
        names = list(dict.fromkeys(selection.names))
    if len(names) > MAX_PROPERTIES:
        raise IdFileError(
            path, f"{len(names)} property columns: Amplitude sends at most {MAX_PROPERTIES}"
        )
    indexes = [(header.index(n), n) for n in names]
    found: dict[str, Properties] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise IdFileError(path, f"{len(row)} cells, the header has {len(header)}", line=line)
        user_id = row[id_index].strip()
        if not user_id or user_id in found:
            continue
        props: Properties = {}
        for index, name in indexes:
            cell = row[index].strip()
            if cell:
                props[name] = typed_value(cell) if selection.typed else cell
        found[user_id] = props
    return found


def properties_json(properties: Mapping[str, Any] | None) -> str:
    """The canonical text of a user's properties (what the sync state stores and compares)."""
    return json.dumps(properties or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def changed_users(
    members: Sequence[str], current: Mapping[str, Properties], sent: Mapping[str, str]
) -> list[str]:
    """The ``members`` whose selected properties differ from the ones last sent."""
    return [uid for uid in members if properties_json(current.get(uid)) != sent.get(uid, "{}")]

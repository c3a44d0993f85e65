"""One cohort's metadata, and a cohort's current members read from a streamed export."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cohortctl.customer.api import AMPLITUDE, USER, ExportPoll
from cohortctl.customer.client import AmplitudeClient
from cohortctl.customer.export import column_index, member_rows, resume_hint
from cohortctl.errors import CheckFailed, CohortctlError


def find_cohort(
    client: AmplitudeClient, cohort_id: str, *, include_sync_info: bool = False
) -> dict[str, Any]:
    """The cohort ``cohort_id`` as ``GET /api/3/cohorts`` shows it; CheckFailed if absent.

    Amplitude has no endpoint for one cohort's metadata, so this lists them all.
    """
    wanted = str(cohort_id).strip()
    cohorts = client.list_cohorts(include_sync_info=include_sync_info)
    for cohort in cohorts:
        if str(cohort.get("id")) == wanted:
            return cohort
    raise CheckFailed(
        f"cohort {wanted!r} not found: the project has {len(cohorts)} "
        f"cohort{'s' if len(cohorts) != 1 else ''} and none has that id",
        hint="`cohortctl cohorts list` shows the ids (the last part of the cohort's URL)",
    )


def cohort_size(cohort: dict[str, Any]) -> int | None:
    """The cohort's ``size`` when Amplitude gave an integer."""
    size = cohort.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


@dataclass
class Members:
    """A cohort's members as an export listed them."""

    request_id: str
    ids: dict[str, None]  # the chosen id column, in export order (a dict: ordered and a set)
    without_id: list[str]  # user mode: Amplitude ids of members that have no user id
    rows: int
    polls: int
    columns: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many members the export listed."""
        return self.rows


def export_members(
    client: AmplitudeClient,
    cohort_id: str,
    *,
    id_type: str = USER,
    timeout: float = 900.0,
    request_id: str | None = None,
    on_poll: Callable[[ExportPoll], None] | None = None,
) -> Members:
    """Export the cohort (or resume ``request_id``) and read its members as the file streams in.

    ``id_type`` picks the column: ``user_id``, or ``amplitude_id`` for ``amplitude``. In user
    mode a member without a user id is listed by its Amplitude id in ``without_id``.
    """
    requested = request_id is None
    if request_id is None:
        request_id = client.request_export(cohort_id).request_id
    polls = 0

    def count(poll: ExportPoll) -> None:
        nonlocal polls
        polls = poll.polls
        if on_poll:
            on_poll(poll)

    try:
        client.wait_for_export(request_id, timeout=timeout, on_poll=count)
        with client.open_export(request_id) as response:
            members = read_members(_text_lines(response.iter_bytes()), id_type=id_type)
    except CohortctlError as error:
        if requested:
            error.hint = join_hints(error.hint, resume_hint(cohort_id, request_id))
        raise
    members.request_id = request_id
    members.polls = polls
    return members


def join_hints(*hints: str | None) -> str | None:
    """Hints joined with ``; `` (None when there is none)."""
    parts = [h for h in hints if h]
    return "; ".join(parts) if parts else None


def read_members(lines: Iterable[str], *, id_type: str = USER) -> Members:
    """Members from export CSV lines (header ``amplitude_id``, ``user_id``, properties...)."""
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error as exc:
        raise CheckFailed(f"download export: the export is not valid CSV: {exc}") from None
    amp_index = column_index(header, "amplitude_id")
    index = column_index(header, "amplitude_id" if id_type == AMPLITUDE else "user_id")
    ids: dict[str, None] = {}
    without: list[str] = []
    rows = 0
    try:
        for row, value in member_rows(reader, index):
            rows += 1
            if value:
                ids[value] = None
            elif amp_index < len(row) and row[amp_index].strip():
                without.append(row[amp_index].strip())
    except csv.Error as exc:
        raise CheckFailed(
            f"download export: the export is not valid CSV at line {reader.line_num}: {exc}"
        ) from None
    return Members("", ids, without, rows, 0, header)


def _text_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 lines (line ends kept, so quoted newlines survive) from a byte stream."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    try:
        for chunk in chunks:
            pending += decoder.decode(chunk)
            if "\n" in pending:
                *complete, pending = pending.split("\n")
                for line in complete:
                    yield line + "\n"
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CheckFailed("download export: the export is not valid UTF-8") from None
    if pending:
        yield pending

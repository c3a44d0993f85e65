"""A whole cohort export: request (or resume), poll, download, optionally keep one id column."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cohortctl.customer.api import ExportPoll, ExportRequest
from cohortctl.customer.client import AmplitudeClient, path_part
from cohortctl.errors import CheckFailed, CohortctlError, FileWriteError, InputError
from cohortctl.files import os_reason


@dataclass
class DownloadResult:
    """What ``cohorts download`` produced."""

    cohort_id: str
    request_id: str
    path: str
    bytes: int
    rows: int
    members_written: int
    skipped_without_id: int
    id_column: str | None  # the one column kept (``--ids-only``), None: the whole CSV
    polls: int
    answers: dict[str, Any] = field(default_factory=dict)

    @property
    def ids_only(self) -> bool:
        """True when one id column was kept instead of the whole CSV."""
        return self.id_column is not None


def download_cohort(
    client: AmplitudeClient,
    cohort_id: str,
    dest: Path,
    *,
    ids_only: bool = False,
    amplitude_ids: bool = False,
    props: bool = False,
    prop_keys: Sequence[str] = (),
    timeout: float = 900.0,
    on_poll: Callable[[ExportPoll], None] | None = None,
    request_id: str | None = None,
) -> DownloadResult:
    """Export a cohort and write its members to ``dest``.

    By default the CSV exactly as Amplitude gives it; with ``ids_only`` one id per line:
    the ``user_id`` column, or ``amplitude_id`` when ``amplitude_ids`` (members without a
    user id are left out and counted). ``request_id`` resumes an export already requested
    (its file stays available for 7 days) instead of requesting a new one.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"{dest} is a directory: give a file name to write the members to")
    if not dest.parent.exists():
        raise InputError(f"{dest.parent} does not exist")
    if request_id is not None:
        started = ExportRequest(path_part(request_id, "request id"), str(cohort_id), {})
    else:
        started = client.request_export(cohort_id, props=props, prop_keys=prop_keys)
    try:
        return _finish_download(
            client, str(cohort_id), started, dest, ids_only=ids_only, amplitude_ids=amplitude_ids,
            timeout=timeout, on_poll=on_poll,
        )  # fmt: skip
    except CohortctlError as error:
        if request_id is None:  # the user's own request id needs no reminder
            resume = resume_hint(str(cohort_id), started.request_id)
            error.hint = "; ".join(h for h in (error.hint, resume) if h)
        raise


def resume_hint(cohort_id: str, request_id: str) -> str:
    """How to pick up an export that was already requested, without a new request."""
    return (
        f"the export was requested ({request_id}); its file stays available for 7 days: "
        f"`cohortctl cohorts download {cohort_id} --request-id {request_id} -o FILE` "
        "resumes it without a new request"
    )


def _finish_download(
    client: AmplitudeClient,
    cohort_id: str,
    started: ExportRequest,
    dest: Path,
    *,
    ids_only: bool,
    amplitude_ids: bool,
    timeout: float,
    on_poll: Callable[[ExportPoll], None] | None,
) -> DownloadResult:
    polls: list[ExportPoll] = []

    def record(poll: ExportPoll) -> None:
        polls.append(poll)
        if on_poll:
            on_poll(poll)

    status = client.wait_for_export(started.request_id, timeout=timeout, on_poll=record)
    exported = status.raw.get("cohort_id")
    if exported is not None and str(exported) != cohort_id:
        raise CheckFailed(
            f"export {started.request_id} is an export of cohort {exported}, not {cohort_id}"
        )
    column = ("amplitude_id" if amplitude_ids else "user_id") if ids_only else None
    try:
        if not ids_only:
            size = client.download_export(started.request_id, dest)
            rows = _count_csv_rows(dest)
            written, skipped = rows, 0
        else:
            raw_dest = dest.with_name(f".{dest.name}.export.csv")
            try:
                size = client.download_export(started.request_id, raw_dest)
                rows, written, skipped = _write_id_column(raw_dest, dest, column or "user_id")
            finally:
                raw_dest.unlink(missing_ok=True)
    except OSError as exc:  # a full or read-only disk: no partial file was left behind
        raise FileWriteError("download file", dest, os_reason(exc)) from None
    return DownloadResult(
        cohort_id=str(cohort_id),
        request_id=started.request_id,
        path=str(dest),
        bytes=size,
        rows=rows,
        members_written=written,
        skipped_without_id=skipped,
        id_column=column,
        polls=len(polls),
        answers={"request": started.raw, "status": status.raw},
    )


def _count_csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        return sum(1 for _ in member_rows(reader, 0))


def column_index(header: Sequence[str], column: str) -> int:
    """Where ``column`` stands in an export's (lowercased) header; CheckFailed if absent."""
    if column not in header:
        raise CheckFailed(
            f"download export: the export has no {column!r} column "
            f"(columns: {', '.join(header) or 'none'})"
        )
    return header.index(column)


def member_rows(rows: Iterable[list[str]], index: int) -> Iterator[tuple[list[str], str]]:
    """Each member row of an export (blank rows left out) and its id in column ``index``.

    The id is stripped, ``""`` when the member has none in that column.
    """
    for row in rows:
        if any(cell.strip() for cell in row):
            yield row, row[index].strip() if index < len(row) else ""


def _write_id_column(source: Path, dest: Path, column: str) -> tuple[int, int, int]:
    """Copy one column of an export CSV to ``dest``, one id per line: (rows, written, skipped)."""
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        counts = _copy_column(source, tmp, column)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return counts


def _copy_column(source: Path, tmp: Path, column: str) -> tuple[int, int, int]:
    rows = written = skipped = 0
    with (
        source.open(encoding="utf-8", newline="") as handle,
        tmp.open("w", encoding="utf-8") as out,
    ):
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        for _, value in member_rows(reader, column_index(header, column)):
            rows += 1
            if value:
                out.write(value + "\n")
                written += 1
            else:
                skipped += 1
    return rows, written, skipped

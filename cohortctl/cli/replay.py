"""``cohortctl replay``: send the requests of a HAR recording again, at another endpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cohortctl.cli import destination_options as dest
from cohortctl.cli.bundles import OutputOptions, with_bundles
from cohortctl.cli.options import option
from cohortctl.cli.render import OutputFormat, err, out, print_json, table
from cohortctl.durations import json_seconds
from cohortctl.errors import CheckFailed, InputError
from cohortctl.http.har import read_har
from cohortctl.http.text import body_excerpt
from cohortctl.partner.conformance import reports
from cohortctl.partner.conformance.reports import check_writable, write_text
from cohortctl.partner.destination import make_client, parse_auth_mode
from cohortctl.partner.replay import (
    Expect,
    RecordedRequest,
    Replayer,
    ReplayRun,
    hidden_headers,
    recorded_auth,
    recorded_requests,
)

HarFiles = Annotated[
    list[Path],
    typer.Argument(help="HAR files (from --har, serve partner --record, or a browser), "
                   "replayed one after another as one run.", dir_okay=False,
                   show_default=False),
]  # fmt: skip
ExpectOption = Annotated[
    Expect,
    typer.Option(
        "--expect",
        help="recorded: each answer's status must equal the recorded one; 2xx: any success.",
        case_sensitive=False,
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Requests in flight at once (a list-create always runs alone, in order).",
    ),
]
Junit = Annotated[
    Path | None,
    option("--junit", help="Write a JUnit XML report here.", dir_okay=False),
]  # fmt: skip


def _status(status: int | None, error: str | None = None) -> str:
    if status is not None:
        return str(status)
    return error or "no answer"


def _cases(run: ReplayRun) -> list[reports.CaseResult]:
    cases = []
    for result in run.results:
        sent = result.request
        name = f"{sent.index + 1}: {sent.call or sent.method} {result.url}"
        cases.append(
            reports.CaseResult(
                name=name,
                group=sent.call or "request",
                status="pass" if result.matched else "fail",
                expected=_status(sent.recorded_status) if sent.recorded_status else "2xx",
                actual=_status(result.status, result.error),
                detail=body_excerpt(result.body, 300) if result.body else "",
                duration_s=result.latency_ms / 1000,
            )
        )
    return cases


def _render(run: ReplayRun, view: OutputOptions, expect: Expect) -> None:
    """The table (or JSON) on stdout; mismatches, list ids and the summary on stderr
    (``-q``: the summary only)."""
    output = view.output
    if output is OutputFormat.json:
        print_json(
            {
                "ok": run.ok,
                "expect": expect.value,
                "requests": len(run.results),
                "mismatched": run.mismatched,
                "list_ids": run.list_ids,
                "duration_s": json_seconds(run.duration_s),
                "results": [r.to_dict() for r in run.results],
            }
        )
    elif not view.quiet:
        rows = [
            (
                r.request.index + 1,
                r.request.call or "",
                r.request.method,
                r.url,
                _status(r.request.recorded_status),
                _status(r.status, r.error),
                "match" if r.matched else "MISMATCH",
                f"{r.latency_ms:.0f}",
                body_excerpt(r.body, 60),
            )
            for r in run.results
        ]
        columns = ["#", "call", "method", "url", "recorded", "status", "result", "ms", "body"]
        out.print(table(columns, rows))
    if output is not OutputFormat.json and not view.quiet:
        for r in run.results:
            if r.matched:
                continue
            recorded = body_excerpt(r.recorded_body, 120) if r.recorded_body else "(no body)"
            now = body_excerpt(r.body, 120) if r.body else (r.error or "(no body)")
            err.print(
                f"#{r.request.index + 1} {escape(r.request.call or r.request.method)}: recorded "
                f"{escape(_status(r.request.recorded_status))} {escape(recorded)}; now "
                f"{escape(_status(r.status, r.error))} {escape(now)}"
            )
    for old, new in run.list_ids.items() if not view.quiet else ():
        err.print(f"list id {escape(old)} of the recording is {escape(new)} in this replay")
    summary = f"{len(run.results)} request(s) replayed: {run.mismatched} did not match"
    err.print(escape(summary) if run.ok else f"[red]{escape(summary)}[/]")


@with_bundles
def replay(
    har: HarFiles,
    *,
    target: dest.PartnerEndpoint,
    expect: ExpectOption = Expect.recorded,
    workers: Workers = 1,
    junit: Junit = None,
    view: OutputOptions,
) -> None:
    """Send the requests of a HAR recording again, rebased on --url, and compare the answers.

    Several files are replayed one after another as one run (list ids carry over), so a
    first sync and its deltas rebuild the final state. Requests go in recorded order
    (--workers N sends N at once; a list-create always runs alone). Credentials come from
    the environment or the profile (COHORTCTL_PARTNER_API_KEY, --auth, default: the scheme
    the recording used), never from the recording. The list id a list-create answers now
    replaces the recorded one in later paths and bodies.

    --expect recorded (default): an answer matches when its status equals the recorded one;
    --expect 2xx: when it is a success. Bodies are shown, not compared. Exit 0 when every
    answer matched, 1 otherwise, 2 for a bad file or usage.

    Example: cohortctl replay first.har delta.har --url http://127.0.0.1:8080
    """
    cfg = target.load_config()
    requests: list[RecordedRequest] = []
    for path in har:
        log = read_har(path)
        found = recorded_requests(log, source=str(path), start=len(requests))
        if not found:
            raise InputError(f"{path}: the recording holds no requests")
        if log.get("_truncated"):
            err.print(f"{escape(str(path))} was cut short: replaying its {len(found)} entries")
        requests += found
    mode = target.auth
    if mode is None and cfg.resolve("partner_auth").source == "default":
        mode = recorded_auth(requests)
    auth = parse_auth_mode(mode) if mode is not None else None
    destination = dataclasses.replace(target, auth=auth).destination(cfg)
    if junit is not None:
        check_writable(junit, "--junit")
    for name in hidden_headers(requests, destination.headers):
        err.print(
            f"the recording hid {escape(name)}: sent without it (give it with -H "
            f"'{escape(name)}:VALUE')"
        )
    with make_client(destination) as client:
        run = Replayer(client, destination, expect=expect, workers=workers).run(requests)
    if junit is not None:
        xml = reports.junit_xml(
            "cohortctl replay", _cases(run), properties={"har": " ".join(map(str, har))}
        )
        write_text(junit, xml, what="JUnit report")
    _render(run, view, expect)
    if not run.ok:
        raise CheckFailed(
            f"{run.mismatched} of {len(run.results)} replayed request(s) did not get the "
            f"{'recorded status' if expect is Expect.recorded else '2xx'}"
        )

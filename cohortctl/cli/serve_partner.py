"""``cohortctl serve partner``: the reference partner endpoint for Amplitude's cohort sync."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cohortctl.cli.bundles import with_bundles
from cohortctl.cli.options import AllowInsecureHttp, option
from cohortctl.cli.render import err
from cohortctl.cli.serve import Listening
from cohortctl.cli.serve import app as serve_app
from cohortctl.errors import InputError

FORWARD = "Validating proxy"


class ReceiverAuth(str, Enum):
    """``--auth``: the credentials the receiver accepts."""

    basic = "basic"
    header = "header"
    bearer = "bearer"
    any = "any"
    none = "none"


_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|sec|second|m|min|minute)\s*", re.I)


def parse_rate(text: str) -> float:
    """Requests per second from ``N/s`` or ``N/m`` (``10/s``, ``120/m``, ``0.5/s``)."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise InputError(
            f"--rate-limit {text!r}: expected a number of requests per second or minute, "
            "like 10/s or 120/m"
        )
    count = float(match.group(1))
    if count <= 0:
        raise InputError(f"--rate-limit {text!r}: must be more than zero")
    per_minute = match.group(2).lower().startswith("m")
    return count / 60 if per_minute else count


@dataclasses.dataclass(frozen=True)
class Faults:
    """Faults the receiver injects, for testing senders: ``--fail-rate``, ``--fail-status``,
    ``--delay-ms``, ``--reset-rate``, ``--seed`` (named as :class:`ReceiverSettings` names
    them)."""

    fail_rate: Annotated[
        float,
        typer.Option(
            "--fail-rate",
            min=0.0,
            max=1.0,
            help="Share of requests answered --fail-status (0 to 1).",
        ),
    ] = 0.0
    fail_status: Annotated[
        int,
        typer.Option("--fail-status", min=100, max=599, help="Status of injected failures."),
    ] = 503
    delay_ms: Annotated[
        int, typer.Option("--delay-ms", min=0, help="Milliseconds to wait before answering.")
    ] = 0
    reset_rate: Annotated[
        float,
        typer.Option(
            "--reset-rate",
            min=0.0,
            max=1.0,
            help="Share of connections dropped without an answer (0 to 1).",
        ),
    ] = 0.0
    seed: Annotated[
        int | None,
        option("--seed", help="Seed of the injected faults, for repeatable runs."),
    ] = None


@dataclasses.dataclass(frozen=True)
class BrokenContract:
    """The hidden switches that break the contract on purpose, for testing a conformance
    checker: ``--accept-any-key``, ``--accept-bad-bodies``, ``--never-404``."""

    accept_any_key: Annotated[
        bool,
        typer.Option("--accept-any-key", hidden=True, help="Break the contract: never 401."),
    ] = False
    accept_bad_bodies: Annotated[
        bool,
        typer.Option("--accept-bad-bodies", hidden=True, help="Break the contract: never 400."),
    ] = False
    never_404: Annotated[
        bool,
        typer.Option("--never-404", hidden=True, help="Break the contract: never 404."),
    ] = False

    def flags(self) -> list[str]:
        """The switches given, as typed."""
        return [
            f"--{field.name.replace('_', '-')}"
            for field in dataclasses.fields(self)
            if getattr(self, field.name)
        ]


@with_bundles
def partner(
    *,
    listening: Listening,
    api_key: Annotated[
        str | None,
        option(
            "--api-key",
            envvar="COHORTCTL_PARTNER_API_KEY",
            help="Key senders must present (prefer the env var: flags show up in ps). "
            "Without one, any credentials are accepted.",
        ),
    ] = None,
    secret: Annotated[
        str | None,
        option(
            "--secret",
            envvar="COHORTCTL_PARTNER_SECRET",
            help="Basic-auth password senders must present (default: empty, as Amplitude).",
        ),
    ] = None,
    auth: Annotated[
        ReceiverAuth,
        typer.Option(
            "--auth",
            help="Credentials accepted: basic (Amplitude's), header (api_key: KEY), "
            "bearer, any of those, or none.",
            case_sensitive=False,
        ),
    ] = ReceiverAuth.basic,
    db: Annotated[
        Path | None,
        option(
            "--db",
            help="SQLite file keeping lists, traits and the journal across restarts "
            "(default: in memory).",
            dir_okay=False,
        ),
    ] = None,
    known_users: Annotated[
        Path | None,
        option(
            "--known-users",
            help="ID file of the only user ids accepted; any other answers 404.",
            dir_okay=False,
        ),
    ] = None,
    rate_limit: Annotated[
        str | None,
        option(
            "--rate-limit",
            help="Requests allowed, like 10/s or 120/m; more answer 429 with Retry-After.",
        ),
    ] = None,
    faults: Faults,
    journal_limit: Annotated[
        int,
        typer.Option("--journal-limit", min=1, help="Requests kept in the journal."),
    ] = 10_000,
    contract: BrokenContract,
    forward: Annotated[
        str | None,
        option(
            "--forward",
            help="Be a validating proxy: pass every request to this endpoint and its answer "
            "back unchanged, checking and journaling each (no state of its own).",
            rich_help_panel=FORWARD,
        ),
    ] = None,
    record: Annotated[
        Path | None,
        option(
            "--record",
            help="With --forward: write every exchange to this HAR 1.2 file, credentials "
            "redacted as --har does.",
            dir_okay=False,
            rich_help_panel=FORWARD,
        ),
    ] = None,
    forward_timeout: Annotated[
        float,
        typer.Option(
            "--forward-timeout",
            min=0.001,
            help="With --forward: seconds to wait for the endpoint's answer (then 502).",
            rich_help_panel=FORWARD,
        ),
    ] = 30.0,
    allow_insecure_http: AllowInsecureHttp = False,
    webhook_path: Annotated[
        str,
        typer.Option(
            "--webhook-path",
            help="Path taking Amplitude's Cohort Webhook messages (POST, default body).",
        ),
    ] = "/webhook",
    webhook_header: Annotated[
        list[str] | None,
        option(
            "--webhook-header",
            help="Header NAME:VALUE every webhook message must carry (missing 401, wrong "
            "403), repeatable; its value is never printed.",
        ),
    ] = None,
    webhook_user_agent: Annotated[
        str,
        typer.Option(
            "--webhook-user-agent",
            help="User-Agent webhook messages must carry; 'any' accepts every one.",
        ),
    ] = "Amplitude/Webhook/1.0",
) -> None:
    """Run the reference partner endpoint that receives Amplitude's cohort sync.

    Both sync modes on the default paths: POST /lists, /lists/{listId}/add and /remove
    (list-based) and POST /identify and /batch (property-based). Every payload is checked
    strictly against what Amplitude sends; a bad one answers 400 naming the field. State
    (lists, memberships, traits) is kept in memory and logged to SQLite before each answer;
    GET /_cohortctl/state, /lists/{id}, /traits?key=K and /journal show it without auth (a
    local test receiver).

    Cohort Webhooks on --webhook-path (default /webhook): every field and header checked,
    membership and properties kept per cohort (in memory), a repeated message_id
    acknowledged but applied once (409 when its body differs); GET /_cohortctl/webhooks,
    /webhooks/cohorts/{cohortId} and /webhooks/journal show them.

    Prints the base URL on stdout (and nothing else), diagnostics on stderr, and serves
    until Ctrl-C. Faults for testing senders: --fail-rate, --reset-rate, --delay-ms,
    --rate-limit.

    --forward URL makes it a validating proxy in front of a real endpoint: each request
    goes to URL and its answer comes back unchanged, while the receiver's checks judge it;
    GET /_cohortctl/journal shows both sides with the verdict, --record FILE.har writes
    them. GET /_cohortctl/ui is a live inspector page in either mode.

    Example: cohortctl serve partner --port 8080 & then
    cohortctl mock flow --url http://127.0.0.1:8080
    """
    if forward is not None:
        receiver_only = [
            db,
            known_users,
            rate_limit,
            faults.fail_rate,
            faults.reset_rate,
            faults.delay_ms,
        ]
        if any(value not in (None, 0, 0.0) for value in receiver_only):
            raise InputError(
                "--forward passes requests on: --db, --known-users, --rate-limit and the fault "
                "options are the receiver's and cannot be combined with it"
            )
        _forward(listening, forward, record, forward_timeout, journal_limit, allow_insecure_http)
        return
    if record is not None:
        raise InputError("--record needs --forward URL (the receiver journals by itself)")
    from cohortctl.servers.partner.app import ReceiverSettings, create_app
    from cohortctl.servers.partner.store import PartnerLog
    from cohortctl.servers.partner.webhooks import required_headers

    rate = parse_rate(rate_limit) if rate_limit is not None else None
    db_shown = str(db) if db is not None else ":memory:"
    if db is not None:
        if not db.parent.exists():
            raise InputError(f"--db {db}: directory {db.parent} does not exist")
        try:
            PartnerLog(db_shown).close()
        except sqlite3.Error as exc:
            raise InputError(
                f"--db {db}: cannot use it as the receiver's database: {exc}"
            ) from None
    known: frozenset[str] | None = None
    if known_users is not None:
        from cohortctl.ids import read_ids

        known = frozenset(read_ids(known_users).ids)
    settings = ReceiverSettings(
        api_key=api_key or None,
        secret=secret or None,
        auth=auth.value,
        db=db_shown,
        known_users=known,
        rate_limit=rate,
        **dataclasses.asdict(faults),
        journal_limit=journal_limit,
        **dataclasses.asdict(contract),
        webhook_path=_webhook_path(webhook_path),
        webhook_user_agent=None
        if webhook_user_agent.strip().lower() == "any"
        else webhook_user_agent,
        webhook_headers=required_headers(webhook_header or []),
    )
    receiver = create_app(settings)

    listening.warn_if_exposed("call this receiver over plain http and read its state without auth")
    if settings.api_key is None and auth is not ReceiverAuth.none:
        err.print("no --api-key / COHORTCTL_PARTNER_API_KEY given: accepting any credentials")
    broken = contract.flags()
    if broken:
        err.print(f"[yellow]warning:[/] breaking the contract on purpose: {', '.join(broken)}")
    if known is not None:
        err.print(f"accepting only the {len(known)} user id(s) of {escape(str(known_users))}")

    listening.serve(
        receiver, lambda url: f"partner receiver listening on {url} ({settings.describe()})"
    )


def _forward(
    listening: Listening,
    forward: str,
    record: Path | None,
    timeout: float,
    keep: int,
    allow_insecure_http: bool,
) -> None:
    from cohortctl.config import ensure_safe_url
    from cohortctl.servers.partner.forward import ForwardSettings, create_forward_app

    target = forward.strip()
    ensure_safe_url(target, allow_insecure_http=allow_insecure_http, what="senders' credentials")
    if record is not None and (record.is_dir() or not record.parent.is_dir()):
        raise InputError(f"--record {record}: not a file in an existing directory")
    settings = ForwardSettings(
        forward_url=target,
        record=str(record) if record is not None else None,
        timeout=timeout,
        keep=keep,
    )
    app = create_forward_app(settings)
    listening.warn_if_exposed("send requests through this proxy and read its journal without auth")
    recorded = f", recording to {record}" if record is not None else ""
    listening.serve(app, lambda url: f"validating proxy on {url}, forwarding to {target}{recorded}")


serve_app.command("partner")(partner)


def _webhook_path(path: str) -> str:
    path = path.strip()
    if not path.startswith("/") or path.startswith("/_cohortctl/"):
        raise InputError(f"--webhook-path must start with / (and not /_cohortctl/), got {path!r}")
    return path

"""The partner destination options shared by ``mock``, ``sync`` and ``check``.

Each command declares these ``Annotated`` parameters and hands them to
:func:`destination_from_options`, so every command spells, documents and resolves them the same
way: flag > environment > config profile > default (see :mod:`cohortctl.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import typer

from cohortctl import payloads
from cohortctl.config import Config
from cohortctl.destination import (
    DEFAULT_TIMEOUT,
    AuthMode,
    Destination,
    build_headers,
    parse_auth_mode,
)
from cohortctl.errors import ConfigError

PANEL = "Destination"

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Partner base URL (env COHORTCTL_PARTNER_URL; profile partner_url).",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help=(
            "Partner API key (prefer env COHORTCTL_PARTNER_API_KEY or profile "
            "partner_api_key: a flag lands in shell history). Never printed."
        ),
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
Secret = Annotated[
    str | None,
    typer.Option(
        "--secret",
        help="Basic-auth password (env COHORTCTL_PARTNER_SECRET); Amplitude sends none.",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
Auth = Annotated[
    AuthMode | None,
    typer.Option(
        "--auth",
        help=(
            "basic: key and empty password (Amplitude's default); header: api_key and app_id "
            "headers; bearer: Authorization: Bearer KEY; none. Env COHORTCTL_PARTNER_AUTH. "
            "[default: basic]"
        ),
        case_sensitive=False,
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
AppId = Annotated[
    str | None,
    typer.Option(
        "--app-id",
        help="app_id header value for --auth header (env COHORTCTL_PARTNER_APP_ID).",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
Header = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        "-H",
        help="Extra header NAME:VALUE, repeatable; wins over the auth headers.",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
ListIdPath = Annotated[
    str | None,
    typer.Option(
        "--list-id-path",
        help=(
            "JSON path of the new list's id in the list-create answer, e.g. data.id "
            "[default: listId, then id, list_id, data.id]"
        ),
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", help="Seconds to wait for each answer.", min=0.001, rich_help_panel=PANEL
    ),
]


def _path_option(flag: str, call: str) -> typer.models.OptionInfo:
    return typer.Option(
        flag,
        help=f"Path (or full URL) of {call} [default: {payloads.DEFAULT_PATHS[call]}]; "
        "$listId and other template variables are filled in.",
        show_default=False,
        rich_help_panel=PANEL,
    )


CreatePath = Annotated[str | None, _path_option("--create-path", payloads.LIST_CREATE)]
AddPath = Annotated[str | None, _path_option("--add-path", payloads.LIST_ADD)]
RemovePath = Annotated[str | None, _path_option("--remove-path", payloads.LIST_REMOVE)]
IdentifyPath = Annotated[str | None, _path_option("--identify-path", payloads.IDENTIFY)]
BatchPath = Annotated[str | None, _path_option("--batch-path", payloads.IDENTIFY_BATCH)]


def call_paths(
    *,
    create: str | None = None,
    add: str | None = None,
    remove: str | None = None,
    identify: str | None = None,
    batch: str | None = None,
) -> dict[str, str]:
    """The per-call path flags as a ``call -> path`` mapping (unset ones left out)."""
    given = {
        payloads.LIST_CREATE: create,
        payloads.LIST_ADD: add,
        payloads.LIST_REMOVE: remove,
        payloads.IDENTIFY: identify,
        payloads.IDENTIFY_BATCH: batch,
    }
    return {call: path for call, path in given.items() if path is not None}


def destination_from_options(
    cfg: Config,
    *,
    url: str | None,
    api_key: str | None = None,
    secret: str | None = None,
    auth: AuthMode | None = None,
    app_id: str | None = None,
    headers: list[str] | None = None,
    list_id_path: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    paths: Mapping[str, str] | None = None,
    require_credentials: bool = True,
    allow_insecure_http: bool = False,
) -> Destination:
    """Resolve the destination options against ``cfg`` into a checked :class:`Destination`.

    ``require_credentials=False`` (a dry run) accepts a missing API key; the URL is always
    validated, and credentials are refused over plain http to non-loopback hosts unless
    ``allow_insecure_http``.
    """
    base_url = cfg.require("partner_url", url, flag_name="--url")
    mode = parse_auth_mode(cfg.get("partner_auth", auth))
    resolved_app_id = cfg.get("partner_app_id", app_id)
    destination = Destination(
        base_url=str(base_url).strip(),
        auth=mode,
        api_key=_text(cfg.get("partner_api_key", api_key)),
        secret=_text(cfg.get("partner_secret", secret)),
        app_id=None if resolved_app_id is None else str(resolved_app_id),
        headers=build_headers(headers or []),
        paths={**payloads.DEFAULT_PATHS, **(paths or {})},
        list_id_path=list_id_path,
        timeout=timeout,
    )
    if require_credentials:
        destination.require_credentials()
    destination.ensure_safe(allow_insecure_http=allow_insecure_http or not require_credentials)
    return destination


def _text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)):
        raise ConfigError("partner credentials in the config profile must be strings")
    return str(value)

"""The partner destination options shared by ``mock``, ``check``, ``replay`` and ``sync``.

They come as bundles (dataclasses spread into a command's options by
:func:`cohortctl.cli.bundles.with_bundles`), so every command spells, documents and resolves
them the same way: flag > environment > config profile > default (see :mod:`cohortctl.config`):

- :class:`DestinationOptions`: ``--destination``, ``--url``, credentials, ``--header``,
  ``--list-id-path``, ``--timeout``, ``--profile``, ``--config``, ``--allow-insecure-http``;
  ``.load_config()``, ``.load_file()``, ``.destination(cfg, ...)``; ``--mode webhook``:
  :func:`cohortctl.cli.webhook_options.webhook_destination`.
- :class:`PartnerEndpoint`: the same without ``--destination`` (``replay``).
- :class:`CallPathOptions`: ``--create-path`` ... ``--batch-path``; ``.paths()``.
- :class:`TemplateOptions`: ``--create-payload`` ... ``--batch-payload``, ``--var``;
  ``.variables(file)``, ``.templates(file)``.

::

    @with_bundles
    def command(*, target: DestinationOptions, paths: CallPathOptions) -> None:
        cfg = target.load_config()
        file = target.load_file()
        destination = target.destination(cfg, paths=paths.paths(), file=file)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from cohortctl.cli.bundles import SettingsOptions
from cohortctl.cli.exchanges import EnvRef, env_name_for_header
from cohortctl.cli.options import TIMEOUT_HELP, option, request_deadline
from cohortctl.config import Config
from cohortctl.errors import ConfigError
from cohortctl.http.redact import is_sensitive_header
from cohortctl.ids import read_ids
from cohortctl.partner import payloads, templates
from cohortctl.partner.destination import (
    PARTNER_REQUEST_TIMEOUT,
    AuthMode,
    Destination,
    build_headers,
    parse_auth_mode,
)
from cohortctl.partner.destination_files import DestinationFile, resolve
from cohortctl.partner.templates import Template, parse_vars

PANEL = "Destination"

DestinationName = Annotated[str | None, option("--destination", panel=PANEL, help=(
    "Destination file (YAML: calls, auth, items, errors...) or a built-in profile: "
    "amplitude, flagsmith, launchdarkly, segment, statsig. Flags override its values; "
    "see `cohortctl destination`."))]  # fmt: skip
GivenListId = Annotated[str | None, option("--list-id", panel=PANEL,
    help="Use this existing list (its id is $listId): no list-create is sent.")]  # fmt: skip

Url = Annotated[str | None, option("--url", panel=PANEL,
    help="Partner base URL (env COHORTCTL_PARTNER_URL; profile partner_url).")]  # fmt: skip
ApiKey = Annotated[str | None, option("--api-key", panel=PANEL, help=(
    "Partner API key (prefer env COHORTCTL_PARTNER_API_KEY or profile "
    "partner_api_key: a flag lands in shell history). Never printed."))]  # fmt: skip
Secret = Annotated[str | None, option("--secret", panel=PANEL,
    help="Basic-auth password (env COHORTCTL_PARTNER_SECRET); Amplitude sends none.")]  # fmt: skip
Auth = Annotated[AuthMode | None, option("--auth", panel=PANEL, case_sensitive=False, help=(
    "basic: key and empty password (Amplitude's default); header: api_key and app_id "
    "headers; bearer: Authorization: Bearer KEY; none. Env COHORTCTL_PARTNER_AUTH. "
    "[default: basic]"))]  # fmt: skip
AppId = Annotated[str | None, option("--app-id", panel=PANEL,
    help="app_id header value for --auth header (env COHORTCTL_PARTNER_APP_ID).")]  # fmt: skip
Header = Annotated[list[str] | None, option("--header", "-H", panel=PANEL,
    help="Extra header NAME:VALUE, repeatable; wins over the auth headers.")]  # fmt: skip
ListIdPath = Annotated[str | None, option("--list-id-path", panel=PANEL, help=(
    "JSON path of the new list's id in the list-create answer, e.g. data.id "
    "[default: listId, then id, list_id, data.id]"))]  # fmt: skip
Timeout = Annotated[float, option("--timeout", panel=PANEL, help=TIMEOUT_HELP,
    parser=request_deadline, metavar="DURATION", show_default=True)]  # fmt: skip

# The calls in the order of their flags, each with the word its flags start with
# (--create-path, --create-payload ...): the per-call bundles read their fields by this table.
CALL_FLAGS = {
    payloads.LIST_CREATE: "create",
    payloads.LIST_ADD: "add",
    payloads.LIST_REMOVE: "remove",
    payloads.IDENTIFY: "identify",
    payloads.IDENTIFY_BATCH: "batch",
}


def path_option(flag: str, call: str, *, what: str | None = None) -> typer.models.OptionInfo:
    """The path option of ``call`` (``what`` names it in the help, the call by default)."""
    return option(flag, panel=PANEL, help=(
        f"Path (or full URL) of {what or call} [default: {payloads.DEFAULT_PATHS[call]}]; "
        "$listId and other template variables are filled in."))  # fmt: skip


CreatePath = Annotated[str | None, path_option("--create-path", payloads.LIST_CREATE)]
AddPath = Annotated[str | None, path_option("--add-path", payloads.LIST_ADD)]
RemovePath = Annotated[str | None, path_option("--remove-path", payloads.LIST_REMOVE)]
IdentifyPath = Annotated[str | None, path_option("--identify-path", payloads.IDENTIFY)]
BatchPath = Annotated[str | None, path_option("--batch-path", payloads.IDENTIFY_BATCH)]


def partner_recording(
    har: Path | None, destination: Destination
) -> contextlib.AbstractContextManager[object]:
    """``--har`` for partner calls: every exchange recorded, credentials redacted, each entry
    named by its call (list-create, list-add ...)."""
    from cohortctl.http.har import recording
    from cohortctl.partner.calls import call_matcher

    return recording(
        har,
        base_url=destination.base_url,
        secrets=destination.secrets(),
        call_of=call_matcher(destination),
    )


def load_destination(value: str | None) -> DestinationFile | None:
    """The ``--destination`` file or built-in profile, or None."""
    return resolve(value) if value is not None else None


def merged_templates(
    file: DestinationFile | None, given: Mapping[str, Template]
) -> dict[str, Template]:
    """The file's payload templates, the ones given on the command line winning; every
    template builds ``$items`` with the file's item template."""
    if file is None:
        return dict(given)
    found = file.templates()
    for call, template in given.items():
        found[call] = Template(template.text, template.source, items=file.items)
    return found


def custom_variables(file: DestinationFile | None, given: Mapping[str, str]) -> dict[str, str]:
    """The custom variables: the file's, ``--var`` winning (the file's required ones checked)."""
    return file.variable_values(given) if file is not None else dict(given)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)):
        raise ConfigError("partner credentials in the config profile must be strings")
    return str(value)


# -- users and payload templates, shared by mock, sync and check ------------------------------

USERS_PANEL = "Cohort and users"
TEMPLATES_PANEL = "Payload templates"

IdColumn = Annotated[str | None, option("--column", panel=USERS_PANEL,
    help="CSV column of --ids holding the ids.")]  # fmt: skip
Var = Annotated[list[str] | None, option("--var", panel=TEMPLATES_PANEL,
    help="Custom template variable NAME=VALUE, repeatable.")]  # fmt: skip


def payload_option(flag: str, call: str) -> typer.models.OptionInfo:
    """A payload template option for ``call`` (``--add-payload`` ...; the ``--payload`` of
    ``mock`` and ``sync``)."""
    return option(
        flag,
        panel=TEMPLATES_PANEL,
        dir_okay=False,
        help=f"JSON template file for {call}, Integration-Portal style: $items, $listId, "
        "$amplitude_cohort_name, $amplitude_cohort_id, $userId, $member, --var names.",
    )


CreatePayload = Annotated[Path | None, payload_option("--create-payload", payloads.LIST_CREATE)]
AddPayload = Annotated[Path | None, payload_option("--add-payload", payloads.LIST_ADD)]
RemovePayload = Annotated[Path | None, payload_option("--remove-payload", payloads.LIST_REMOVE)]
IdentifyPayload = Annotated[Path | None, payload_option("--identify-payload", payloads.IDENTIFY)]
BatchPayload = Annotated[Path | None, payload_option("--batch-payload", payloads.IDENTIFY_BATCH)]


def read_user_ids(
    ids_file: Path | None, column: str | None, ids: Sequence[str] | None
) -> tuple[str, ...]:
    """User ids from ``--ids FILE`` then ``--id`` flags, trimmed, deduplicated, in order."""
    found: list[str] = []
    if ids_file is not None:
        found += read_ids(str(ids_file), column=column).ids
    found += [i.strip() for i in ids or [] if i.strip()]
    return tuple(dict.fromkeys(found))


def curl_credentials(
    destination: Destination, headers: Mapping[str, str]
) -> tuple[EnvRef | None, list[tuple[str, str | EnvRef]]]:
    """A request's headers for ``--as-curl``: every credential as an ``$ENV`` reference.

    Basic auth becomes ``--user "$COHORTCTL_PARTNER_API_KEY:$COHORTCTL_PARTNER_SECRET"``;
    bearer and header auth name the same variables; a credential-looking ``--header`` reads
    ``$COHORTCTL_HEADER_<NAME>``.
    """
    key, secret = "$COHORTCTL_PARTNER_API_KEY", "$COHORTCTL_PARTNER_SECRET"
    user: EnvRef | None = None
    shown: list[tuple[str, str | EnvRef]] = []
    extra = {name.lower() for name, _ in destination.headers}
    for name, value in headers.items():
        lower = name.lower()
        if lower in extra:
            if is_sensitive_header(name) or value in destination.secrets():
                shown.append((name, EnvRef(f"${env_name_for_header(name)}")))
            else:
                shown.append((name, value))
        elif lower == "authorization" and destination.auth is AuthMode.basic:
            user = EnvRef(f"{key}:{secret if destination.secret else ''}")
        elif lower == "authorization" and destination.auth is AuthMode.bearer:
            shown.append((name, EnvRef(f"Bearer {key}")))
        elif lower == "api_key" and destination.auth is AuthMode.header:
            shown.append((name, EnvRef(key)))
        elif lower == "app_id" and destination.auth is AuthMode.header:
            shown.append((name, EnvRef("$COHORTCTL_PARTNER_APP_ID")))
        else:
            shown.append((name, value))
    return user, shown


# -- the bundles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerEndpoint(SettingsOptions):
    """The partner's URL and how to authenticate there (``replay``'s bundle; the base of
    :class:`DestinationOptions`)."""

    url: Url = None
    api_key: ApiKey = None
    secret: Secret = None
    auth: Auth = None
    app_id: AppId = None
    header: Header = None
    list_id_path: ListIdPath = None
    timeout: Timeout = PARTNER_REQUEST_TIMEOUT

    def destination(
        self,
        cfg: Config,
        *,
        paths: Mapping[str, str] | None = None,
        require_credentials: bool = True,
        file: DestinationFile | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Destination:
        """Resolve these options against ``cfg`` into a checked :class:`Destination`.

        With a destination ``file``: a flag wins over the file, the file over the environment
        and the config profile. ``variables`` fill the file's header values.
        ``require_credentials=False`` (a dry run) accepts a missing API key; the URL is always
        validated, and credentials are refused over plain http to non-loopback hosts unless
        ``--allow-insecure-http``.
        """
        url, auth, list_id_path = self.url, self.auth, self.list_id_path
        if file is not None and url is None and file.url:
            url = file.url
        if file is not None and auth is None and file.auth is not None:
            auth = file.auth
        base_url = cfg.require("partner_url", url, flag_name="--url")
        mode = parse_auth_mode(cfg.get("partner_auth", auth))
        resolved_app_id = cfg.get("partner_app_id", self.app_id)
        file_headers: tuple[tuple[str, str], ...] = ()
        if file is not None:
            values = dict(variables or {})
            file_headers = tuple(
                (
                    name,
                    templates.render_text(value, values, source=f"{file.source}: headers.{name}"),
                )
                for name, value in file.headers
            )
            paths = {**file.paths(), **(paths or {})}
            list_id_path = list_id_path or file.list_id_path
        destination = Destination(
            base_url=str(base_url).strip(),
            auth=mode,
            api_key=_text(cfg.get("partner_api_key", self.api_key)),
            secret=_text(cfg.get("partner_secret", self.secret)),
            app_id=None if resolved_app_id is None else str(resolved_app_id),
            headers=file_headers + build_headers(self.header or []),
            paths={**payloads.DEFAULT_PATHS, **(paths or {})},
            list_id_path=list_id_path,
            timeout=self.timeout,
        )
        if file is not None:
            destination = replace(
                destination,
                name=file.name,
                methods=file.methods(),
                calls=frozenset(file.calls),
                success=file.success,
                errors=file.errors,
                max_body_bytes=file.max_body_bytes,
                rate_limit=file.rate_limit,
                auth_header=file.auth_header if mode is file.auth else None,
            )
        if require_credentials:
            destination.require_credentials()
        destination.ensure_safe(
            allow_insecure_http=self.allow_insecure_http or not require_credentials
        )
        return destination


@dataclass(frozen=True)
class DestinationOptions(PartnerEndpoint):
    """The destination bundle of ``mock``, ``check`` and ``sync``: :class:`PartnerEndpoint`
    plus ``--destination`` (a destination file or built-in profile)."""

    destination_name: DestinationName = None

    def load_file(self) -> DestinationFile | None:
        """The ``--destination`` file or built-in profile, or None."""
        return load_destination(self.destination_name)


@dataclass(frozen=True)
class CallPathOptions:
    """``--create-path``, ``--add-path``, ``--remove-path``, ``--identify-path``,
    ``--batch-path``: where each call goes."""

    create_path: CreatePath = None
    add_path: AddPath = None
    remove_path: RemovePath = None
    identify_path: IdentifyPath = None
    batch_path: BatchPath = None

    def paths(self) -> dict[str, str]:
        """The given paths as ``call -> path`` (unset ones left out)."""
        given = {call: getattr(self, f"{word}_path") for call, word in CALL_FLAGS.items()}
        return {call: path for call, path in given.items() if path is not None}


@dataclass(frozen=True)
class TemplateOptions:
    """``--create-payload`` ... ``--batch-payload`` and ``--var``: the payload templates."""

    create_payload: CreatePayload = None
    add_payload: AddPayload = None
    remove_payload: RemovePayload = None
    identify_payload: IdentifyPayload = None
    batch_payload: BatchPayload = None
    var: Var = None

    def variables(self, file: DestinationFile | None) -> dict[str, str]:
        """The custom variables: the file's, ``--var`` winning."""
        return custom_variables(file, parse_vars(self.var or []))

    def templates(self, file: DestinationFile | None) -> dict[str, Template]:
        """The templates given, keyed by call, over the file's (see :func:`merged_templates`);
        bad ones exit 2."""
        files = {call: getattr(self, f"{word}_payload") for call, word in CALL_FLAGS.items()}
        given = {call: Template.from_file(path) for call, path in files.items() if path is not None}
        return merged_templates(file, given)

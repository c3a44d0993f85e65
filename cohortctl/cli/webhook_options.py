"""Options of webhook mode shared by ``mock webhook``, ``mock flow``, ``sync`` and ``check``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from cohortctl.cli import destination_options as dest
from cohortctl.cli.bundles import SettingsOptions
from cohortctl.cli.options import flag, option
from cohortctl.config import Config
from cohortctl.errors import InputError
from cohortctl.partner.destination import PARTNER_REQUEST_TIMEOUT
from cohortctl.partner.destination_files import DestinationFile
from cohortctl.partner.webhooks.freemarker import WebhookTemplate
from cohortctl.partner.webhooks.messages import users_of
from cohortctl.partner.webhooks.payload import CALL, User, WebhookDestination
from cohortctl.sync.properties import PropertySelection, read_with_properties

PANEL = "Cohort Webhooks (--mode webhook)"

UserAgent = Annotated[str | None, option("--user-agent", panel=PANEL, help=(
    "User-Agent of webhook messages [default: Amplitude/Webhook/1.0, as Amplitude]."))]  # fmt: skip
Property = Annotated[list[str] | None, option("--property", panel=PANEL, help=(
    "CSV snapshot column sent as a user property, repeatable (at most 50)."))]  # fmt: skip
AllProperties = Annotated[bool, flag("--all-properties", panel=PANEL,
    help="Send every other column of the CSV snapshot as a user property.")]  # fmt: skip
TypedProperties = Annotated[bool, flag("--typed-properties", panel=PANEL, help=(
    "Read numbers and true/false in property columns as JSON numbers and booleans "
    "[default: strings]."))]  # fmt: skip


WebhookPath = Annotated[str | None, option("--path", panel=dest.PANEL, help=(
    "Added to the webhook URL's path (or a full URL) [default: the URL itself]."))]  # fmt: skip
WebhookHeader = Annotated[list[str] | None, option("--header", "-H", panel=dest.PANEL, help=(
    "Custom header NAME:VALUE, repeatable, at most 5 (Amplitude's limit); the only "
    "auth a webhook has, so values are never printed."))]  # fmt: skip
Template = Annotated[Path | None, option("--payload", panel=PANEL, dir_okay=False, help=(
    "FreeMarker template reshaping the body over `input` (the default body), as in "
    "Amplitude's Cohort Webhook settings."))]  # fmt: skip


@dataclass(frozen=True)
class WebhookOptions(SettingsOptions):
    """The webhook bundle of ``mock webhook``: the URL (or a ``mode: webhook`` destination),
    ``--path``, ``--header``, ``--user-agent``, ``--timeout``, ``--payload``, settings."""

    url: dest.Url = None
    destination_name: dest.DestinationName = None
    path: WebhookPath = None
    header: WebhookHeader = None
    user_agent: UserAgent = None
    timeout: dest.Timeout = PARTNER_REQUEST_TIMEOUT
    payload: Template = None

    def destination(self) -> WebhookDestination:
        """The checked webhook destination (flag > destination file > env > profile)."""
        file = dest.load_destination(self.destination_name)
        return webhook_destination(
            self.load_config(),
            self,
            path=self.path,
            user_agent=self.user_agent,
            payload=self.payload,
            file=file,
        )


@dataclass(frozen=True)
class PropertyOptions:
    """``--property``, ``--all-properties``, ``--typed-properties``: the snapshot columns
    sent as user properties."""

    prop: Property = None
    all_properties: AllProperties = False
    typed_properties: TypedProperties = False

    def selection(self) -> PropertySelection:
        """The columns chosen and how their values are read."""
        return selection(self.prop, self.all_properties, self.typed_properties)


@dataclass(frozen=True)
class WebhookMessageOptions(PropertyOptions):
    """What ``mock flow`` and ``check`` take in webhook mode besides the destination:
    ``--path``, ``--payload`` and the user properties."""

    path: WebhookPath = None
    payload: Template = None

    def destination(
        self,
        cfg: Config,
        endpoint: WebhookEndpoint,
        file: DestinationFile | None,
        *,
        user_agent: str | None,
    ) -> WebhookDestination:
        """The webhook of ``--mode webhook``: ``endpoint``'s URL, headers and deadline (see
        :func:`webhook_destination`), with this ``--path`` and ``--payload``."""
        return webhook_destination(
            cfg, endpoint, path=self.path, user_agent=user_agent, payload=self.payload, file=file
        )

    def refuse_outside_webhook_mode(self) -> None:
        """An input error naming the first webhook-only option given in another mode."""
        given = {
            "--path": self.path is not None,
            "--payload": self.payload is not None,
            "--property": bool(self.prop),
            "--all-properties": self.all_properties,
            "--typed-properties": self.typed_properties,
        }
        for name, used in given.items():
            if used:
                raise InputError(
                    f"{name} is for --mode webhook (list and property mode: "
                    "--add-path, --add-payload ... and the destination file)"
                )


def refuse_partner_auth(endpoint: object) -> None:
    """Refuse partner credentials given as flags in webhook mode (an input error naming the
    first); the same settings from the environment or a profile are ignored quietly."""
    for name in ("api_key", "auth", "secret", "app_id"):
        if getattr(endpoint, name, None) is not None:
            given = "--" + name.replace("_", "-")
            raise InputError(
                f"{given} is not used in webhook mode: a webhook's only auth is "
                "--header NAME:VALUE (at most 5)"
            )


def selection(names: list[str] | None, everything: bool, typed: bool) -> PropertySelection:
    """The ``--property``/``--all-properties``/``--typed-properties`` choice."""
    return PropertySelection(tuple(n.strip() for n in names or [] if n.strip()), everything, typed)


class WebhookEndpoint(Protocol):
    """Where a webhook goes and how: ``--url``, ``--header``, ``--timeout``,
    ``--allow-insecure-http`` (:class:`WebhookOptions`, or the destination options of
    ``mock flow``, ``check`` and ``sync``)."""

    @property
    def url(self) -> str | None: ...
    @property
    def header(self) -> list[str] | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def allow_insecure_http(self) -> bool: ...


def webhook_destination(
    cfg: Config,
    endpoint: WebhookEndpoint,
    *,
    path: str | None,
    user_agent: str | None,
    payload: Path | None = None,
    file: DestinationFile | None = None,
) -> WebhookDestination:
    """The webhook URL (``--url``, a ``mode: webhook`` destination file, env
    COHORTCTL_PARTNER_URL, profile), its headers (the file's, then ``--header``), path and
    template (``--payload``, else the file's). Partner credentials on ``endpoint`` (the
    destination options of ``mock flow``, ``check``, ``sync``) are an input error."""
    refuse_partner_auth(endpoint)
    if file is not None and file.mode != "webhook":
        raise InputError(f"destination {file.name!r} is in {file.mode} mode, not webhook")
    url = endpoint.url
    if url is None and file is not None:
        url = file.url
    resolved = cfg.require("partner_url", url, flag_name="--url")
    template = WebhookTemplate.from_file(str(payload)) if payload is not None else None
    given = list(endpoint.header or [])
    if file is not None:
        names = {h.partition(":")[0].strip().lower() for h in given}
        given = [f"{k}:{v}" for k, v in file.headers if k.lower() not in names] + given
        path = path if path is not None else file.webhook_path
        if template is None and file.webhook_payload is not None:
            source = f"{file.source}: calls.webhook.payload"
            template = WebhookTemplate.parse(file.webhook_payload, source)
    return WebhookDestination.from_options(
        str(resolved),
        path=path,
        headers=given,
        user_agent=user_agent,
        timeout=endpoint.timeout,
        template=template,
        allow_insecure_http=endpoint.allow_insecure_http,
    )


def read_users(
    ids_file: Path | None,
    column: str | None,
    ids: list[str] | None,
    chosen: PropertySelection,
    default: tuple[str, ...],
) -> list[User]:
    """The users of a message from ``--ids``/``--id``, with the selected properties."""
    if chosen.active and ids_file is None:
        raise InputError("--property and --all-properties read a CSV snapshot: give --ids FILE")
    if not chosen.active or ids_file is None:
        return users_of(dest.read_user_ids(ids_file, column, ids) or default, {})
    read, properties = read_with_properties(str(ids_file), column, chosen)  # stdin (-) read once
    given = [i.strip() for i in ids or [] if i.strip()]
    return users_of(tuple(dict.fromkeys([*read.ids, *given])), properties)


def webhook_recording(har: Path | None, destination: WebhookDestination) -> Any:
    """``--har`` for webhook messages: a HAR recording of every message, custom headers hidden.

    Webhook messages all go to the one URL, so every entry is the ``webhook`` call.
    """
    from urllib.parse import urlsplit

    from cohortctl.http.har import recording

    parts = urlsplit(destination.url)
    return recording(
        har,
        base_url=f"{parts.scheme}://{parts.netloc}",
        secrets=destination.secrets(),
        call_of=lambda _method, _url: CALL,
    )

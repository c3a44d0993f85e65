"""A partner destination: where Amplitude's cohort-sync calls go and how they authenticate.

One :class:`Destination` holds the base URL, the auth mode and credentials, extra headers,
the path of each call, where the list id sits in the list-create answer, and the timeout.
It builds the headers and URLs of every request; ``mock``, ``sync`` and ``check`` share it.

Secrets (the api key, the Basic secret, the value of any credential-looking header) live only
here: ``repr`` hides them, :meth:`Destination.redacted_headers` and
:func:`cohortctl.http.har.redact_url` are how requests are shown, and :meth:`Destination.scrub`
removes them from text that came back.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from cohortctl.config import ensure_safe_url, redact
from cohortctl.errors import CheckFailed, ConfigError, InputError
from cohortctl.http import client as http_client
from cohortctl.http.har import redact_url
from cohortctl.http.redact import Redactor, credential_values, is_sensitive_header
from cohortctl.http.text import body_excerpt
from cohortctl.partner import payloads, templates
from cohortctl.partner.classify import ErrorClass, Reply, classify, special_meaning

PARTNER_REQUEST_TIMEOUT = 10.0
DEFAULT_LIST_ID_PATH = "listId"
# Spec part B: "default listId, falling back to id, list_id, data.id".
LIST_ID_FALLBACKS = ("listId", "id", "list_id", "data.id")
NO_LIST_ID = "none"  # list_id_path: the create answer holds no id (paths name no $listId)

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# --header values that are not credentials (and would mangle bodies if redacted).
_NOT_CREDENTIALS = frozenset({"content-type", "accept", "accept-encoding", "user-agent"})
_PATH_STEP = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


class AuthMode(str, Enum):
    """How requests authenticate, as the Integration Portal offers it (spec part B)."""

    basic = "basic"  # Authorization: Basic base64("{api_key}:{secret or ''}")
    header = "header"  # api_key: KEY and app_id: APP headers (seed 001)
    bearer = "bearer"  # Authorization: Bearer KEY
    none = "none"


def parse_auth_mode(value: str | AuthMode) -> AuthMode:
    """An :class:`AuthMode` from a flag, env or profile value; ConfigError when unknown."""
    if isinstance(value, AuthMode):
        return value
    try:
        return AuthMode(str(value).strip().lower())
    except ValueError:
        known = ", ".join(m.value for m in AuthMode)
        raise ConfigError(f"unknown partner auth {value!r}: use {known}") from None


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` (from ``--header``) as a pair; InputError when malformed."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise InputError(f"bad --header {_shown_header_arg(text)!r}: expected NAME:VALUE")
    if not _HEADER_NAME.match(name):
        raise InputError(
            f"bad --header name {_shown_header_arg(name)!r}: "
            "only letters, digits and !#$%&'*+-.^_`|~"
        )
    if any(c in value for c in "\r\n\0"):
        raise InputError(f"bad --header {name!r}: the value contains a line break or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise InputError(
            f"bad --header {name!r}: the value has a character outside latin-1, which an HTTP"
            " header cannot carry (percent-encode it, or send it in the body)"
        ) from None
    return name, value


def _shown_header_arg(text: str) -> str:
    # The value may be a credential: show only the first word of what came before the colon.
    words = text.partition(":")[0].split()
    return f"{words[0]}: …" if words else "…"


def parse_list_id_path(path: str) -> tuple[str | int, ...]:
    """``data.id``, ``$.data.id``, ``items[0].id`` or ``items.0.id`` as lookup steps."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    steps: list[str | int] = []
    pos = 0
    for match in _PATH_STEP.finditer(text):
        gap = text[pos : match.start()]
        if gap not in ("", "."):
            break
        pos = match.end()
        index, key = match.groups()
        steps.append(int(index) if index is not None else key)
    if not steps or pos != len(text) or text.endswith("."):
        raise InputError(f"bad --list-id-path {path!r}: use a dotted path such as data.id")
    return tuple(steps)


def _usable_list_id(value: Any) -> bool:
    """A list id that can go into a path: a non-empty string or number, not ``.`` or ``..``."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (str, int, float))
        and str(value).strip() not in ("", ".", "..")
    )


def _lookup(data: Any, steps: Sequence[str | int]) -> Any:
    for step in steps:
        if isinstance(data, dict):
            key = str(step)
            if key not in data:
                return None
            data = data[key]
        elif isinstance(data, list) and (isinstance(step, int) or str(step).isdigit()):
            i = int(step)
            if i >= len(data):
                return None
            data = data[i]
        else:
            return None
    return data


@dataclass(frozen=True)
class Destination:
    """A partner endpoint: base URL, auth, headers, call paths, list-id path and timeout."""

    base_url: str
    auth: AuthMode = AuthMode.basic
    api_key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    app_id: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    paths: Mapping[str, str] = field(default_factory=lambda: dict(payloads.DEFAULT_PATHS))
    list_id_path: str | None = None  # None: listId (then id, list_id, data.id, with a warning)
    timeout: float = PARTNER_REQUEST_TIMEOUT
    name: str | None = None  # the destination file's name, for messages
    methods: Mapping[str, str] = field(default_factory=dict)  # call -> method (default POST)
    calls: frozenset[str] | None = None  # the calls the destination has (None: every call)
    success: tuple[int, ...] = ()  # statuses that are success (empty: any 2xx)
    auth_header: str | None = None  # --auth header: the key's header (None: api_key, app_id)
    errors: tuple[ErrorClass, ...] = ()  # the Portal's error classifications
    max_body_bytes: int | None = None
    rate_limit: tuple[int, float] | None = None  # at most N requests start per S seconds

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise InputError(f"--timeout must be more than 0 seconds, got {self.timeout}")
        if self.list_id_path is not None and not self.no_list_id:
            parse_list_id_path(self.list_id_path)
        unknown = sorted(set(self.paths) - set(payloads.CALLS))
        if unknown:
            raise InputError(f"unknown call(s) in paths: {', '.join(unknown)}")

    # --- credentials -------------------------------------------------------------------------

    @property
    def sends_credentials(self) -> bool:
        """True when requests carry an api key, a token or a credential-looking header."""
        return self.auth is not AuthMode.none or any(
            is_sensitive_header(name) for name, _ in self.headers
        )

    def require_credentials(self) -> None:
        """ConfigError when the auth mode needs an api key and there is none."""
        if self.auth is not AuthMode.none and not self.api_key:
            raise ConfigError(
                f"partner API key is not set (needed by --auth {self.auth.value}): use "
                "env COHORTCTL_PARTNER_API_KEY, 'partner_api_key' in a config profile, "
                "or --api-key",
                hint="--auth none sends no credentials; --dry-run needs none",
            )

    def ensure_safe(self, *, allow_insecure_http: bool) -> None:
        """Validate every URL and refuse credentials over plain http to non-loopback hosts.

        Checks the base URL and every call path given as a full URL.
        """
        urls = [self.base_url] + [p for p in self.paths.values() if "://" in p]
        for url in urls:
            ensure_safe_url(
                redact_url(url),
                allow_insecure_http=allow_insecure_http or not self.sends_credentials,
                what="partner credentials",
            )

    def secrets(self) -> list[str]:
        """Every credential this destination may send (for :meth:`scrub`), in every encoding
        the tool sends it: the api key, the secret, the Basic token, header auth's ``app_id``
        and every ``--header`` value (content negotiation headers aside)."""
        values = [self.api_key, self.secret]
        if self.auth is AuthMode.header and self.app_id:
            values.append(str(self.app_id))
        for name, value in self.headers:
            if name.lower() not in _NOT_CREDENTIALS:
                values.extend(credential_values(name, value))
        if self.auth is AuthMode.basic and (self.api_key or self.secret):
            values.append(self._basic_token())
            values.append(f"{self.api_key or ''}:{self.secret or ''}")
        return [v for v in values if v]

    def redactor(self) -> Redactor:
        """A :class:`~cohortctl.http.redact.Redactor` for every secret of this destination."""
        return Redactor(self.secrets())

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this destination replaced by a redaction marker."""
        return self.redactor().text(text)

    # --- headers -----------------------------------------------------------------------------

    def _basic_token(self) -> str:
        raw = f"{self.api_key or ''}:{self.secret or ''}".encode()
        return base64.b64encode(raw).decode("ascii")

    def auth_headers(self) -> dict[str, str]:
        """The headers of the auth mode (empty values when credentials are missing)."""
        if self.auth is AuthMode.basic:
            return {"Authorization": f"Basic {self._basic_token()}"}
        if self.auth is AuthMode.bearer:
            return {"Authorization": f"Bearer {self.api_key or ''}"}
        if self.auth is AuthMode.header and self.auth_header:
            return {self.auth_header: self.api_key or ""}
        if self.auth is AuthMode.header:
            headers = {"api_key": self.api_key or ""}
            if self.app_id:
                headers["app_id"] = str(self.app_id)
            return headers
        return {}

    def request_headers(self) -> dict[str, str]:
        """Every header of a request: JSON content type, auth, then ``--header`` (wins)."""
        return with_headers(
            {"Content-Type": "application/json", **self.auth_headers()}, self.headers
        )

    def redacted_headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """``headers`` (default: :meth:`request_headers`) with credential values hidden."""
        shown: dict[str, str] = {}
        for name, value in (headers or self.request_headers()).items():
            if not is_sensitive_header(name):
                shown[name] = value
            elif name.lower() == "authorization" and " " in value:
                scheme, _, credential = value.partition(" ")
                shown[name] = f"{scheme} {redact(credential.strip() or None)}"
            else:
                shown[name] = redact(value)
        return shown

    # --- URLs --------------------------------------------------------------------------------

    def path_for(self, call: str) -> str:
        """The path template of ``call`` (``$listId`` / ``{listId}`` not filled in)."""
        if call not in payloads.CALLS:
            raise InputError(f"unknown call {call!r}: use {', '.join(payloads.CALLS)}")
        return self.paths.get(call, payloads.DEFAULT_PATHS[call])

    def has_call(self, call: str) -> bool:
        """True when the destination has ``call`` (a destination file may leave calls out)."""
        return self.calls is None or call in self.calls

    def method_for(self, call: str) -> str:
        """The HTTP method of ``call`` (POST unless the destination says otherwise)."""
        return self.methods.get(call, "POST")

    def is_success(self, status: int | None) -> bool:
        """True for a success status: the destination's list, or any 2xx."""
        if status is None:
            return False
        return status in self.success if self.success else 200 <= status < 300

    def meaning(self, reply: Reply) -> str | None:
        """The label of a non-success answer: a shape :mod:`cohortctl.partner.classify` names,
        else the destination's classification; None: the spec's status table applies."""
        # A framework's route page or slash redirect is no answer of the partner's API, so it
        # is named before the classifications (which describe what the API answers).
        special = special_meaning(reply)
        if special is not None:
            return special
        entry = classify(self.errors, reply.status, reply.body)
        return entry.label() if entry is not None else None

    def classified(self, status: int, body: str = "") -> bool:
        """True when the destination's error classifications cover this answer."""
        return classify(self.errors, status, body) is not None

    def url_template(self, call: str) -> str:
        """Base URL joined with the call's path; a path that is a full URL is used as is, an
        empty path is the base URL exactly as given."""
        path = self.path_for(call)
        if "://" in path:
            return path
        if not path.strip():
            return self.base_url
        parts = urlsplit(self.base_url)
        if not path.startswith("/"):
            path = "/" + path
        path_part, _, query = path.partition("?")
        joined = parts.path.rstrip("/") + path_part
        query = "&".join(q for q in (parts.query, query) if q)
        return urlunsplit((parts.scheme, parts.netloc, joined, query, ""))

    def url(
        self, call: str, list_id: str | None = None, values: Mapping[str, Any] | None = None
    ) -> str:
        """The URL of ``call``, its template variables (``$listId``...) filled in, URL-quoted.

        ``values`` are template variables (:func:`cohortctl.partner.templates.variables`); without a
        list id, ``{listId}`` stays as written.
        """
        merged = dict(values or {})
        if list_id is not None:
            merged[templates.VAR_LIST_ID] = list_id
        return templates.render_url(self.url_template(call), merged, source=f"{call} URL")

    def needs_list_id(self, call: str) -> bool:
        """True when the call's URL template refers to the list id."""
        template = self.url_template(call)
        return "{listId}" in template or "$listId" in template

    # --- list-create answer ------------------------------------------------------------------

    @property
    def no_list_id(self) -> bool:
        """True for ``list_id_path: none``: the create answer holds no id and none is needed."""
        return (self.list_id_path or "").strip().lower() == NO_LIST_ID

    @property
    def configured_list_id_path(self) -> str:
        """Where Amplitude reads the id: the configured path, default ``listId``."""
        return self.list_id_path or DEFAULT_LIST_ID_PATH

    def list_id_paths(self) -> tuple[str, ...]:
        """The JSON paths tried, in order: the configured one, then the fallbacks."""
        first = self.configured_list_id_path
        return (first, *(p for p in LIST_ID_FALLBACKS if p != first))

    def locate_list_id(self, body: str) -> tuple[str, str] | None:
        """The list id in a list-create answer and the path it was found at, or None."""
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        for path in self.list_id_paths():
            value = _lookup(data, parse_list_id_path(path))
            if value is None:
                continue
            if _usable_list_id(value):
                return str(value), path
        return None

    def _unusable_list_id(self, body: str) -> tuple[str, Any] | None:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        for path in self.list_id_paths():
            value = _lookup(data, parse_list_id_path(path))
            if value is not None and not _usable_list_id(value):
                return path, value
        return None

    def find_list_id(self, body: str) -> str:
        """The list id in a list-create answer; CheckFailed (showing the body) when absent.

        An id found only under a fallback name is returned (:meth:`list_id_warning` says why
        Amplitude would not find it). An id that is empty, ``.``, ``..`` or not a string or
        number is an invalid answer (it would send later calls to another path).
        """
        found = self.locate_list_id(body)
        if found is not None:
            return found[0]
        unusable = self._unusable_list_id(body)
        if unusable is not None:
            shown_value = body_excerpt(self.scrub(json.dumps(unusable[1])), 80)
            raise CheckFailed(
                f"invalid answer: the list id at {unusable[0]} in the list-create answer is"
                f" {shown_value}: it must be a non-empty string or number, not . or ..",
                hint="the partner's list-create answer must carry the new list's id",
            )
        where = " or ".join(self.list_id_paths())
        shown = body_excerpt(self.scrub(body), 200) if body.strip() else "(empty)"
        raise CheckFailed(
            f"no list id in the list-create answer at {where}; body starts: {shown}",
            hint="set --list-id-path (list_id_path) to where your endpoint puts the new list's "
            "id, or list_id_path: none when it answers none",
        )

    def nested_list_id(self, body: str) -> bool:
        """True when the answer also holds an id at ``response.<path>`` (the production
        worker's reader, spec part B)."""
        try:
            data = json.loads(body)
        except ValueError:
            return False
        value = _lookup(data, ("response", *parse_list_id_path(self.configured_list_id_path)))
        return isinstance(value, (str, int)) and not isinstance(value, bool) and bool(str(value))

    def list_id_warning(self, body: str) -> str | None:
        """Why Amplitude would not read the id of this answer, when it sits only under a
        fallback name (spec part B, "What Amplitude production reads"); None otherwise."""
        found = self.locate_list_id(body)
        if found is None or found[1] == self.configured_list_id_path:
            return None
        return (
            f"the list id is only under {found[1]!r}, but Amplitude reads "
            f"{self.configured_list_id_path!r}: answer "
            f"{both_readers_shape(self.configured_list_id_path)} or set "
            f"list_id_path: {found[1]} (--list-id-path)"
        )


def both_readers_shape(path: str) -> str:
    """The create answer known to pass both of Amplitude's readers, for ``path``."""
    steps = parse_list_id_path(path)
    value: Any = "L"
    for step in reversed(steps):
        value = [value] if isinstance(step, int) else {str(step): value}
    return json.dumps({**value, "response": value}) if isinstance(value, dict) else str(value)


def with_headers(headers: dict[str, str], given: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``headers`` with each ``given`` header added, replacing one of the same name (any case)."""
    for name, value in given:
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return headers


def build_headers(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Parse repeated ``--header NAME:VALUE`` values, in order."""
    return tuple(parse_header(text) for text in pairs)


def make_client(destination: Destination) -> httpx.Client:
    """An httpx client for ``destination`` under :mod:`cohortctl.http`'s rules: its timeout
    (connect to last byte), the environment's proxy, no redirects followed."""
    return http_client.make_client(timeout=destination.timeout, redactor=destination.redactor())

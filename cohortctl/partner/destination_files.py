"""Destination files: everything a partner configures in Amplitude's Integration Portal, in YAML.

A destination file (or a built-in profile, by name: :func:`builtin_names`) says where the calls
go, how they authenticate, what each call's method, path and payload are, what each user
becomes in ``$items``, where the list id sits in the create answer, which statuses succeed and
how errors are classified. ``mock``, ``check``, ``sync`` and ``wait`` take one with
``--destination FILE|NAME``; their flags override single values.

Files hold no secrets: the key comes from ``--api-key``, the environment or a config profile.
A bad file is one :class:`InputError` line naming the file and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cohortctl.errors import InputError
from cohortctl.partner import payloads, templates
from cohortctl.partner.classify import ErrorClass
from cohortctl.partner.destination import NO_LIST_ID, AuthMode, parse_list_id_path
from cohortctl.partner.templates import BUILTIN_VARIABLES, Template, template_names

MODES = ("list", "property", "webhook")
FUTURE_MODES: tuple[str, ...] = ()
WEBHOOK = "webhook"  # the one call of a webhook-mode file: {path, payload (FreeMarker)}
MAX_WEBHOOK_HEADERS = 5
CALL_ALIASES = {"batch": payloads.IDENTIFY_BATCH}
METHODS = ("POST", "PUT", "PATCH", "DELETE")
KEYS = (
    "name", "mode", "url", "auth", "headers", "batch_size", "max_body_bytes", "success",
    "list_id_path", "items", "variables", "calls", "errors", "rejects", "description",
    "rate_limit",
)  # fmt: skip
# What `check` expects of the calls a receiver must refuse (null: the receiver has no such
# answer, the case is skipped).
REJECTS = {
    "wrong_key": 401,
    "no_credentials": 401,
    "malformed": 400,
    "missing_field": 400,
    "unknown_list": 404,
}
_PROFILES = "profiles"
_CONTEXT = '"context": {"integration": {"name": "Amplitude Cohort Sync", "version": "1.0.0"}}'
# What a call without a payload sends (spec part B), written as a template.
BUILTIN_PAYLOADS = {
    payloads.LIST_CREATE: '{"name": "[Amplitude] $cohort_name: $amplitude_cohort_id", '
    + _CONTEXT
    + "}",
    payloads.LIST_ADD: '{"userIds": $items, ' + _CONTEXT + "}",
    payloads.LIST_REMOVE: '{"userIds": $items, ' + _CONTEXT + "}",
    payloads.IDENTIFY: '{"type": "identify", "traits": {"[Amplitude] $cohort_name: '
    '$amplitude_cohort_id": $member}, "userId": "$user_id", ' + _CONTEXT + "}",
    payloads.IDENTIFY_BATCH: '{"batch": [<identify>, ...]}',
}


@dataclass(frozen=True)
class CallSpec:
    """One call of a destination: method, path (template) and payload template (or None)."""

    method: str = "POST"
    path: str = ""
    payload: str | None = None


@dataclass(frozen=True)
class DestinationFile:
    """A parsed, checked destination file (see the module docstring)."""

    name: str
    source: str  # the file path, or "built-in NAME"
    mode: str = "list"
    url: str | None = None
    auth: AuthMode | None = None
    auth_header: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    batch_size: int | None = None
    max_body_bytes: int | None = None
    success: tuple[int, ...] = ()
    list_id_path: str | None = None
    items: str | None = None
    variables: Mapping[str, str | None] = field(default_factory=dict)
    calls: Mapping[str, CallSpec] = field(default_factory=dict)
    errors: tuple[ErrorClass, ...] = ()
    rejects: Mapping[str, int | None] = field(default_factory=lambda: dict(REJECTS))
    description: str | None = None
    webhook_path: str | None = None  # webhook mode: added to the url
    webhook_payload: str | None = None  # webhook mode: a FreeMarker template over `input`
    rate_limit: tuple[int, float] | None = None  # at most N requests per S seconds

    # --- what commands take from it ----------------------------------------------------------

    def paths(self) -> dict[str, str]:
        """``call -> path`` for every call the file has."""
        return {call: spec.path for call, spec in self.calls.items()}

    def methods(self) -> dict[str, str]:
        """``call -> HTTP method`` for every call the file has."""
        return {call: spec.method for call, spec in self.calls.items()}

    def templates(self) -> dict[str, Template]:
        """The payload templates of the calls that have one, each with the item template."""
        return {
            call: Template(spec.payload, f"{self.source}: calls.{call}.payload", items=self.items)
            for call, spec in self.calls.items()
            if spec.payload is not None
        }

    def variable_values(self, given: Mapping[str, str]) -> dict[str, str]:
        """The custom variables: the file's values, ``--var`` winning; InputError naming the
        declared ones without a value."""
        values = {k: v for k, v in self.variables.items() if v is not None}
        values.update(given)
        missing = sorted(k for k in self.variables if k not in values)
        if missing:
            flags = " ".join(f"--var {k}=VALUE" for k in missing)
            raise InputError(f"destination {self.name!r} needs {flags}")
        return values

    # --- the variables table -----------------------------------------------------------------

    def used_variables(self) -> dict[str, list[str]]:
        """Each variable used, and where (``calls.list-add.payload``, ``items``...)."""
        used: dict[str, list[str]] = {}

        def note(text: str | None, where: str) -> None:
            for name in sorted(template_names(text or "")):
                used.setdefault(name, []).append(where)

        for call, spec in self.calls.items():
            note(spec.path, f"calls.{call}.path")
            note(spec.payload, f"calls.{call}.payload")
        note(self.items, "items")
        for header, value in self.headers:
            note(value, f"headers.{header}")
        # The {listId} spelling of the default paths is $listId too.
        for call, spec in self.calls.items():
            if "{listId}" in spec.path:
                used.setdefault(templates.VAR_LIST_ID, []).append(f"calls.{call}.path")
        return used

    def variables_table(self) -> list[dict[str, Any]]:
        """Rows of the Portal's variables table: name, kind, value, where used."""
        used = self.used_variables()
        rows: list[dict[str, Any]] = []
        for name in [*BUILTIN_VARIABLES, *self.variables]:
            if name in BUILTIN_VARIABLES:
                kind, value = "pre-defined", BUILTIN_VARIABLES[name]
            else:
                kind = "declared"
                held = self.variables[name]
                value = held if held is not None else "(give --var)"
            rows.append({"name": name, "kind": kind, "value": value, "used": used.get(name, [])})
        for name in sorted(set(used) - set(BUILTIN_VARIABLES) - set(self.variables)):
            rows.append({"name": name, "kind": "undeclared", "value": None, "used": used[name]})
        return rows

    def undeclared(self) -> list[str]:
        """Variables used but neither declared nor pre-defined."""
        known = set(BUILTIN_VARIABLES) | set(self.variables)
        return sorted(set(self.used_variables()) - known)

    def check_variables(self) -> None:
        """InputError naming the first variable used but not declared, and where."""
        missing = self.undeclared()
        if missing:
            used = self.used_variables()
            name = missing[0]
            raise InputError(
                f"{self.source}: {used[name][0]}: variable ${name} is used but not declared "
                "(add it under variables:)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The file's content, resolved (for ``destination show -o json``)."""
        return {
            "name": self.name,
            "source": self.source,
            "mode": self.mode,
            "url": self.url,
            "auth": {
                "type": (self.auth or AuthMode.basic).value,
                **({"header": self.auth_header} if self.auth_header else {}),
            },
            "headers": dict(self.headers),
            "batch_size": self.batch_size,
            "max_body_bytes": self.max_body_bytes,
            "success": list(self.success) or "any 2xx",
            "list_id_path": self.list_id_path or "listId",
            "items": self.items or templates.DEFAULT_ITEMS,
            "calls": {
                call: {"method": c.method, "path": c.path, "payload": c.payload}
                for call, c in self.calls.items()
            },
            "errors": [e.to_dict() for e in self.errors],
            "rejects": dict(self.rejects),
            "rate_limit": (
                {"requests": self.rate_limit[0], "seconds": self.rate_limit[1]}
                if self.rate_limit
                else None
            ),
            "variables": self.variables_table(),
        }


# --- loading -----------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """The built-in profiles, by name."""
    folder = resources.files("cohortctl.partner").joinpath(_PROFILES)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def builtin_text(name: str) -> str:
    """The YAML text of a built-in profile."""
    folder = resources.files("cohortctl.partner").joinpath(_PROFILES)
    return folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def resolve(value: str, *, strict: bool = True) -> DestinationFile:
    """A destination file by path, or a built-in profile by name; InputError otherwise.

    ``strict=False`` accepts variables used but not declared (``destination show`` lists them).
    """
    path = Path(value).expanduser()
    if path.is_file() or any(c in value for c in "/\\") or value.endswith((".yaml", ".yml")):
        return load_file(path, strict=strict)
    if value in builtin_names():
        return parse(builtin_text(value), f"built-in {value}", strict=strict)
    raise InputError(
        f"--destination {value!r}: no such file and no built-in of that name; "
        f"built-ins: {', '.join(builtin_names())}"
    )


def load_file(path: Path, *, strict: bool = True) -> DestinationFile:
    """Read and check a destination file; InputError naming the file (and line or field)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"{path}: cannot read destination file: {reason}") from None
    return parse(text, str(path), strict=strict)


def parse(text: str, source: str, *, strict: bool = True) -> DestinationFile:
    """Parse destination YAML ``text``; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InputError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{source}: a destination file is a YAML mapping (name:, calls:, ...)")
    return _Reader(source).read(data, strict=strict)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> InputError:
        return InputError(f"{self.source}: {where}: {problem}")

    def text(self, data: Mapping[str, Any], key: str, where: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(where, f"must be text, got {type(value).__name__}")
        return str(value)

    def positive(self, data: Mapping[str, Any], key: str) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"must be a whole number of at least 1, got {value!r}")
        return value

    def status(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise self.fail(where, f"must be an HTTP status (100-599), got {value!r}")
        return value

    def read(self, data: Mapping[str, Any], *, strict: bool = True) -> DestinationFile:
        unknown = sorted(str(k) for k in data if k not in KEYS)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; known: {', '.join(KEYS)}")
        name = self.text(data, "name", "name")
        if not name or not name.strip():
            raise self.fail("name", "required: the destination's name")
        mode = (self.text(data, "mode", "mode") or "list").strip().lower()
        if mode in FUTURE_MODES:
            raise self.fail("mode", f"{mode!r} is not supported yet; use list or property")
        if mode not in MODES:
            raise self.fail("mode", f"must be list, property or webhook, got {mode!r}")
        if mode == WEBHOOK:
            return self.read_webhook(data, name.strip())
        auth, auth_header = self.auth(data.get("auth"))
        list_id_path = self.text(data, "list_id_path", "list_id_path")
        if list_id_path is not None and list_id_path.strip().lower() != NO_LIST_ID:
            try:
                parse_list_id_path(list_id_path)
            except InputError:
                raise self.fail(
                    "list_id_path", f"{list_id_path!r}: use a dotted path such as data.id, or none"
                ) from None
        items = self.text(data, "items", "items")
        calls = self.calls(data.get("calls"), mode)
        result = DestinationFile(
            name=name.strip(),
            source=self.source,
            mode=mode,
            url=self.text(data, "url", "url"),
            auth=auth,
            auth_header=auth_header,
            headers=self.headers(data.get("headers")),
            batch_size=self.positive(data, "batch_size"),
            max_body_bytes=self.positive(data, "max_body_bytes"),
            success=self.success(data.get("success")),
            list_id_path=list_id_path,
            items=items,
            variables=self.variables(data.get("variables")),
            calls=calls,
            errors=self.errors(data.get("errors")),
            rejects=self.rejects(data.get("rejects")),
            description=self.text(data, "description", "description"),
            rate_limit=self.rate_limit(data.get("rate_limit")),
        )
        self.check_templates(result)
        if strict:
            result.check_variables()
        return result

    def auth(self, value: Any) -> tuple[AuthMode | None, str | None]:
        if value is None:
            return None, None
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise self.fail("auth", "must be a mapping such as {type: basic}")
        unknown = sorted(str(k) for k in value if k not in ("type", "header"))
        if unknown:
            raise self.fail(f"auth.{unknown[0]}", "unknown key; known: type, header")
        kind = str(value.get("type") or "").strip().lower()
        try:
            mode = AuthMode(kind)
        except ValueError:
            known = ", ".join(m.value for m in AuthMode)
            raise self.fail("auth.type", f"must be one of {known}, got {kind!r}") from None
        header = self.text(value, "header", "auth.header")
        if header is not None and mode is not AuthMode.header:
            raise self.fail("auth.header", "only with type: header")
        return mode, header

    def headers(self, value: Any) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.fail("headers", "must be a mapping of header name to value")
        pairs = []
        for name, held in value.items():
            where = f"headers.{name}"
            if isinstance(held, bool) or not isinstance(held, (str, int, float)):
                raise self.fail(where, "must be text")
            text = str(held)
            if any(c in text for c in "\r\n\0"):
                raise self.fail(where, "contains a line break or NUL")
            pairs.append((str(name), text))
        return tuple(pairs)

    def success(self, value: Any) -> tuple[int, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not value:
            raise self.fail("success", "must be a list of statuses such as [200, 204]")
        return tuple(self.status(v, "success") for v in value)

    def variables(self, value: Any) -> dict[str, str | None]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail("variables", "must be a mapping of name to value (null: give --var)")
        found: dict[str, str | None] = {}
        for name, held in value.items():
            where = f"variables.{name}"
            key = str(name).lstrip("$")
            if not key.isidentifier():
                raise self.fail(where, "a name is made of letters, digits and _")
            if key in BUILTIN_VARIABLES:
                raise self.fail(where, f"${key} is pre-defined; pick another name")
            if held is None:
                found[key] = None
            elif isinstance(held, (str, int, float, bool)):
                found[key] = held if isinstance(held, str) else json.dumps(held)
            else:
                raise self.fail(where, "must be text, a number, true/false or null")
        return found

    def read_webhook(self, data: Mapping[str, Any], name: str) -> DestinationFile:
        """A ``mode: webhook`` file: url, headers (at most 5), batch_size, and optionally
        ``calls: {webhook: {path, payload}}`` with a FreeMarker payload."""
        from cohortctl.partner.webhooks.freemarker import WebhookTemplate

        allowed = ("name", "mode", "url", "headers", "batch_size", "calls", "description")
        extra = sorted(str(k) for k in data if k not in allowed)
        if extra:
            raise self.fail(extra[0], f"not used in webhook mode; known: {', '.join(allowed)}")
        headers = self.headers(data.get("headers"))
        if len(headers) > MAX_WEBHOOK_HEADERS:
            raise self.fail(
                "headers", f"{len(headers)} headers: Amplitude's Cohort Webhooks send at most 5"
            )
        path: str | None = None
        payload: str | None = None
        calls = data.get("calls")
        if calls is not None:
            if not isinstance(calls, dict) or set(calls) - {WEBHOOK}:
                raise self.fail("calls", "webhook mode has one call: webhook: {path, payload}")
            spec = calls.get(WEBHOOK) or {}
            if not isinstance(spec, dict) or set(spec) - {"path", "payload"}:
                raise self.fail("calls.webhook", "must be a mapping {path, payload}")
            path = self.text(spec, "path", "calls.webhook.path")
            payload = self.text(spec, "payload", "calls.webhook.payload")
            if payload is not None:
                WebhookTemplate.parse(payload, f"{self.source}: calls.webhook.payload")
        return DestinationFile(
            name=name,
            source=self.source,
            mode=WEBHOOK,
            url=self.text(data, "url", "url"),
            headers=headers,
            batch_size=self.positive(data, "batch_size"),
            description=self.text(data, "description", "description"),
            webhook_path=path,
            webhook_payload=payload,
        )

    def calls(self, value: Any, mode: str) -> dict[str, CallSpec]:
        if not isinstance(value, dict) or not value:
            raise self.fail(
                "calls", "required: a mapping such as list-add: {method, path, payload}"
            )
        found: dict[str, CallSpec] = {}
        for raw, spec in value.items():
            call = CALL_ALIASES.get(str(raw), str(raw))
            where = f"calls.{raw}"
            if call not in payloads.CALLS:
                raise self.fail(where, f"unknown call; known: {', '.join(payloads.CALLS)}, batch")
            if not isinstance(spec, dict):
                raise self.fail(where, "must be a mapping {method, path, payload}")
            unknown = sorted(str(k) for k in spec if k not in ("method", "path", "payload"))
            if unknown:
                raise self.fail(
                    f"{where}.{unknown[0]}", "unknown key; known: method, path, payload"
                )
            method = (self.text(spec, "method", f"{where}.method") or "POST").strip().upper()
            if method not in METHODS:
                raise self.fail(f"{where}.method", f"must be one of {', '.join(METHODS)}")
            path = self.text(spec, "path", f"{where}.path")
            if path is None:
                path = "" if "path" in spec else payloads.DEFAULT_PATHS[call]
            payload = spec.get("payload")
            if payload is not None and not isinstance(payload, str):
                # A payload written as YAML is taken as the JSON it stands for.
                payload = json.dumps(payload, ensure_ascii=False)
            found[call] = CallSpec(method, path, payload)
        wanted = (
            (payloads.LIST_ADD, payloads.LIST_REMOVE)
            if mode == "list"
            else (payloads.IDENTIFY_BATCH,)
            if payloads.IDENTIFY not in found
            else ()
        )
        for call in wanted:
            if call not in found:
                raise self.fail(f"calls.{call}", f"required in {mode} mode")
        return found

    def errors(self, value: Any) -> tuple[ErrorClass, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail("errors", "must be a list of {status, sub_code?, reason, message?}")
        found = []
        for n, entry in enumerate(value):
            where = f"errors[{n}]"
            if not isinstance(entry, dict):
                raise self.fail(where, "must be a mapping {status, reason}")
            unknown = sorted(
                str(k) for k in entry if k not in ("status", "sub_code", "reason", "message")
            )
            if unknown:
                raise self.fail(f"{where}.{unknown[0]}", "unknown key")
            reason = self.text(entry, "reason", f"{where}.reason")
            if not reason:
                raise self.fail(f"{where}.reason", "required")
            found.append(
                ErrorClass(
                    status=self.status(entry.get("status"), f"{where}.status"),
                    reason=reason,
                    sub_code=self.text(entry, "sub_code", f"{where}.sub_code"),
                    message=self.text(entry, "message", f"{where}.message"),
                )
            )
        return tuple(found)

    def rejects(self, value: Any) -> dict[str, int | None]:
        found: dict[str, int | None] = dict(REJECTS)
        if value is None:
            return found
        if not isinstance(value, dict):
            raise self.fail("rejects", f"must be a mapping of {', '.join(REJECTS)} to a status")
        for key, held in value.items():
            where = f"rejects.{key}"
            if key not in REJECTS:
                raise self.fail(where, f"unknown key; known: {', '.join(REJECTS)}")
            found[key] = None if held is None else self.status(held, where)
        return found

    def rate_limit(self, value: Any) -> tuple[int, float] | None:
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) != {"requests", "seconds"}:
            raise self.fail("rate_limit", "must be {requests: N, seconds: S}")
        requests, seconds = value["requests"], value["seconds"]
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise self.fail("rate_limit.requests", "must be a whole number of at least 1")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise self.fail("rate_limit.seconds", "must be a number of seconds above 0")
        return requests, float(seconds)

    def check_templates(self, result: DestinationFile) -> None:
        """Render every payload with sample values: a template that cannot give JSON fails."""
        sample = templates.variables(
            ids=("sample-user",),
            cohort_name="Sample cohort",
            cohort_id="sample1",
            list_id="sample-list",
            member=True,
            custom={k: v if v is not None else "sample" for k, v in result.variables.items()},
        )
        known = set(sample)
        for call, template in result.templates().items():
            unknown = template.names() - known
            if unknown:
                continue  # reported by check_variables, naming the field
            try:
                template.render(sample)
            except InputError as exc:
                where = f"calls.{call}.payload"
                detail = exc.message.split(": ", 2)[-1]
                raise self.fail(where, detail) from None

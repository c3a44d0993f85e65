"""Strict validation of the payloads Amplitude's cohort sync sends to a partner (spec part B).

Each ``validate_*`` function takes the decoded JSON body and returns the facts the receiver
applies, or raises :class:`InvalidPayload` naming the first offending field (``userIds[3]``,
``batch[2].traits``) and why. The checks on a list of user ids run at C speed on the happy
path (one ``join``, one ``in``, one ``isprintable``) and only walk the list item by item to
name the culprit once something is known to be wrong: a 1,000-id batch validates in tens of
microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cohortctl.partner.payloads import INTEGRATION_NAME, INTEGRATION_VERSION

# C0 and C1 control characters, DEL, and lone surrogates (JSON "\ud800" decodes to one).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# ``[Amplitude] {cohort_name}: {cohort_id}``: the name may itself contain ": ".
TRAIT_KEY = re.compile(r"\[Amplitude\] .+: \S+", re.DOTALL)

LIST_CREATE_FIELDS = frozenset({"name", "context"})
LIST_MEMBERS_FIELDS = frozenset({"userIds", "context"})
IDENTIFY_FIELDS = frozenset({"type", "traits", "userId", "context"})
BATCH_FIELDS = frozenset({"batch"})


class InvalidPayload(Exception):
    """A payload that breaks the contract: ``field`` is where, ``reason`` is why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class TraitUpdate:
    """One user's cohort trait set to ``value`` (true: entered the cohort, false: left it)."""

    user_id: str
    key: str
    value: bool


def _object(body: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidPayload(where or "(body)", "must be a JSON object")
    return body


def _fields(obj: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for name in sorted(allowed):
        if name not in obj:
            raise InvalidPayload(prefix + name, "is required")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidPayload(prefix + unknown[0], "unknown field")


def _context(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise InvalidPayload(where, "must be an object")
    integration = value.get("integration")
    if not isinstance(integration, dict):
        raise InvalidPayload(f"{where}.integration", "must be an object")
    if integration.get("name") != INTEGRATION_NAME:
        raise InvalidPayload(f"{where}.integration.name", f"must be {INTEGRATION_NAME!r}")
    if integration.get("version") != INTEGRATION_VERSION:
        raise InvalidPayload(f"{where}.integration.version", f"must be {INTEGRATION_VERSION!r}")


def _user_id_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if _BAD_CHARS.search(value):
        return "must not contain control characters"
    return None


def check_user_id(value: Any, where: str) -> str:
    """``value`` if it is a valid user id, else InvalidPayload naming ``where``."""
    problem = _user_id_problem(value)
    if problem:
        raise InvalidPayload(where, problem)
    return value


def plain_json(text: str) -> bool:
    """True when no string decoded from JSON ``text`` can hold a character ids must not have.

    Strict JSON has no raw control characters inside strings, so a text without any
    backslash escape, without DEL and without non-ASCII characters decodes only to strings
    of printable ASCII. Three C-level scans, no per-character work in Python.
    """
    return "\\" not in text and "\x7f" not in text and text.isascii()


def check_user_ids(value: Any, where: str = "userIds", *, plain: bool = False) -> list[str]:
    """``value`` if it is a non-empty list of valid user ids, else InvalidPayload.

    ``plain``: the JSON text ``value`` was decoded from passed :func:`plain_json`, so the
    characters need no check (only the types and emptiness do).
    """
    if not isinstance(value, list):
        raise InvalidPayload(where, "must be a list of user ids")
    if not value:
        raise InvalidPayload(where, "must not be empty")
    try:
        joined = "".join(value)  # TypeError when any item is not a str
    except TypeError:
        joined = None
    # all(): no empty string; _BAD_CHARS scans the ids at C speed unless ``plain``
    if joined is not None and all(value) and (plain or _BAD_CHARS.search(joined) is None):
        return value
    for index, item in enumerate(value):
        problem = _user_id_problem(item)
        if problem:
            raise InvalidPayload(f"{where}[{index}]", problem)
    return value  # unreachable in practice: the fast path found a problem the walk names


def validate_list_create(body: Any) -> str:
    """The list name of a ``POST /lists`` body."""
    obj = _object(body, "")
    _fields(obj, LIST_CREATE_FIELDS, "")
    name = obj["name"]
    if not isinstance(name, str) or not name.strip():
        raise InvalidPayload("name", "must be a non-empty string")
    if _BAD_CHARS.search(name):
        raise InvalidPayload("name", "must not contain control characters")
    _context(obj["context"], "context")
    return name


def validate_list_members(body: Any, *, plain: bool = False) -> list[str]:
    """The user ids of a ``POST /lists/{id}/add`` or ``/remove`` body.

    ``plain``: the body's JSON text passed :func:`plain_json` (skips the character scan).
    """
    obj = _object(body, "")
    _fields(obj, LIST_MEMBERS_FIELDS, "")
    _context(obj["context"], "context")
    return check_user_ids(obj["userIds"], plain=plain)


def _identify(obj: Any, prefix: str) -> list[TraitUpdate]:
    item = _object(obj, prefix.rstrip("."))
    _fields(item, IDENTIFY_FIELDS, prefix)
    if item["type"] != "identify":
        raise InvalidPayload(prefix + "type", "must be 'identify'")
    user_id = check_user_id(item["userId"], prefix + "userId")
    traits = item["traits"]
    if not isinstance(traits, dict) or not traits:
        raise InvalidPayload(prefix + "traits", "must be a non-empty object")
    updates = []
    for key, value in traits.items():
        if not TRAIT_KEY.fullmatch(key) or _BAD_CHARS.search(key):
            raise InvalidPayload(
                f"{prefix}traits[{key!r}]", "key must look like '[Amplitude] {name}: {id}'"
            )
        if not isinstance(value, bool):
            raise InvalidPayload(f"{prefix}traits[{key!r}]", "must be true or false")
        updates.append(TraitUpdate(user_id, key, value))
    _context(item["context"], prefix + "context")
    return updates


def validate_identify(body: Any) -> list[TraitUpdate]:
    """The trait updates of an identify body: a single identify or ``{"batch": [...]}``."""
    obj = _object(body, "")
    if "batch" in obj:
        _fields(obj, BATCH_FIELDS, "")
        batch = obj["batch"]
        if not isinstance(batch, list):
            raise InvalidPayload("batch", "must be a list of identify calls")
        if not batch:
            raise InvalidPayload("batch", "must not be empty")
        updates: list[TraitUpdate] = []
        for index, item in enumerate(batch):
            updates.extend(_identify(item, f"batch[{index}]."))
        return updates
    return _identify(obj, "")

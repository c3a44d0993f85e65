"""Users the fake Amplitude API knows besides its cohorts' members: a JSON Lines file.

One object per line: ``{"user_id": "alice", "amplitude_id": 123, "user_properties": {...}}``
(``user_id`` or ``amplitude_id``, or both; ``user_properties`` optional). The fake answers
``/api/2/usersearch`` with these users and puts their properties in exports asked with
``props=1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cohortctl.errors import IdFileError
from cohortctl.ids import open_input
from cohortctl.servers.amplitude.store import MAX_AMPLITUDE_ID, CohortStore

_FIELDS = {"user_id", "amplitude_id", "user_properties"}


@dataclass(frozen=True)
class KnownUser:
    """One line of a users file."""

    user_id: str | None
    amplitude_id: int | None
    user_properties: dict[str, Any] = field(default_factory=dict)


def read_users(path: Path) -> list[KnownUser]:
    """Parse a users file; a bad line is an error naming the file and the line."""
    shown = str(path)
    with open_input(path) as stream:
        try:
            text = stream.read().decode("utf-8")
        except UnicodeDecodeError:
            raise IdFileError(shown, "not valid UTF-8") from None
        except OSError as exc:
            raise IdFileError(shown, f"cannot read: {exc.strerror or exc}") from None
    users: list[KnownUser] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            users.append(_user(shown, number, line))
    return users


def _user(shown: str, number: int, line: str) -> KnownUser:
    def bad(message: str) -> IdFileError:
        return IdFileError(shown, message, line=number)

    try:
        data = json.loads(line)
    except ValueError as exc:
        raise bad(f"not a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise bad("each line must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS))})")
    user_id = data.get("user_id")
    amplitude_id = data.get("amplitude_id")
    properties = data.get("user_properties", {})
    if user_id is not None and (not isinstance(user_id, str) or not user_id.strip()):
        raise bad("user_id must be a non-empty string")
    if amplitude_id is not None and (
        isinstance(amplitude_id, bool)
        or not isinstance(amplitude_id, int)
        or not 0 < amplitude_id <= MAX_AMPLITUDE_ID
    ):
        raise bad("amplitude_id must be a positive integer")
    if user_id is None and amplitude_id is None:
        raise bad("needs a user_id or an amplitude_id")
    if not isinstance(properties, dict):
        raise bad("user_properties must be an object")
    return KnownUser(user_id, amplitude_id, properties)


def add_users(store: CohortStore, users: list[KnownUser]) -> None:
    """Hold each user (and its properties) in the fake's store."""
    for user in users:
        store.set_user_properties(
            user.user_properties, user_id=user.user_id, amplitude_id=user.amplitude_id
        )

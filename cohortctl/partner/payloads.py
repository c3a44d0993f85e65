"""Pure builders of the payloads Amplitude's cohort sync sends to a partner (spec part B).

These are the single source of truth: ``sample_payloads/`` is generated from them, and
``mock``, ``sync`` and ``check`` send exactly what they return.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

INTEGRATION_NAME = "Amplitude Cohort Sync"
INTEGRATION_VERSION = "1.0.0"

# The call kinds, named as on the command line.
LIST_CREATE = "list-create"
LIST_ADD = "list-add"
LIST_REMOVE = "list-remove"
IDENTIFY = "identify"
IDENTIFY_BATCH = "identify-batch"
CALLS = (LIST_CREATE, LIST_ADD, LIST_REMOVE, IDENTIFY, IDENTIFY_BATCH)

# Default path of each call under the partner's base URL; ``{listId}`` is filled in.
DEFAULT_PATHS: dict[str, str] = {
    LIST_CREATE: "/lists",
    LIST_ADD: "/lists/{listId}/add",
    LIST_REMOVE: "/lists/{listId}/remove",
    IDENTIFY: "/identify",
    IDENTIFY_BATCH: "/batch",
}

SLUG_MAX = 100
_NOT_SLUG = re.compile(r"[^A-Za-z0-9_]")


def context() -> dict[str, Any]:
    """The ``context`` object present in every payload (a fresh dict each call)."""
    return {"integration": {"name": INTEGRATION_NAME, "version": INTEGRATION_VERSION}}


def cohort_label(cohort_name: str, cohort_id: str) -> str:
    """``[Amplitude] {cohort_name}: {cohort_id}``: the list name and the trait key."""
    return f"[Amplitude] {cohort_name}: {cohort_id}"


def slugify_cohort_name(cohort_name: str) -> str:
    """``$amplitude_cohort_name`` in templates: NFKD, non ``[A-Za-z0-9_]`` -> ``-``, 100 chars."""
    normalized = unicodedata.normalize("NFKD", cohort_name)
    return _NOT_SLUG.sub("-", normalized)[:SLUG_MAX]


def list_create(cohort_name: str, cohort_id: str) -> dict[str, Any]:
    """Body of ``POST {base}/lists`` (first list-based sync only)."""
    return {"name": cohort_label(cohort_name, cohort_id), "context": context()}


def list_members(user_ids: Iterable[str]) -> dict[str, Any]:
    """Body of ``POST {base}/lists/{listId}/add`` and ``.../remove``: the same shape."""
    return {"userIds": list(user_ids), "context": context()}


def identify(user_id: str, cohort_name: str, cohort_id: str, *, member: bool) -> dict[str, Any]:
    """One identify call: the cohort trait set to ``member`` (true: entered, false: left)."""
    return {
        "type": "identify",
        "traits": {cohort_label(cohort_name, cohort_id): member},
        "userId": user_id,
        "context": context(),
    }


def identify_batch(
    user_ids: Iterable[str], cohort_name: str, cohort_id: str, *, member: bool
) -> dict[str, Any]:
    """Batch identify: ``{"batch": [identify, ...]}``, one entry per user."""
    return {"batch": [identify(uid, cohort_name, cohort_id, member=member) for uid in user_ids]}


def call_path(call: str, list_id: str | None = None, path: str | None = None) -> str:
    """The path of ``call`` with ``{listId}`` / ``$listId`` filled in."""
    template = path if path is not None else DEFAULT_PATHS[call]
    if list_id is not None:
        template = template.replace("{listId}", list_id).replace("$listId", list_id)
    return template

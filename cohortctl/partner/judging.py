"""How ``check`` judges what Amplitude's production worker would make of an answer.

Spec part B, "What Amplitude production reads from a list-create answer": the id must be at
the configured path (default ``listId``); found only under a fallback name it is a failure
that says where it was and what Amplitude reads; not also under ``response.<path>`` it is a
warning naming the shape known to pass both of Amplitude's readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cohortctl.http.outcomes import Outcome
from cohortctl.partner import payloads
from cohortctl.partner.destination import Destination, both_readers_shape
from cohortctl.partner.templates import Template

# The field a default body carries its users in (spec part B).
DEFAULT_USER_FIELDS = {
    payloads.LIST_ADD: "userIds",
    payloads.LIST_REMOVE: "userIds",
    payloads.IDENTIFY: "userId",
    payloads.IDENTIFY_BATCH: "batch",
}
_KEY_BEFORE = r'"((?:[^"\\]|\\.)+)"\s*:\s*"?\$\{{?(?:{names})\b'


def user_field(call: str, template: Template | None) -> str:
    """The name of the body field that carries the users (``user_ids`` for a template that
    sends ``{"user_ids": $items}``), for case names."""
    default = DEFAULT_USER_FIELDS.get(call, "userIds")
    if template is None:
        return default
    names = "items" if call != payloads.IDENTIFY else "user_id|userId|items"
    match = re.search(_KEY_BEFORE.format(names=names), template.text)
    return match.group(1) if match else default


@dataclass
class ListCreateVerdict:
    """Whether Amplitude would take the list id of a create answer, and why not."""

    list_id: str | None
    passed: bool
    detail: str = ""
    warnings: list[str] = field(default_factory=list)


def judge_list_create(destination: Destination, body: str) -> ListCreateVerdict:
    """Judge a 2xx list-create answer as Amplitude's two readers would (module docstring)."""
    path = destination.configured_list_id_path
    found = destination.locate_list_id(body)
    if found is None:
        where = " or ".join(destination.list_id_paths())
        return ListCreateVerdict(
            None,
            False,
            f"no list id in the answer at {where}; Amplitude reads {path!r} "
            f"(answer {both_readers_shape(path)}, or set list_id_path, or list_id_path: none "
            "when the receiver answers no id)",
        )
    list_id, at = found
    if at != path:
        return ListCreateVerdict(
            list_id,
            False,
            f"the list id {list_id!r} is only under {at!r}, but Amplitude reads {path!r}: "
            f"its sync fails with 'a required response value was missing'; answer "
            f"{both_readers_shape(path)} or set list_id_path: {at}",
        )
    verdict = ListCreateVerdict(list_id, True)
    if not destination.nested_list_id(body):
        verdict.warnings.append(
            f"the list id is not also under 'response.{path}': Amplitude's Testing tab reads the "
            f"body as sent, its production worker the body under 'response'; the shape known to "
            f"pass both is {both_readers_shape(path)}"
        )
    return verdict


def unclassified_statuses(destination: Destination, outcomes: Iterable[Outcome]) -> list[int]:
    """The non-success statuses met that the destination's error classifications miss."""
    found = {
        o.status
        for o in outcomes
        if o.status is not None and not o.ok and not destination.classified(o.status, o.body)
    }
    return sorted(found)

"""The requests of one cohort's sync: URLs and body encoders (templates or the fast builders),
and the planned batches turned into :class:`~cohortctl.sync.batches.Batch` es."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from cohortctl.partner import payloads, templates
from cohortctl.partner.destination import Destination
from cohortctl.partner.sizing import fitted_batch_size
from cohortctl.sync.batches import Batch
from cohortctl.sync.encoders import (
    encode_json,
    identify_encoder,
    ids_are_plain,
    list_members_encoder,
)
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.settings import SyncMode, SyncSettings
from cohortctl.sync.state import ADD, PlannedBatches

Encoder = Callable[[Sequence[str]], bytes]


class Requests:
    """URLs and body encoders of one cohort's calls (templates or the fast builders)."""

    def __init__(
        self, destination: Destination, cohort: CohortSpec, settings: SyncSettings
    ) -> None:
        self.destination = destination
        self.cohort = cohort
        self.settings = settings

    def values(self, ids: Sequence[str], list_id: str | None, member: bool) -> dict[str, Any]:
        """Template variables of one request."""
        return templates.variables(
            ids=ids,
            cohort_name=self.cohort.name,
            cohort_id=self.cohort.id,
            list_id=list_id,
            member=member,
            custom=self.settings.variables,
        )

    def url(self, call: str, list_id: str | None, member: bool) -> str:
        """The URL of ``call`` (the same for every batch unless it names the users)."""
        return self.destination.url(call, list_id, self.values((), list_id, member))

    def url_names_users(self, call: str) -> bool:
        """True when the call's URL template holds ``$userId`` or ``$items``."""
        template = self.destination.url_template(call)
        return any(
            f"${name}" in template or f"${{{name}}}" in template
            for name in (templates.VAR_USER_ID, templates.VAR_ITEMS)
        )

    def encoder(
        self, call: str, list_id: str | None, member: bool, *, plain: bool = False
    ) -> Encoder:
        """Bytes of the body of ``call`` for a batch of ids (``plain``: see ids_are_plain)."""
        template = self.settings.templates.get(call)
        if template is not None:

            def render(ids: Sequence[str]) -> bytes:
                text, _ = template.render(self.values(ids, list_id, member))
                return text.encode("utf-8")

            return render
        if call == payloads.LIST_CREATE:
            body = encode_json(payloads.list_create(self.cohort.name, self.cohort.id))
            return lambda ids: body
        if call in (payloads.LIST_ADD, payloads.LIST_REMOVE):
            return list_members_encoder(plain=plain)
        return identify_encoder(
            self.cohort.name,
            self.cohort.id,
            member=member,
            batch=call == payloads.IDENTIFY_BATCH,
            plain=plain,
        )

    def check_templates(self, list_id: str | None) -> None:
        """Render every template once with sample values: a bad one fails before sending."""
        for call, template in self.settings.templates.items():
            template.render(self.values(("sample-user",), list_id or "sample-list", True))
            self.destination.url(call, list_id, self.values(("sample-user",), list_id, True))

    def batch_size(self, entered: Sequence[str], left: Sequence[str], list_id: str | None) -> int:
        """Users per request: the settings', smaller where the destination caps body bytes."""
        size = self.settings.users_per_request
        limit = self.destination.max_body_bytes
        if limit is not None:
            enter_call, leave_call = self.settings.calls()
            for call, ids, member in ((enter_call, entered, True), (leave_call, left, False)):
                size = fitted_batch_size(self.encoder(call, list_id, member), ids, size, limit)
        return size

    def batches(
        self, plan: PlannedBatches, call: str, list_id: str | None, *, key_prefix: str
    ) -> Iterator[Batch]:
        """The planned batches of one direction as requests, built as workers ask for them."""
        member = plan.op == ADD
        encode = self.encoder(call, list_id, member, plain=ids_are_plain(plan.user_ids))
        per_user = self.url_names_users(call)
        url = self.url(call, list_id, member)
        for index, (ids, ref) in enumerate(plan.batches()):
            if per_user:
                url = self.destination.url(call, list_id, self.values(ids, list_id, member))
            method = self.destination.method_for(call)
            yield Batch(f"{key_prefix}:{index}", method, url, encode(ids), ids, call, ref)


def key_prefixes(settings: SyncSettings) -> tuple[str, str]:
    if settings.mode is SyncMode.list:
        return payloads.LIST_ADD, payloads.LIST_REMOVE
    call = settings.user_call
    return f"{call}-true", f"{call}-false"

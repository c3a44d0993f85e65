"""How to sync (the same for every cohort of a run); the hooks a caller plugs in and the
events a sync emits are in :mod:`cohortctl.sync.hooks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cohortctl.errors import InputError
from cohortctl.partner import payloads
from cohortctl.partner.templates import Template
from cohortctl.retry import AMPLITUDE_SYNC_POLICY, RetryPolicy
from cohortctl.sync.delivery import DEFAULT_WORKERS
from cohortctl.sync.encoders import DEFAULT_BATCH_SIZE
from cohortctl.sync.state import default_state_path


class SyncMode(str, Enum):
    """How the partner represents membership: a list of user ids, or a boolean trait; or
    Amplitude's Cohort Webhooks (:mod:`cohortctl.sync.webhook`)."""

    list = "list"
    property = "property"
    webhook = "webhook"


@dataclass(frozen=True)
class SyncSettings:
    """Everything about how to sync, the same for every cohort of a run."""

    mode: SyncMode = SyncMode.list
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = DEFAULT_WORKERS
    policy: RetryPolicy = AMPLITUDE_SYNC_POLICY
    full: bool = False
    batch: bool = True  # property mode: batch identify (True) or one identify per user
    templates: Mapping[str, Template] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    state_path: Path | None = None
    retry_file: Path | None = None
    recreate_list: bool = False  # list mode: create a new list and send the whole cohort to it
    lock_timeout: float = 0.0  # seconds to wait for another sync of the same cohort
    list_id: str | None = None  # --list-id: an existing list, no list-create

    def __post_init__(self) -> None:
        if self.recreate_list and self.mode is not SyncMode.list:
            raise InputError("--recreate-list is for list mode (--mode list)")
        if self.recreate_list and self.list_id is not None:
            raise InputError(
                "--recreate-list creates a new list and --list-id names an existing one: "
                "give one of them"
            )
        if self.lock_timeout < 0:
            raise InputError("--lock-timeout must not be negative")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        unknown = sorted(set(self.templates) - set(payloads.CALLS))
        if unknown:
            raise InputError(f"payload templates for unknown call(s): {', '.join(unknown)}")

    @property
    def state_file(self) -> Path:
        """The state file used: ``--state`` or the default in the user data dir."""
        return self.state_path if self.state_path is not None else default_state_path()

    @property
    def user_call(self) -> str:
        """The call that carries users in property mode: identify-batch or identify."""
        return payloads.IDENTIFY_BATCH if self.batch else payloads.IDENTIFY

    def calls(self) -> tuple[str, str]:
        """The calls for users who entered and for users who left."""
        if self.mode is SyncMode.list:
            return payloads.LIST_ADD, payloads.LIST_REMOVE
        return self.user_call, self.user_call

    @property
    def users_per_request(self) -> int:
        """Users per request: the batch size, or 1 for single identify calls."""
        if self.mode is SyncMode.property and not self.batch:
            return 1
        return self.batch_size

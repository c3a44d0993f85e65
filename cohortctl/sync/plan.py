"""Sync plans: a YAML file listing several cohorts to sync to one destination.

    destination:              # optional; any command-line flag overrides these
      url: https://partner.example/amplitude
      mode: list              # list | property
    cohorts:
      - name: Power Users
        id: 7y6y3ij
        snapshot: power_users.csv     # relative to the plan file
      - name: Churn Risk
        id: abc1234
        snapshot: churn.csv.gz
        column: user_id               # optional, as --column

Each cohort is synced with its own requests, as Amplitude does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cohortctl.errors import InputError

DESTINATION_KEYS = frozenset(
    {
        "url",
        "mode",
        "auth",
        "batch_size",
        "workers",
        "path",
        "create_path",
        "add_path",
        "remove_path",
        "identify_path",
        "batch_path",
        "list_id_path",
    }
)
COHORT_KEYS = frozenset({"name", "id", "snapshot", "column"})


@dataclass(frozen=True)
class CohortSpec:
    """One cohort of a plan: its name and id (as Amplitude labels it) and its snapshot."""

    name: str
    id: str
    snapshot: str
    column: str | None = None


@dataclass(frozen=True)
class SyncPlan:
    """Cohorts to sync, plus destination defaults that flags may override."""

    cohorts: list[CohortSpec]
    destination: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def load_plan(path: Path) -> SyncPlan:
    """Read and check a plan file; every problem is an InputError naming the file."""
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{where}: plan file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read plan file: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InputError(f"{where}{line}: invalid YAML in plan file") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: a plan is a mapping with a 'cohorts' list")
    unknown = sorted(set(data) - {"destination", "cohorts"})
    if unknown:
        raise InputError(f"{where}: unknown top-level keys: {', '.join(unknown)}")
    destination = data.get("destination") or {}
    if not isinstance(destination, dict):
        raise InputError(f"{where}: 'destination' must be a mapping")
    bad = sorted(set(destination) - DESTINATION_KEYS)
    if bad:
        raise InputError(
            f"{where}: unknown destination keys: {', '.join(bad)} "
            f"(known: {', '.join(sorted(DESTINATION_KEYS))})"
        )
    raw_cohorts = data.get("cohorts")
    if not isinstance(raw_cohorts, list) or not raw_cohorts:
        raise InputError(f"{where}: 'cohorts' must be a non-empty list")
    cohorts: list[CohortSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw_cohorts, start=1):
        label = f"{where}: cohorts[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{label} must be a mapping with name, id and snapshot")
        extra = sorted(set(entry) - COHORT_KEYS)
        if extra:
            raise InputError(f"{label}: unknown keys: {', '.join(extra)}")
        for key in ("name", "id", "snapshot"):
            value = entry.get(key)
            if value is None or str(value).strip() == "":
                raise InputError(f"{label}: '{key}' is required")
        cohort_id = str(entry["id"]).strip()
        if cohort_id in seen:
            raise InputError(f"{label}: cohort id {cohort_id!r} is listed twice")
        seen.add(cohort_id)
        snapshot = Path(str(entry["snapshot"])).expanduser()
        if not snapshot.is_absolute() and str(entry["snapshot"]) != "-":
            snapshot = path.parent / snapshot
        column = entry.get("column")
        cohorts.append(
            CohortSpec(
                name=str(entry["name"]),
                id=cohort_id,
                snapshot=str(snapshot),
                column=None if column is None else str(column),
            )
        )
    return SyncPlan(cohorts=cohorts, destination=dict(destination), source=where)

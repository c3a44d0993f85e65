"""``cohortctl sync``: placeholder, filled in by its own change."""

from __future__ import annotations


def sync() -> None:
    """Replay a whole Amplitude cohort sync against a partner endpoint."""

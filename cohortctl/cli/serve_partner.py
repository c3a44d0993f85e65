"""``cohortctl serve partner``: placeholder, filled in by its own change."""

from __future__ import annotations


def partner() -> None:
    """Run the reference partner endpoint."""

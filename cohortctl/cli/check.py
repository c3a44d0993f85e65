"""``cohortctl check``: placeholder, filled in by its own change."""

from __future__ import annotations


def check() -> None:
    """Run the conformance suite against a partner endpoint."""

"""``cohortctl demo``: placeholder."""

from __future__ import annotations


def demo() -> None:
    """Run both sides against the embedded servers."""

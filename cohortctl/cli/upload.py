"""``cohortctl upload``: placeholder."""

from __future__ import annotations


def upload() -> None:
    """Upload an ID file into an Amplitude cohort."""

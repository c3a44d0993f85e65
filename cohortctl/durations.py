"""Human durations on the command line: ``90``, ``90s``, ``5m``, ``1h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import re

from cohortctl.errors import InputError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, *, option: str = "duration") -> float:
    """Seconds in ``text``; a bare number is seconds. Raises InputError naming ``option``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise InputError(
                f"{option}: cannot read {text!r} as a duration (examples: 30s, 5m, 1h, 1d)"
            ) from None
    if seconds < 0 or seconds != seconds:
        raise InputError(f"{option}: duration must not be negative, got {text!r}")
    return seconds


def json_seconds(seconds: float | None) -> float | None:
    """A duration as the JSON output writes it: seconds rounded to milliseconds (None stays)."""
    return None if seconds is None else round(seconds, 3)


def format_duration(seconds: float) -> str:
    """A short human rendering: ``850ms``, ``12.3s``, ``4m05s``, ``2h00m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

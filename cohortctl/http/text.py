"""Server text made safe for a terminal."""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and C1 controls (ESC [ ... is how ANSI starts).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}"


def terminal_text(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with control characters (ANSI escapes, bells, CR...) shown as ``\\xNN``."""
    escaped = _CONTROL.sub(_escape, text)
    if not keep_newlines:
        escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
    return escaped


def body_excerpt(body: str, limit: int = 300) -> str:
    """The start of a response body on one line, for tables and error messages."""
    flat = " ".join(body.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

"""Small pure pieces of the HTTP layer: retry times, redirect notes, redaction, escapes."""

from __future__ import annotations

import base64

import pytest

from cohortctl.http import Redactor, server_wait, terminal_text
from cohortctl.http.redirects import redirect_note
from cohortctl.retry import RetryPolicy

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


@pytest.mark.parametrize(
    ("retry_after", "reset", "expected"),
    [
        ("7", None, 7.0),
        ("0", None, 0.0),
        ("-5", None, None),
        ("soon", None, None),
        ("nan", None, None),
        ("inf", None, None),
        ("Tue, 14 Nov 2023 22:13:30 GMT", None, 10.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", None, 0.0),  # in the past: now
        (None, str(int(NOW) + 30), 30.0),
        (None, str(int(NOW * 1000) + 4000), 4.0),
        (None, "12", 12.0),  # a delta sent under that name
        (None, "-3", None),
        ("-1", str(int(NOW) + 9), 9.0),  # an unusable Retry-After falls back to the reset
        ("3", str(int(NOW) + 9), 3.0),  # Retry-After wins
    ],
)
def test_server_wait(retry_after: str | None, reset: str | None, expected: float | None) -> None:
    assert server_wait(retry_after, reset, now=clock) == expected


def test_the_cap_still_applies_and_no_hint_is_plain_backoff() -> None:
    policy = RetryPolicy(retries=8, base_delay=1.0, max_delay=128.0)
    assert policy.delay(3, server_wait("99999", None)) == 128.0
    assert policy.delay(3, server_wait("-5", None)) == 4.0


@pytest.mark.parametrize(
    ("location", "url", "hint"),
    [
        ("/lists/", "https://p.io/lists", True),
        ("https://p.io/lists/", "https://p.io/lists", True),
        ("lists/", "https://p.io/lists", True),
        ("/lists/?a=1", "https://p.io/lists?a=1", True),
        ("https://other.io/lists/", "https://p.io/lists", False),
        ("/other", "https://p.io/lists", False),
    ],
)
def test_redirect_note(location: str, url: str, hint: bool) -> None:
    note = redirect_note(location, url)
    assert f"Location: {location}" in note
    assert ("add a trailing slash" in note) is hint


def test_redactor_covers_raw_and_basic_encodings() -> None:
    token = base64.b64encode(b"key-123456:pass-987654").decode()
    redact = Redactor.for_headers({"Authorization": f"Basic {token}", "Accept": "text/plain"})
    text = f"{token} key-123456 pass-987654 key-123456:pass-987654 text/plain"
    assert redact(text) == ("***redacted*** " * 4) + "text/plain"


def test_terminal_text_escapes_controls_but_keeps_text() -> None:
    assert terminal_text("\x1b[2Jhi\x07\r\n\tok é") == "\\x1b[2Jhi\\x07\\x0d\n\tok é"

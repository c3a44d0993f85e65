"""How a redirect that was not followed is described."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

TRAILING_SLASH_HINT = "add a trailing slash to the path"


def adds_trailing_slash(location: str, request_url: str) -> bool:
    """True when ``location`` (resolved against ``request_url``) is the request URL with a
    ``/`` added to the end of its path."""
    target = urlsplit(urljoin(request_url, location))
    asked = urlsplit(request_url)
    return (
        target.scheme.lower() == asked.scheme.lower()
        and target.netloc.lower() == asked.netloc.lower()
        and target.path == asked.path + "/"
        and target.query == asked.query
    )


def redirect_note(location: str | None, request_url: str) -> str:
    """``not followed; Location: …`` plus the trailing-slash hint when that is the fix."""
    if not location:
        return "not followed; no Location header"
    note = f"not followed; Location: {location}"
    if adds_trailing_slash(location, request_url):
        note += f" ({TRAILING_SLASH_HINT}: {urljoin(request_url, location)})"
    return note

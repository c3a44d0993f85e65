"""Which partner call a request is, from its method and URL (for recordings and the proxy)."""

from __future__ import annotations

import re
from collections.abc import Callable

from cohortctl.partner import payloads
from cohortctl.partner.destination import Destination

# A template variable after re.escape: \$name or \{name\}.
_VARIABLE = re.compile(r"\\\$[A-Za-z_]\w*|\\\{[A-Za-z_]\w*\\\}")

CallOf = Callable[[str, str], "str | None"]
_MEMBERS = re.compile(r"/lists/([^/]+)/(add|remove)")


def default_call(method: str, path: str) -> tuple[str | None, str | None]:
    """The call a request is on Amplitude's default paths, and the list id in its path."""
    if method.upper() != "POST":
        return None, None
    if path == "/lists":
        return payloads.LIST_CREATE, None
    if path == "/identify":
        return payloads.IDENTIFY, None
    if path == "/batch":
        return payloads.IDENTIFY_BATCH, None
    match = _MEMBERS.fullmatch(path)
    if match:
        call = payloads.LIST_ADD if match.group(2) == "add" else payloads.LIST_REMOVE
        return call, match.group(1)
    return None, None


def call_matcher(destination: Destination) -> CallOf:
    """``call_of(method, url)``: the call whose URL template (of ``destination``) ``url`` fits.

    Template variables (``$listId``, ``{listId}``...) match one path segment. None for a
    request that is none of the calls (a GET, another path).
    """
    patterns: list[tuple[re.Pattern[str], re.Pattern[str], str]] = []
    for call in payloads.CALLS:
        template = destination.url_template(call)
        patterns.append((_url_pattern(template), _url_pattern(template.partition("?")[0]), call))

    def call_of(method: str, url: str) -> str | None:
        if method.upper() != "POST":
            return None
        bare = url.partition("#")[0]
        path = bare.partition("?")[0]
        for candidate in (bare, path):
            for pattern, _, call in patterns:
                if pattern.fullmatch(candidate):
                    return call
        # A base URL's query may hold a key, hidden in recorded URLs: the path then decides.
        for _, without_query, call in patterns:
            if without_query.fullmatch(path):
                return call
        return None

    return call_of


def _url_pattern(template: str) -> re.Pattern[str]:
    """A URL template as a regex: each template variable matches one path segment."""
    return re.compile(_VARIABLE.sub(r"[^/?#]+", re.escape(template)))

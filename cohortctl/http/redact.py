"""Remove every credential that was sent from text that is shown, stored or reported."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

REDACTED = "***redacted***"
_MIN = 4  # shorter values would mangle ordinary words and are no real credential

# Header names whose values are credentials, whoever set them.
SENSITIVE_HEADER = re.compile(
    r"auth|api[-_]?key|token|secret|password|passwd|cookie|session|signature", re.I
)


def is_sensitive_header(name: str) -> bool:
    """True for headers whose value is a credential (Authorization, api_key, tokens...)."""
    return bool(SENSITIVE_HEADER.search(name))


def credential_values(name: str, value: str) -> list[str]:
    """The secret strings a header carries, in every encoding the tool uses.

    ``Authorization: Basic X`` gives X, its decoded ``user:pass`` and each part;
    ``Bearer X`` gives X; any other credential header gives its value.
    """
    values = [value]
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if credential:
        values.append(credential)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                decoded = ""
            if decoded:
                values.append(decoded)
                values.extend(decoded.split(":", 1))
    return values


class Redactor:
    """Replaces each of a set of secrets (longest first) with :data:`REDACTED`."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        unique = {s for s in secrets if s and len(s) >= _MIN}
        self._secrets = sorted(unique, key=len, reverse=True)
        self._raw = [s.encode("utf-8", "surrogatepass") for s in self._secrets]

    @classmethod
    def for_headers(
        cls, headers: Mapping[str, str] | Iterable[tuple[str, str]], *, every: bool = False
    ) -> Redactor:
        """The secrets of ``headers``: credential-looking ones (every one when ``every``)."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        secrets: list[str] = []
        for name, value in items:
            if every or is_sensitive_header(name):
                secrets.extend(credential_values(name, value))
        return cls(secrets)

    def merged(self, other: Redactor) -> Redactor:
        """One redactor for the secrets of both."""
        return Redactor([*self._secrets, *other._secrets])

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secrets, longest first."""
        return tuple(self._secrets)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        return self.text(text)

    def text(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every secret (UTF-8) replaced."""
        for secret in self._raw:
            if secret in data:
                data = data.replace(secret, REDACTED.encode())
        return data

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Headers as they may be shown: credential values hidden, the scheme kept."""
        shown: list[tuple[str, str]] = []
        for name, value in headers:
            if is_sensitive_header(name):
                scheme, sep, credential = value.partition(" ")
                if (
                    sep
                    and credential.strip()
                    and name.lower()
                    in (
                        "authorization",
                        "proxy-authorization",
                    )
                ):
                    shown.append((name, f"{scheme} {REDACTED}"))
                else:
                    shown.append((name, REDACTED))
            else:
                shown.append((name, self.text(value)))
        return shown

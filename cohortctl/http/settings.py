"""Process-wide HTTP settings the CLI sets once (``--user-agent``, ``--ca-cert``, observers)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from typing import Any

from cohortctl import __version__
from cohortctl.http.observe import Observer
from cohortctl.http.proxy import proxy_for
from cohortctl.http.redact import Redactor

USER_AGENT = f"cohortctl/{__version__}"
WEBHOOK_USER_AGENT = "Amplitude/Webhook/1.0"
MAX_HELD = 1024 * 1024  # bytes of one answer held for display, parsing and reports


@dataclass(frozen=True)
class HttpSettings:
    """What every transport reads unless a caller overrides it."""

    user_agent: str = USER_AGENT
    ca_cert: str | None = None
    observers: tuple[Observer, ...] = field(default=())

    def ssl_context(self) -> ssl.SSLContext:
        """The trust to verify servers with: ``--ca-cert``, else ``SSL_CERT_FILE``, else the
        system store."""
        return ssl_context(self.ca_cert)


@dataclass(frozen=True)
class Overrides:
    """What one transport changes from the settings in force, the same for both transports.

    ``proxy``: ``None`` the environment's for each URL, ``""`` none at all; ``ca_cert``:
    ``None`` the process's ``--ca-cert``; ``observers``: ``None`` the registered ones;
    ``redactor``: ``None`` the transport's default.
    """

    proxy: str | None = None
    ca_cert: str | None = None
    observers: tuple[Observer, ...] | None = None
    redactor: Redactor | None = None

    def proxy_for(self, url: str) -> str | None:
        """The proxy to reach ``url`` through, or None for a direct connection."""
        return proxy_for(url) if self.proxy is None else (self.proxy or None)

    def trust(self) -> str | None:
        """The CA file to verify servers with (None: ``SSL_CERT_FILE``, else the system)."""
        return self.ca_cert if self.ca_cert is not None else current().ca_cert


_current = HttpSettings()
_contexts: dict[str | None, ssl.SSLContext] = {}


def current() -> HttpSettings:
    """The settings in force."""
    return _current


def configure(**changes: Any) -> HttpSettings:
    """Change the settings in force (``user_agent``, ``ca_cert``, ``observers``)."""
    global _current
    _current = replace(_current, **changes)
    return _current


def add_observer(observer: Observer) -> None:
    """Register ``observer`` for every exchange of every transport made from now on."""
    configure(observers=(*_current.observers, observer))


def remove_observer(observer: Observer) -> None:
    """Unregister ``observer``."""
    configure(observers=tuple(o for o in _current.observers if o is not observer))


def ssl_context(ca_cert: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context (cached): ``ca_cert``, else ``$SSL_CERT_FILE``, else system."""
    source = ca_cert or os.environ.get("SSL_CERT_FILE") or None
    context = _contexts.get(source)
    if context is None:
        context = ssl.create_default_context()
        if source:
            context.load_verify_locations(cafile=source)
        _contexts[source] = context
    return context

"""Which proxy a URL goes through (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``), and how."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


def _env(name: str) -> str:
    return os.environ.get(name.lower()) or os.environ.get(name.upper()) or ""


def proxy_for(url: str) -> str | None:
    """The proxy the environment sets for ``url``, or None.

    ``HTTPS_PROXY`` for https, ``HTTP_PROXY`` for http (either case, lower case first, as curl
    reads them), unless ``NO_PROXY`` exempts the host (``*``, hosts and domain suffixes, an
    optional ``:port``). Loopback hosts are proxied like any other unless ``NO_PROXY`` names
    them, so every command behaves as curl does.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    proxy = _env(f"{scheme}_proxy")
    if not proxy:
        return None
    if _no_proxy_matches(parts.hostname or "", parts.port, _env("no_proxy")):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return proxy


def _no_proxy_matches(host: str, port: int | None, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, entry_port = entry, ""
        if entry.startswith("["):
            name, _, rest = entry[1:].partition("]")
            entry_port = rest.lstrip(":")
        elif entry.count(":") == 1:
            name, _, entry_port = entry.partition(":")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".").lstrip("*.")
        if host == name or host.endswith("." + name):
            return True
    return False


@dataclass(frozen=True)
class Proxy:
    """A proxy URL split into where to connect and its own credentials."""

    url: str
    scheme: str
    host: str
    port: int
    authorization: str | None  # Proxy-Authorization, only from the proxy URL's userinfo

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Read a proxy URL; ValueError when it is not ``http(s)://[user:pass@]host[:port]``."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported proxy URL {shown_proxy(url)!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        authorization = None
        if parts.username is not None:
            raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(raw.encode()).decode("ascii")
        return cls(shown_proxy(url), scheme, parts.hostname, port, authorization)


def shown_proxy(url: str) -> str:
    """A proxy URL as it may be printed: no userinfo."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}"

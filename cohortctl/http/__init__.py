"""The one HTTP layer every command sends through.

Rules (the same in every command; README "HTTP: proxies, redirects, redaction"):

- **Credentials** (``Authorization``, header-auth ``api_key``/``app_id``, every ``--header``)
  go only to the origin the user named: never into a proxy's own headers
  (``Proxy-Authorization`` comes only from userinfo in the proxy URL; a ``CONNECT`` carries no
  credential of the target) and never across a redirect. Redirects are not followed; only the
  export's signed-URL redirect is, without credentials (:mod:`cohortctl.customer.client`).
- **Proxies**: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (either case) for every
  request (:func:`proxy_for`): ``CONNECT`` for https, absolute-form for http. A failing proxy
  is named as the proxy, not the target.
- **Deadlines**: ``timeout`` bounds one request from connect to its last byte.
- **Body limits**: at most :data:`MAX_HELD` bytes of an answer are held (the excerpt says it
  was cut); export files are streamed whole to their file.
- **Redaction**: :class:`Redactor` removes every credential that was sent (raw and Basic
  base64) from any text shown, stored or reported; :func:`terminal_text` escapes control
  characters in server text bound for a terminal.
- **One User-Agent**: ``cohortctl/<version>`` (:data:`USER_AGENT`), ``--user-agent`` to send
  another; ``--ca-cert FILE``, else ``SSL_CERT_FILE``, else the system trust store.

Two clients share these rules: :func:`cohortctl.http.client.make_client` (httpx, for the
request/response commands) and :class:`cohortctl.http.fast.FastTransport` (asyncio protocols
framed by ``httptools``, the sync hot path).

Observers
---------
Anything that wants to see the traffic (``-v``, ``--har``) registers an observer: a callable
taking one :class:`Exchange`, called once per request attempt by every transport, after the
answer (or the failure), with headers and bodies already redacted::

    from cohortctl import http

    http.add_observer(print)          # process-wide, e.g. from a CLI option
    ...
    http.remove_observer(print)

or per client: ``make_client(..., observers=[fn])``,
``FastTransport(..., overrides=Overrides(observers=(fn,)))``.
With no observer registered nothing is built (the hot path pays one truth test per request).
An observer must not raise; an exception from one is swallowed so traffic is not disturbed.
"""

from __future__ import annotations

from cohortctl.http.observe import Exchange, Observer
from cohortctl.http.proxy import proxy_for
from cohortctl.http.redact import Redactor
from cohortctl.http.retry_after import server_wait
from cohortctl.http.settings import (
    MAX_HELD,
    USER_AGENT,
    HttpSettings,
    add_observer,
    configure,
    current,
    remove_observer,
)
from cohortctl.http.text import terminal_text

__all__ = [
    "MAX_HELD",
    "USER_AGENT",
    "Exchange",
    "HttpSettings",
    "Observer",
    "Redactor",
    "add_observer",
    "configure",
    "current",
    "proxy_for",
    "remove_observer",
    "server_wait",
    "terminal_text",
]

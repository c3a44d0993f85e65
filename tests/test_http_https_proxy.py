"""An ``https://`` proxy (TLS to the proxy, then CONNECT or absolute-form) on both transports.

The same cases run through the httpx client (request/response commands) and the sync fast
transport, against a real TLS forward proxy and a real target on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvloop

from cohortctl.http import outcomes
from cohortctl.http.client import make_client
from cohortctl.http.fast import FastTransport
from cohortctl.http.settings import Overrides
from tests.http_servers import RecordingProxy, ScriptServer, answer

TARGET_SECRET = "Bearer target-secret-41"
Got = tuple["int | None", str]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server context for the proxy and the target (one private CA) and that CA's file."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "partner.test").configure_cert(context)
    path: Path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return context, str(path)


def via_httpx(url: str, proxy: str, ca_cert: str | None) -> Got:
    try:
        with make_client(proxy=proxy, ca_cert=ca_cert, timeout=5) as client:
            response = client.post(url, headers={"Authorization": TARGET_SECRET}, content=b"{}")
    except httpx.TransportError as exc:
        return None, f"{outcomes.classify_transport_error(exc)}: {exc}"
    return response.status_code, response.text


def via_fast(
    url: str, proxy: str, ca_cert: str | None, *, loop: Callable[[Any], Got] = asyncio.run
) -> Got:
    transport = FastTransport(
        workers=1, headers={"Authorization": TARGET_SECRET}, timeout=5,
        overrides=Overrides(proxy=proxy, ca_cert=ca_cert),
    )  # fmt: skip

    async def run() -> Got:
        try:
            got = await transport.send("POST", url, b"{}")
        finally:
            await transport.close()
        if got.status is None:
            return None, f"{got.error}: {got.detail}"
        return got.status, got.body.decode()

    return loop(run())


SEND: dict[str, Callable[[str, str, str | None], Got]] = {
    "httpx": via_httpx,
    "fast": via_fast,
    "fast on uvloop": partial(via_fast, loop=uvloop.run),  # as sync runs it
}


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize("transport", sorted(SEND))
def test_an_https_proxy_carries_the_request_with_only_its_own_credential(
    transport: str, scheme: str, tls: tuple[ssl.SSLContext, str]
) -> None:
    context, ca_file = tls
    target_tls = context if scheme == "https" else None
    port = 443 if scheme == "https" else 80
    with (
        ScriptServer(lambda n: [answer(200, b"hello")], tls=target_tls) as target,
        RecordingProxy(tls=context, upstreams={f"partner.test:{port}": target.port}) as proxy,
    ):
        with_user = proxy.url.replace("https://", "https://relay:pw-9@")
        got = SEND[transport](f"{scheme}://partner.test/lists", with_user, ca_file)
    assert got == (200, "hello")
    [head] = proxy.heads
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'relay:pw-9').decode()}" in (
        head.decode()
    )
    if scheme == "https":  # a tunnel: the target's credential never reaches the proxy
        assert head.startswith(b"CONNECT partner.test:443 HTTP/1.1")
        assert TARGET_SECRET.encode() not in proxy.seen()
    else:  # relayed as it is (absolute-form), as HTTP proxying works
        assert head.startswith(b"POST http://partner.test/lists HTTP/1.1")
    assert [r.head.split(b"\r\n")[0] for r in target.received] == [b"POST /lists HTTP/1.1"]


@pytest.mark.parametrize("transport", sorted(SEND))
def test_an_untrusted_https_proxy_is_named_as_the_proxy(
    transport: str, tls: tuple[ssl.SSLContext, str]
) -> None:
    context, _ = tls
    with RecordingProxy(tls=context) as proxy:
        status, said = SEND[transport]("https://partner.test/lists", proxy.url, None)
    assert status is None
    assert said.startswith(f"{outcomes.PROXY}: proxy {proxy.url}: TLS handshake failed"), said
    assert proxy.heads == []  # nothing was sent to a proxy that could not be verified

"""The wire's rules, command by command, over a real loopback proxy and redirecting servers.

Credentials never reach a proxy's own headers nor another host across a redirect; nothing is
recorded as delivered when a redirect or an invalid answer came back; bodies are redacted;
server text is escaped; deadlines hold against a trickling server.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import RunCli
from tests.credentials import API_KEY, PARTNER_KEY, SECRET_KEY
from tests.http_servers import CLOSE, Piece, RecordingProxy, ScriptServer, answer

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
EXTRA = "X-Partner-Token: extra-header-secret-0042"
CREDENTIALS = (
    PARTNER_KEY,
    "extra-header-secret-0042",
    base64.b64encode(f"{PARTNER_KEY}:".encode()).decode(),
)
COHORT = ["--cohort-name", "Power Users", "--cohort-id", "c7"]
LIST_CREATED = answer(200, b'{"listId":"L1"}', "Content-Type: application/json\r\n")


def creates_then_accepts(number: int) -> list[Piece]:
    """A partner's script: list L1 created on the first request, ``{}`` on every other."""
    return [LIST_CREATED if number == 1 else answer(200, b"{}")]


def through_tls(ca_file: str) -> list[str]:
    """The options for the https partner (partner.test), with the extra secret header."""
    return ["--url", "https://partner.test", "-H", EXTRA, "--ca-cert", ca_file]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("partner.test", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def partner_tls(ca: trustme.CA) -> Iterator[ScriptServer]:
    """An https partner (certificate for partner.test) creating list L1, then accepting all."""
    with ScriptServer(creates_then_accepts, tls=tls_context(ca)) as server:
        yield server


def ids_file(tmp_path: Path, count: int = 5) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"user-{i}\n" for i in range(count)), encoding="utf-8")
    return path


def assert_no_credentials(data: bytes) -> None:
    for secret in CREDENTIALS:
        assert secret.encode() not in data, f"a credential reached the proxy: {secret[:6]}…"


# -- proxies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("proxy_scheme", ["http", "https"])
@pytest.mark.parametrize("with_userinfo", [False, True])
def test_sync_through_https_proxy_sends_credentials_only_inside_the_tunnel(
    cli: RunCli,
    tmp_path: Path,
    partner_tls: ScriptServer,
    ca: trustme.CA,
    ca_file: str,
    with_userinfo: bool,
    proxy_scheme: str,
) -> None:
    proxy_tls = tls_context(ca) if proxy_scheme == "https" else None  # TLS to the proxy too
    with RecordingProxy(upstreams={"partner.test:443": partner_tls.port}, tls=proxy_tls) as proxy:
        proxy_url = (
            proxy.url.replace("://", "://pxuser:px%20pass@", 1) if with_userinfo else proxy.url
        )
        result = cli(
            "sync",
            str(ids_file(tmp_path)),
            *through_tls(ca_file),
            *COHORT,
            "-o",
            "json",
            env={**KEY_ENV, "HTTPS_PROXY": proxy_url},
        )
        seen = proxy.seen()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cohorts"][0]["added"] == 5
    assert {h.split(b"\r\n")[0] for h in proxy.heads} == {b"CONNECT partner.test:443 HTTP/1.1"}
    assert_no_credentials(seen)
    assert b"\r\nAuthorization:" not in seen and b"X-Partner-Token" not in seen
    expected = base64.b64encode(b"pxuser:px pass").decode()
    assert (f"Proxy-Authorization: Basic {expected}".encode() in seen) is with_userinfo
    # the origin did get the credentials, through the tunnel
    assert all(
        r.header("X-Partner-Token") == "extra-header-secret-0042" for r in partner_tls.received
    )
    assert all(r.header("Proxy-Authorization") is None for r in partner_tls.received)


@pytest.mark.parametrize("proxy_scheme", ["http", "https"])
def test_mock_through_https_proxy_sends_no_credential_in_the_connect(
    cli: RunCli, partner_tls: ScriptServer, ca: trustme.CA, ca_file: str, proxy_scheme: str
) -> None:
    proxy_tls = tls_context(ca) if proxy_scheme == "https" else None  # TLS to the proxy too
    upstreams = {"partner.test:443": partner_tls.port}
    with RecordingProxy(upstreams=upstreams, tls=proxy_tls) as proxy:
        result = cli(
            "mock",
            "list-create",
            *through_tls(ca_file),
            "--auth",
            "header",
            "--app-id",
            "app-123456",
            env={**KEY_ENV, "HTTPS_PROXY": proxy.url},
        )
        seen = proxy.seen()
    assert result.exit_code == 0, result.output
    assert seen.startswith(b"CONNECT partner.test:443 HTTP/1.1")
    assert_no_credentials(seen)
    assert b"app-123456" not in seen and b"api_key" not in seen
    assert partner_tls.received[0].header("api_key") == PARTNER_KEY


def test_http_proxy_relays_an_http_request_in_absolute_form(cli: RunCli, tmp_path: Path) -> None:
    partner = ScriptServer(creates_then_accepts)
    with partner, RecordingProxy(upstreams={"partner.test:80": partner.port}) as proxy:
        result = cli(
            "sync",
            str(ids_file(tmp_path)),
            "--url",
            "http://partner.test",
            *COHORT,
            "--allow-insecure-http",
            env={**KEY_ENV, "HTTP_PROXY": proxy.url},
        )
        lines = [h.split(b"\r\n")[0] for h in proxy.heads]
    assert result.exit_code == 0, result.output
    assert lines[0] == b"POST http://partner.test/lists HTTP/1.1"
    assert lines[1] == b"POST http://partner.test/lists/L1/add HTTP/1.1"
    assert all(h.count(b"Proxy-Authorization") == 0 for h in proxy.heads)


def test_no_proxy_exempts_a_host(cli: RunCli, tmp_path: Path) -> None:
    partner = ScriptServer(creates_then_accepts)
    with partner, RecordingProxy() as proxy:
        result = cli(
            "mock",
            "list-create",
            "--url",
            partner.url,
            env={**KEY_ENV, "HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"},
        )
        assert proxy.heads == []
    assert result.exit_code == 0, result.output
    assert len(partner.received) == 1


@pytest.mark.parametrize("command", ["sync", "mock"])
def test_a_failing_proxy_is_named_as_the_proxy(
    cli: RunCli, tmp_path: Path, ca: trustme.CA, command: str
) -> None:
    with RecordingProxy(refuse_connect=407) as proxy:
        url = proxy.url
        if command == "sync":
            args = ["sync", str(ids_file(tmp_path)), *COHORT, "--retries", "0"]
        else:
            args = ["mock", "list-create"]
        result = cli(*args, "--url", "https://partner.test", env={**KEY_ENV, "HTTPS_PROXY": url})
    assert result.exit_code == 1, result.output
    assert f"proxy {url}" in result.output and "407" in result.output
    dead = "http://127.0.0.1:9"
    result = cli(*args, "--url", "https://partner.test", env={**KEY_ENV, "HTTPS_PROXY": dead})
    assert result.exit_code == 1 and f"proxy {dead}" in result.output, result.output
    with RecordingProxy(tls=tls_context(ca)) as untrusted:  # an https:// proxy, CA not given
        env = {**KEY_ENV, "HTTPS_PROXY": untrusted.url}
        result = cli(*args, "--url", "https://partner.test", env=env)
    assert result.exit_code == 1, result.output
    assert f"proxy {untrusted.url}: TLS handshake failed" in result.output
    assert "Traceback" not in result.output and untrusted.heads == []


# -- redirects ----------------------------------------------------------------------------------


def test_sync_does_not_follow_a_redirect_and_records_nothing(
    cli: RunCli, tmp_path: Path, ca: trustme.CA, ca_file: str
) -> None:
    with ScriptServer(lambda n: [answer(200, b"{}")]) as elsewhere:
        moved = f"Location: {elsewhere.url}/lists/L1/add\r\n"
        with (
            ScriptServer(
                lambda n: [LIST_CREATED if n == 1 else answer(307, b"", moved)], tls=tls_context(ca)
            ) as partner,
            RecordingProxy(upstreams={"partner.test:443": partner.port}) as proxy,
        ):
            args = ["sync", str(ids_file(tmp_path)), *through_tls(ca_file), *COHORT, "-o", "json"]
            env = {**KEY_ENV, "HTTPS_PROXY": proxy.url}
            first = cli(*args, env=env)
            again = cli(*args, "--dry-run", env=env)
            heads = list(proxy.heads)
    assert first.exit_code == 1, first.output
    cohort = json.loads(first.stdout)["cohorts"][0]
    assert cohort["added"] == 0 and cohort["result"] == "failed"
    assert elsewhere.received == []
    assert {h.split(b"\r\n")[0] for h in heads} == {b"CONNECT partner.test:443 HTTP/1.1"}
    assert f"Location: {elsewhere.url}/lists/L1/add" in first.stdout
    assert "5" in again.stdout and again.exit_code == 0  # all five still to send


def test_mock_shows_a_redirect_with_its_location_and_the_trailing_slash_hint(
    cli: RunCli,
) -> None:
    with ScriptServer(lambda n: [answer(308, b"", "Location: /lists/\r\n")]) as server:
        result = cli("mock", "list-create", "--url", server.url, "-o", "json", env=KEY_ENV)
    assert result.exit_code == 1
    [row] = json.loads(result.stdout)["results"]
    assert row["status"] == 308
    assert "Location: /lists/" in row["meaning"] and "add a trailing slash" in row["meaning"]
    assert len(server.received) == 1


def test_upload_shows_a_redirect_instead_of_following_it(cli: RunCli, tmp_path: Path) -> None:
    with (
        ScriptServer(lambda n: [answer(200, b"{}")]) as elsewhere,
        ScriptServer(
            lambda n: [answer(302, b"", f"Location: {elsewhere.url}/api/3/cohorts/upload\r\n")]
        ) as server,
    ):
        result = cli(
            "upload",
            str(ids_file(tmp_path)),
            "--name",
            "x",
            "--app-id",
            "1",
            "--owner",
            "o@x.io",
            "--base-url",
            server.url,
            "--retries",
            "0",
        )
    assert result.exit_code == 1, result.output
    assert "302" in result.output and f"Location: {elsewhere.url}" in result.output
    assert elsewhere.received == []


# -- redaction, escapes, limits, deadlines ------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["cohorts", "list"],
        ["cohorts", "download", "c1", "-o", "{tmp}/members.csv"],
        ["membership", "add", "{ids}", "--cohort-id", "c1"],
        ["upload", "{ids}", "--name", "x", "--app-id", "1", "--owner", "o@x.io"],
    ],
    ids=["cohorts list", "cohorts download", "membership", "upload"],
)
def test_amplitude_error_bodies_are_redacted_in_every_encoding(
    cli: RunCli, tmp_path: Path, command: list[str]
) -> None:
    basic = base64.b64encode(f"{API_KEY}:{SECRET_KEY}".encode()).decode()
    echo = json.dumps(
        {"error": f"bad auth: Authorization: Basic {basic} ({API_KEY}, {SECRET_KEY})"}
    )
    ids = str(ids_file(tmp_path))
    args = [a.replace("{ids}", ids).replace("{tmp}", str(tmp_path)) for a in command]
    with ScriptServer(lambda n: [answer(401, echo.encode())]) as server:
        result = cli(*args, "--base-url", server.url, "--retries", "0")
    assert result.exit_code == 1, result.output
    assert "401" in result.output
    for secret in (basic, API_KEY, SECRET_KEY):
        assert secret not in result.output
    assert "redacted" in result.output


def test_sync_failure_bodies_are_redacted_in_output_and_retry_files(
    cli: RunCli, tmp_path: Path
) -> None:
    token = base64.b64encode(f"{PARTNER_KEY}:".encode()).decode()
    echo = f"denied Basic {token} X-Partner-Token=extra-header-secret-0042".encode()
    with ScriptServer(lambda n: [LIST_CREATED if n == 1 else answer(400, echo)]) as server:
        result = cli(
            "sync",
            str(ids_file(tmp_path)),
            "--url",
            server.url,
            *COHORT,
            "-H",
            EXTRA,
            "-o",
            "json",
            env=KEY_ENV,
        )
    assert result.exit_code == 1
    assert token not in result.output and "extra-header-secret" not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data and b"extra-header-secret" not in data, path


def test_server_text_reaches_the_terminal_with_control_characters_escaped(cli: RunCli) -> None:
    with ScriptServer(lambda n: [answer(400, b"\x1b[31mred\x1b[0m\x07 bell")]) as server:
        result = cli("mock", "list-create", "--url", server.url, env=KEY_ENV)
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[31mred" in result.output


def test_mock_cuts_a_huge_answer(cli: RunCli) -> None:
    size = 20 * 1024 * 1024
    head = f"HTTP/1.1 400 Bad\r\nContent-Length: {size}\r\n\r\n".encode()
    pieces: list[Piece] = [head] + [b"z" * 65536] * (size // 65536)
    with ScriptServer(lambda n: pieces) as server:
        result = cli("mock", "list-create", "--url", server.url, "-o", "json", env=KEY_ENV)
    [row] = json.loads(result.stdout)["results"]
    assert row["status"] == 400 and "answer cut" in row["body"]


TRICKLE: list[Piece] = [b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n"] + [b"{", 0.1] * 200


@pytest.mark.parametrize(
    "args",
    [
        ["mock", "list-create", "--timeout", "1"],
        ["cohorts", "list", "--timeout", "1s", "--retries", "0"],
    ],
)
def test_a_trickling_server_is_cut_at_the_timeout(cli: RunCli, args: list[str]) -> None:
    with ScriptServer(lambda n: TRICKLE) as server:
        flag = "--url" if args[0] == "mock" else "--base-url"
        result = cli(*args, flag, server.url, env=KEY_ENV)
    assert result.exit_code == 1
    assert "timeout" in result.output.lower() or "timed out" in result.output.lower()


def test_a_header_value_outside_latin1_is_an_input_error(cli: RunCli) -> None:
    result = cli("mock", "list-create", "--url", "http://127.0.0.1:9", "-H", "X-Price: 5€")
    assert result.exit_code == 2 and "X-Price" in result.output


@pytest.mark.parametrize("list_id", ['""', '"."', '".."', '{"a":1}', "[1]", "true"])
def test_an_unusable_list_id_is_an_invalid_answer_and_state_does_not_advance(
    cli: RunCli, tmp_path: Path, list_id: str
) -> None:
    created = answer(200, b'{"listId":' + list_id.encode() + b"}")
    with ScriptServer(lambda n: [created]) as server:
        result = cli("sync", str(ids_file(tmp_path)), "--url", server.url, *COHORT, env=KEY_ENV)
        assert len(server.received) == 1  # the list-create only: no list-add to another path
    assert result.exit_code == 1
    assert "invalid answer" in result.output


def test_sync_takes_204_as_success(cli: RunCli, tmp_path: Path) -> None:
    with ScriptServer(
        lambda n: [LIST_CREATED if n == 1 else b"HTTP/1.1 204 No Content\r\n\r\n"]
    ) as server:
        result = cli(
            "sync",
            str(ids_file(tmp_path, 30)),
            "--url",
            server.url,
            *COHORT,
            "--batch-size",
            "10",
            "--timeout",
            "30",
            "-o",
            "json",
            env=KEY_ENV,
        )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cohorts"][0]["added"] == 30


def test_every_command_sends_one_user_agent_and_user_agent_replaces_it(cli: RunCli) -> None:
    with ScriptServer(lambda n: [LIST_CREATED]) as server:
        cli("mock", "list-create", "--url", server.url, env=KEY_ENV)
        cli(
            "mock",
            "list-create",
            "--url",
            server.url,
            "--user-agent",
            "PartnerProbe/2",
            env=KEY_ENV,
        )
        cli("cohorts", "list", "--base-url", server.url, "--retries", "0")
        cli("mock", "list-create", "--url", server.url, env=KEY_ENV)
    agents = [r.header("User-Agent") for r in server.received]
    assert agents[0] == agents[2] == agents[3] and str(agents[0]).startswith("cohortctl/")
    assert agents[1] == "PartnerProbe/2"


def test_a_server_closing_mid_answer_is_a_reset_not_a_success(cli: RunCli) -> None:
    cut: list[Piece] = [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{", CLOSE]
    with ScriptServer(lambda n: cut) as server:
        result = cli("mock", "list-create", "--url", server.url, env=KEY_ENV)
    assert result.exit_code == 1

from __future__ import annotations

import base64

import pytest

from cohortctl.errors import CheckFailed, ConfigError, InputError
from cohortctl.http.har import redact_url
from cohortctl.partner.destination import (
    AuthMode,
    Destination,
    build_headers,
    parse_auth_mode,
    parse_header,
    parse_list_id_path,
)
from tests.credentials import PARTNER_KEY, PARTNER_SECRET

BASE = "https://partner.example/amplitude"


def test_basic_auth_is_key_and_empty_password_by_default() -> None:
    d = Destination(BASE, api_key=PARTNER_KEY)
    token = base64.b64encode(f"{PARTNER_KEY}:".encode()).decode()
    assert d.request_headers() == {
        "Content-Type": "application/json",
        "Authorization": f"Basic {token}",
    }


def test_basic_auth_with_secret() -> None:
    d = Destination(BASE, api_key=PARTNER_KEY, secret=PARTNER_SECRET)
    raw = base64.b64decode(d.auth_headers()["Authorization"].split()[1]).decode()
    assert raw == f"{PARTNER_KEY}:{PARTNER_SECRET}"


def test_header_bearer_and_none_modes() -> None:
    header = Destination(BASE, auth=AuthMode.header, api_key=PARTNER_KEY, app_id="153957")
    assert header.auth_headers() == {"api_key": PARTNER_KEY, "app_id": "153957"}
    no_app = Destination(BASE, auth=AuthMode.header, api_key=PARTNER_KEY)
    assert no_app.auth_headers() == {"api_key": PARTNER_KEY}
    bearer = Destination(BASE, auth=AuthMode.bearer, api_key=PARTNER_KEY)
    assert bearer.auth_headers() == {"Authorization": f"Bearer {PARTNER_KEY}"}
    assert Destination(BASE, auth=AuthMode.none).auth_headers() == {}


def test_extra_headers_win_case_insensitively() -> None:
    d = Destination(
        BASE,
        api_key=PARTNER_KEY,
        headers=build_headers(["content-type: application/vnd+json", "X-Trace: 1"]),
    )
    headers = d.request_headers()
    assert headers["content-type"] == "application/vnd+json"
    assert "Content-Type" not in headers
    assert headers["X-Trace"] == "1"


@pytest.mark.parametrize("bad", ["no-colon", ": value", "bad name: v", "X: a\nb"])
def test_malformed_header_is_input_error(bad: str) -> None:
    with pytest.raises(InputError):
        parse_header(bad)


def test_malformed_credential_header_message_hides_value() -> None:
    with pytest.raises(InputError) as info:
        parse_header(f"X-Api-Key {PARTNER_KEY}")
    assert PARTNER_KEY not in str(info.value)


def test_redacted_headers_hide_every_credential() -> None:
    d = Destination(
        BASE,
        auth=AuthMode.header,
        api_key=PARTNER_KEY,
        app_id="1",
        headers=(("X-Auth-Token", PARTNER_SECRET),),
    )
    shown = d.redacted_headers()
    assert shown["app_id"] == "1"
    assert PARTNER_KEY not in str(shown) and PARTNER_SECRET not in str(shown)
    bearer = Destination(BASE, auth=AuthMode.bearer, api_key=PARTNER_KEY).redacted_headers()
    assert bearer["Authorization"] == "Bearer ***redacted***"


def test_scrub_removes_key_secret_and_basic_token() -> None:
    d = Destination(BASE, api_key=PARTNER_KEY, secret=PARTNER_SECRET)
    token = d.auth_headers()["Authorization"].split()[1]
    text = d.scrub(f"echo {PARTNER_KEY} {PARTNER_SECRET} {token}")
    assert PARTNER_KEY not in text and PARTNER_SECRET not in text and token not in text


def test_repr_hides_secrets() -> None:
    d = Destination(BASE, api_key=PARTNER_KEY, secret=PARTNER_SECRET)
    assert PARTNER_KEY not in repr(d) and PARTNER_SECRET not in repr(d)


def test_urls_join_base_path_and_quote_list_id() -> None:
    d = Destination(BASE + "/", api_key=PARTNER_KEY)
    assert d.url("list-create") == f"{BASE}/lists"
    assert d.url("list-add", "a/b c") == f"{BASE}/lists/a%2Fb%20c/add"
    assert d.url("identify-batch") == f"{BASE}/batch"
    assert d.needs_list_id("list-remove") and not d.needs_list_id("identify")


def test_custom_paths_templates_and_full_urls() -> None:
    d = Destination(
        "https://p.example/v1?tenant=9",
        paths={"list-add": "lists/$listId/members", "identify": "https://other.example/id"},
    )
    assert d.url("list-add", "L1") == "https://p.example/v1/lists/L1/members?tenant=9"
    assert d.url("identify") == "https://other.example/id"
    assert d.url("list-add") == "https://p.example/v1/lists/$listId/members?tenant=9"


def test_require_credentials_and_safe_urls() -> None:
    with pytest.raises(ConfigError, match="COHORTCTL_PARTNER_API_KEY"):
        Destination(BASE).require_credentials()
    Destination(BASE, auth=AuthMode.none).require_credentials()
    with pytest.raises(ConfigError, match="plain http"):
        Destination("http://partner.example", api_key=PARTNER_KEY).ensure_safe(
            allow_insecure_http=False
        )
    Destination("http://127.0.0.1:9", api_key=PARTNER_KEY).ensure_safe(allow_insecure_http=False)
    Destination("http://partner.example", auth=AuthMode.none).ensure_safe(allow_insecure_http=False)
    with pytest.raises(ConfigError, match="plain http"):
        Destination(
            "http://partner.example",
            auth=AuthMode.none,
            headers=(("X-Api-Key", PARTNER_KEY),),
        ).ensure_safe(allow_insecure_http=False)


def test_parse_auth_mode() -> None:
    assert parse_auth_mode("Bearer") is AuthMode.bearer
    with pytest.raises(ConfigError, match="basic, header, bearer, none"):
        parse_auth_mode("oauth")


def test_redact_url_hides_password_and_key_params() -> None:
    shown = redact_url(f"https://u:{PARTNER_SECRET}@p.example/x?api_key={PARTNER_KEY}&a=1")
    assert PARTNER_SECRET not in shown and PARTNER_KEY not in shown
    assert "a=1" in shown and "p.example/x" in shown


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        ('{"listId": "L1"}', None, "L1"),
        ('{"id": 42}', None, "42"),
        ('{"list_id": "x"}', None, "x"),
        ('{"data": {"id": "nested"}}', None, "nested"),
        ('{"listId": "", "id": "fallback"}', None, "fallback"),
        ('{"result": {"lists": [{"key": "k9"}]}}', "result.lists[0].key", "k9"),
        ('{"result": {"lists": [{"key": "k9"}]}}', "$.result.lists.0.key", "k9"),
    ],
)
def test_find_list_id(body: str, path: str | None, expected: str) -> None:
    assert Destination(BASE, list_id_path=path).find_list_id(body) == expected


def test_find_list_id_fails_clearly_showing_the_body() -> None:
    with pytest.raises(CheckFailed) as info:
        Destination(BASE).find_list_id('{"ok": true, "listID": "wrong case"}')
    message = str(info.value)
    assert "listId or id or list_id or data.id" in message
    assert '{"ok": true' in message
    with pytest.raises(CheckFailed, match=r"at data\.key or listId"):
        Destination(BASE, list_id_path="data.key").find_list_id('{"ID": "L1"}')
    with pytest.raises(CheckFailed, match=r"\(empty\)"):
        Destination(BASE).find_list_id("")


@pytest.mark.parametrize("bad", ["", "a..b", "a.", "[x]", "a[0"])
def test_bad_list_id_path(bad: str) -> None:
    with pytest.raises(InputError, match="--list-id-path"):
        parse_list_id_path(bad)


def test_bad_timeout_and_unknown_call() -> None:
    with pytest.raises(InputError, match="timeout"):
        Destination(BASE, timeout=0)
    with pytest.raises(InputError, match="unknown call"):
        Destination(BASE).url("list-delete")


def test_a_fallback_id_is_read_with_a_warning_naming_what_amplitude_reads() -> None:
    configured = Destination(BASE, list_id_path="data.key")
    assert configured.find_list_id('{"listId": "L1"}') == "L1"
    warning = configured.list_id_warning('{"listId": "L1"}')
    assert warning is not None and "'listId'" in warning and "reads 'data.key'" in warning
    default = Destination(BASE)
    assert default.find_list_id('{"list_id": "L2"}') == "L2"
    warning = default.list_id_warning('{"list_id": "L2"}')
    assert warning is not None
    assert '{"listId": "L", "response": {"listId": "L"}}' in warning
    assert "list_id_path: list_id" in warning
    assert default.list_id_warning('{"listId": "L3"}') is None
    assert not default.nested_list_id('{"listId": "L3"}')
    assert default.nested_list_id('{"listId": "L3", "response": {"listId": "L3"}}')


def test_empty_path_is_the_base_url_exactly_as_given() -> None:
    d = Destination("https://app.example/api/amplitude/", paths={"identify-batch": ""})
    assert d.url("identify-batch") == "https://app.example/api/amplitude/"


def test_header_auth_with_a_named_header() -> None:
    d = Destination(BASE, auth=AuthMode.header, api_key=PARTNER_KEY, auth_header="Authorization")
    assert d.auth_headers() == {"Authorization": PARTNER_KEY}
    assert d.redacted_headers()["Authorization"] != PARTNER_KEY

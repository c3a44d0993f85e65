"""``cohortctl mock`` end to end: every answer provoked for real over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.partner import payloads
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY, PARTNER_SECRET
from tests.test_mock import Capture

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
NAME, COHORT = "Churn risk", "c42"


def mock_json(cli: RunCli, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    result = cli("mock", *args, "--output", "json", env=KEY_ENV if env is None else env)
    return result.exit_code, json.loads(result.stdout)


def state(server: BackgroundServer, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.url}/_cohortctl/{path}", params=params)
    response.raise_for_status()
    return response.json()


def journal(server: BackgroundServer) -> list[Any]:
    data = state(server, "journal", limit=1000)
    return list(data["requests"])


@pytest.fixture
def capture() -> Iterator[tuple[Capture, BackgroundServer]]:
    recorder = Capture()
    with BackgroundServer(recorder.app) as server:
        yield recorder, server


@pytest.fixture
def receiver(partner_server_factory: Any) -> BackgroundServer:
    return partner_server_factory(api_key=PARTNER_KEY)


# --- the happy paths ---------------------------------------------------------------------------


def test_list_create_shows_the_list_id(cli: RunCli, receiver: BackgroundServer) -> None:
    result = cli("mock", "list-create", "--url", receiver.url, env=KEY_ENV)
    assert result.exit_code == 0, result.output
    assert "list-create" in result.stdout and "200" in result.stdout
    assert "list id" in result.stdout
    assert "1 request(s): 1 passed, 0 failed" in result.stderr


def test_json_output_has_every_fact(cli: RunCli, receiver: BackgroundServer) -> None:
    code, data = mock_json(cli, "list-create", "--url", receiver.url)
    assert code == 0
    assert data["ok"] is True
    row = data["results"][0]
    assert row["call"] == "list-create"
    assert row["method"] == "POST"
    assert row["url"] == f"{receiver.url}/lists"
    assert row["status"] == 200 and row["ok"] is True
    assert row["meaning"].startswith("success")
    assert row["latency_s"] >= 0 and row["latency_s"] == round(row["latency_s"], 3)
    assert row["extra"]["list_id"] == data["list_id"]
    assert data["list_id"] in row["body"]
    assert row["error"] is None and row["retry_after"] is None


def test_flow_list_ends_with_every_id_but_the_first(
    cli: RunCli, receiver: BackgroundServer
) -> None:
    ids = ["u1", "u2", "u3", "u4", "u5"]
    args = [f"--id={i}" for i in ids]
    code, data = mock_json(
        cli, "flow", "--url", receiver.url, "--cohort-name", NAME, "--cohort-id", COHORT,
        "--batch-size", "2", *args,
    )  # fmt: skip
    assert code == 0, data
    calls = [r["call"] for r in data["results"]]
    assert calls == ["list-create", "list-add", "list-add", "list-add", "list-remove"]
    listed = state(receiver, f"lists/{data['list_id']}")
    assert listed["name"] == payloads.cohort_label(NAME, COHORT)
    assert sorted(listed["members"]) == ids[1:]


def test_flow_property_sets_traits_true_then_false(cli: RunCli, receiver: BackgroundServer) -> None:
    ids = ["u1", "u2", "u3"]
    code, data = mock_json(
        cli, "flow", "--mode", "property", "--url", receiver.url,
        "--cohort-name", NAME, "--cohort-id", COHORT, *[f"--id={i}" for i in ids],
    )  # fmt: skip
    assert code == 0, data
    assert [(r["call"], r["extra"]["member"]) for r in data["results"]] == [
        ("identify", True),
        ("identify", False),
        ("identify-batch", True),
        ("identify-batch", False),
    ]
    traits = state(receiver, "traits", key=payloads.cohort_label(NAME, COHORT))
    assert sorted(traits["true"]) == ["u2", "u3"]
    assert traits["false"] == ["u1"]


def test_flow_both_and_ids_file(cli: RunCli, receiver: BackgroundServer, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("a1\na2\na3\n", encoding="utf-8")
    code, data = mock_json(cli, "flow", "--mode", "both", "--url", receiver.url,
                           "--ids", str(ids_file))  # fmt: skip
    assert code == 0, data
    assert len(data["results"]) == 7
    assert sorted(state(receiver, f"lists/{data['list_id']}")["members"]) == ["a2", "a3"]


def test_ids_from_a_csv_column_on_stdin_and_bad_ids_files(
    cli: RunCli, capture: tuple[Capture, BackgroundServer], tmp_path: Path
) -> None:
    recorder, server = capture
    result = cli("mock", "list-add", "--url", server.url, "--list-id", "L", "--ids", "-",
                 "--column", "email", "--id", "extra", input="email,n\na@x,1\nb@x,2\na@x,3\n",
                 env=KEY_ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recorder.requests[0]["body"]["userIds"] == ["a@x", "b@x", "extra"]
    missing = cli("mock", "list-add", "--url", server.url, "--list-id", "L",
                  "--ids", str(tmp_path / "nope.csv"), env=KEY_ENV)  # fmt: skip
    assert missing.exit_code == 2 and "nope.csv" in missing.stderr
    assert len(recorder.requests) == 1


def test_url_and_key_from_a_config_profile(
    cli: RunCli, receiver: BackgroundServer, isolated_env: Path
) -> None:
    isolated_env.write_text(
        "profiles:\n  partner:\n"
        f"    partner_url: {receiver.url}\n    partner_api_key: {PARTNER_KEY}\n",
        encoding="utf-8",
    )
    result = cli("mock", "list-create", "--profile", "partner")
    assert result.exit_code == 0, result.output


# --- every answer, provoked for real -----------------------------------------------------------


def test_wrong_key_is_401(cli: RunCli, receiver: BackgroundServer) -> None:
    result = cli("mock", "list-create", "--url", receiver.url,
                 env={"COHORTCTL_PARTNER_API_KEY": "not-the-key"})  # fmt: skip
    assert result.exit_code == 1
    assert "401" in result.stdout and "unauthorized: bad api_key" in result.stdout


def test_bad_body_from_a_custom_payload_is_400(
    cli: RunCli, receiver: BackgroundServer, tmp_path: Path
) -> None:
    template = tmp_path / "bad.json"
    template.write_text('{"members": $items}', encoding="utf-8")
    code, data = mock_json(cli, "identify-batch", "--url", receiver.url, "--payload", str(template))
    assert code == 1
    assert data["results"][0]["status"] == 400
    assert data["results"][0]["meaning"] == "invalid request"


def test_unknown_list_is_404(cli: RunCli, receiver: BackgroundServer) -> None:
    code, data = mock_json(cli, "list-add", "--url", receiver.url, "--list-id", "no-such-list")
    assert code == 1
    assert data["results"][0]["status"] == 404
    assert data["results"][0]["url"] == f"{receiver.url}/lists/no-such-list/add"


def test_unknown_user_is_404(cli: RunCli, partner_server_factory: Any) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, known_users=["known"])
    code, data = mock_json(cli, "identify", "--url", server.url, "--id", "known", "--id", "who")
    assert code == 1
    assert [r["status"] for r in data["results"]] == [200, 404]
    assert data["results"][1]["meaning"].startswith("invalid user id")


def test_rate_limit_is_429_with_retry_after(cli: RunCli, partner_server_factory: Any) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, rate_limit=1)
    ids = [f"--id=u{i}" for i in range(6)]
    result = cli("mock", "identify", "--url", server.url, *ids, env=KEY_ENV)
    assert result.exit_code == 1
    assert "429" in result.stdout
    assert "throttled: rate limited, Retry-After:" in result.stdout


def test_injected_server_error(cli: RunCli, partner_server_factory: Any) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, fail_rate=1, fail_status=503)
    code, data = mock_json(cli, "identify", "--url", server.url, "--id", "u1")
    assert code == 1
    assert data["results"][0]["status"] == 503
    assert "server error (503)" in data["results"][0]["meaning"]


def test_connection_reset(cli: RunCli, partner_server_factory: Any) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, reset_rate=1)
    code, data = mock_json(cli, "identify", "--url", server.url, "--id", "u1")
    assert code == 1
    assert data["results"][0]["status"] is None
    assert data["results"][0]["error"] == "connection reset"


def test_refused_port(cli: RunCli, refused_url: str) -> None:
    result = cli("mock", "flow", "--url", refused_url, env=KEY_ENV)
    assert result.exit_code == 1
    assert "connection refused" in result.stdout
    assert "skipped" in result.stdout  # no list id: the rest of the flow is not sent
    assert "1 passed" not in result.stderr


def test_timeout(cli: RunCli, partner_server_factory: Any) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=300)
    code, data = mock_json(cli, "identify", "--url", server.url, "--id", "u1", "--timeout", "0.05")
    assert code == 1
    assert data["results"][0]["error"] == "timeout"


# --- auth modes and headers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "args"),
    [
        ("basic", []),
        ("header", ["--app-id", "153957"]),
        ("bearer", []),
    ],
)
def test_each_auth_mode_against_a_receiver_in_that_mode(
    cli: RunCli, partner_server_factory: Any, auth: str, args: list[str]
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, auth=auth)
    ok = cli("mock", "list-create", "--url", server.url, "--auth", auth, *args, env=KEY_ENV)
    assert ok.exit_code == 0, ok.output
    other = "bearer" if auth != "bearer" else "basic"
    wrong = cli("mock", "list-create", "--url", server.url, "--auth", other, *args, env=KEY_ENV)
    assert wrong.exit_code == 1 and "401" in wrong.stdout


def test_basic_with_secret_and_auth_none(cli: RunCli, partner_server_factory: Any) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, secret=PARTNER_SECRET, auth="basic")
    env = {**KEY_ENV, "COHORTCTL_PARTNER_SECRET": PARTNER_SECRET}
    assert cli("mock", "list-create", "--url", server.url, env=env).exit_code == 0
    assert cli("mock", "list-create", "--url", server.url, env=KEY_ENV).exit_code == 1
    open_server = partner_server_factory(auth="none")
    result = cli("mock", "list-create", "--url", open_server.url, "--auth", "none")
    assert result.exit_code == 0, result.output


def test_headers_and_auth_reach_the_endpoint(
    cli: RunCli, capture: tuple[Capture, BackgroundServer]
) -> None:
    recorder, server = capture
    result = cli(
        "mock", "identify", "--url", server.url, "--id", "u1", "--auth", "header",
        "--app-id", "153957", "-H", "X-Tenant: acme", "--header", "X-Trace:1", env=KEY_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    headers = recorder.requests[0]["headers"]
    assert headers["X-Tenant"] == "acme" and headers["X-Trace"] == "1"
    assert headers["api_key"] == PARTNER_KEY and headers["app_id"] == "153957"


def test_cli_sends_exactly_the_builders_bodies(
    cli: RunCli, capture: tuple[Capture, BackgroundServer]
) -> None:
    recorder, server = capture
    result = cli(
        "mock", "flow", "--mode", "both", "--url", server.url, "--cohort-name", NAME,
        "--cohort-id", COHORT, "--id", "u1", "--id", "u2", env=KEY_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bodies = [r["body"] for r in recorder.requests]
    assert bodies == [
        payloads.list_create(NAME, COHORT),
        payloads.list_members(["u1", "u2"]),
        payloads.list_members(["u1"]),
        payloads.identify("u1", NAME, COHORT, member=True),
        payloads.identify("u1", NAME, COHORT, member=False),
        payloads.identify_batch(["u1", "u2"], NAME, COHORT, member=True),
        payloads.identify_batch(["u1"], NAME, COHORT, member=False),
    ]


# --- --expect ----------------------------------------------------------------------------------


def test_expect_pass_and_fail(cli: RunCli, receiver: BackgroundServer) -> None:
    wrong_key = {"COHORTCTL_PARTNER_API_KEY": "not-the-key"}
    url = ["--url", receiver.url]
    assert cli("mock", "list-create", *url, "--expect", "401", env=wrong_key).exit_code == 0
    assert cli("mock", "list-create", *url, "--expect", "200", env=wrong_key).exit_code == 1
    mismatch = cli("mock", "list-create", *url, "--expect", "404", env=KEY_ENV)
    assert mismatch.exit_code == 1 and "(expected 404)" in mismatch.stdout


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_shows_no_secret(cli: RunCli, receiver: BackgroundServer) -> None:
    result = cli("mock", "flow", "--mode", "both", "--url", receiver.url, "--dry-run",
                 env={**KEY_ENV, "COHORTCTL_PARTNER_SECRET": PARTNER_SECRET})  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "> POST /lists HTTP/1.1" in lines
    assert "> POST /lists/{listId}/add HTTP/1.1" in lines
    assert f"> Host: {receiver.url.removeprefix('http://')}" in lines
    assert "> Authorization: Basic ***redacted***" in lines
    assert '"userIds": [' in result.stdout
    assert "7 request(s) shown, nothing sent" in result.stderr
    assert journal(receiver) == []


def test_dry_run_needs_no_credentials_and_shows_every_id(cli: RunCli) -> None:
    ids = [f"--id=u{i}" for i in range(25)]
    result = cli("mock", "list-add", "--url", "https://partner.example", "--list-id", "L9",
                 "--auth", "bearer", "--dry-run", *ids)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["# 1/1 list-add (25 ids)", "> POST /lists/L9/add HTTP/1.1",
                         "> Host: partner.example"]  # fmt: skip
    assert "> Authorization: Bearer (not set)" in lines
    assert '    "u0",' in lines and '    "u24"' in lines
    code, data = mock_json(cli, "list-add", "--url", "https://partner.example", "--list-id",
                           "L9", "--dry-run", *ids, env={})  # fmt: skip
    assert code == 0
    assert data["requests"][0]["body"] == payloads.list_members([f"u{i}" for i in range(25)])


def test_dry_run_redacts_credential_headers(cli: RunCli) -> None:
    result = cli(
        "mock", "identify", "--url", "https://partner.example", "--auth", "header",
        "--dry-run", "-H", f"X-Api-Token: {PARTNER_SECRET}", env=KEY_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "api_key: ***redacted***" in result.stdout
    assert "X-Api-Token: ***redacted***" in result.stdout


# --- templates ---------------------------------------------------------------------------------


def test_user_ids_template_with_bearer(
    cli: RunCli, capture: tuple[Capture, BackgroundServer], tmp_path: Path
) -> None:
    recorder, server = capture
    template = tmp_path / "partner.json"
    template.write_text(
        '{"user_ids": $items, "segment": "$amplitude_cohort_name ($amplitude_cohort_id)",'
        ' "tenant": "$tenant", "list": "$listId"}',
        encoding="utf-8",
    )
    result = cli(
        "mock", "list-add", "--url", server.url, "--path", "/v2/$tenant/segments/$listId",
        "--auth", "bearer", "--payload", str(template), "--list-id", "L 1", "--var",
        'tenant=ac"me', "--cohort-name", "Café: top 10%", "--id", "u1", "--id", "u2",
        env=KEY_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = recorder.requests[0]
    assert request["path"] == '/v2/ac"me/segments/L 1'
    assert request["headers"]["Authorization"] == f"Bearer {PARTNER_KEY}"
    assert request["body"] == {
        "user_ids": ["u1", "u2"],
        "segment": f"{payloads.slugify_cohort_name('Café: top 10%')} (cohortctl_mock_1)",
        "tenant": 'ac"me',
        "list": "L 1",
    }


def test_flow_with_per_call_payloads_and_paths(
    cli: RunCli, capture: tuple[Capture, BackgroundServer], tmp_path: Path
) -> None:
    recorder, server = capture
    create = tmp_path / "create.json"
    create.write_text('{"title": "$amplitude_cohort_name"}', encoding="utf-8")
    add = tmp_path / "add.json"
    add.write_text('{"add": $items}', encoding="utf-8")
    result = cli(
        "mock", "flow", "--url", server.url, "--create-payload", str(create),
        "--add-payload", str(add), "--add-path", "/lists/$listId/members", env=KEY_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in recorder.requests] == [
        "/lists",
        "/lists/list-7/members",
        "/lists/list-7/remove",
    ]
    assert recorder.requests[1]["body"] == {"add": ["mock-user-1", "mock-user-2", "mock-user-3"]}


@pytest.mark.parametrize(
    ("template", "message", "also"),
    [
        (
            '{"ids": $itemz}',
            ": unknown template variable(s) $itemz",
            ["$items", "$amplitude_cohort_name"],
        ),
        ('{\n  "ids": $items,\n}', ":3:1: not valid JSON after substitution", []),
    ],
)
def test_bad_templates_exit_2_naming_the_file(
    cli: RunCli,
    receiver: BackgroundServer,
    tmp_path: Path,
    template: str,
    message: str,
    also: list[str],
) -> None:
    payload = tmp_path / "template.json"
    payload.write_text(template, encoding="utf-8")
    result = cli("mock", "identify-batch", "--url", receiver.url, "--payload", str(payload),
                 env=KEY_ENV)  # fmt: skip
    assert result.exit_code == 2
    assert f"{payload}{message}" in result.stderr
    assert all(hint in result.stderr for hint in also)  # the variables it does know
    assert journal(receiver) == []


# --- usage and input errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["list-create"], KEY_ENV, "Partner endpoint base URL is not set"),
        (["list-create", "--url", "http://127.0.0.1:9"], {}, "partner API key is not set"),
        (["list-create", "--url", "http://partner.example"], KEY_ENV, "plain http"),
        (["list-create", "--url", "ftp://x"], KEY_ENV, "http:// or https://"),
        (["list-add", "--url", "http://127.0.0.1:9"], KEY_ENV, "needs a list id"),
        (["list-create", "--url", "http://127.0.0.1:9", "-H", "nope"], KEY_ENV, "NAME:VALUE"),
        (["identify", "--url", "http://127.0.0.1:9", "--var", "x"], KEY_ENV, "--var"),
        (["list-create", "--url", "http://127.0.0.1:9", "--auth", "oauth"], KEY_ENV, "oauth"),
        (["flow", "--url", "http://127.0.0.1:9", "--expect", "42"], KEY_ENV, "--expect"),
        (["flow", "--url", "http://127.0.0.1:9", "--list-id-path", "a..b"], KEY_ENV, "a..b"),
        (["list-add", "--url", "http://127.0.0.1:9", "--payload", "/nonexistent.json",
          "--list-id", "L"], KEY_ENV, "cannot read payload template"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(
    cli: RunCli, args: list[str], env: dict[str, str], message: str
) -> None:
    result = cli("mock", *args, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_insecure_http_allowed_on_request() -> None:
    from cohortctl.cli.destination_options import PartnerEndpoint
    from cohortctl.config import Config

    cfg = Config.load(env={})
    endpoint = PartnerEndpoint(
        url="http://partner.example", api_key=PARTNER_KEY, allow_insecure_http=True
    )
    destination = endpoint.destination(cfg)
    assert destination.base_url == "http://partner.example"

"""``cohortctl upload`` against the embedded fake Amplitude API, over loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cohortctl.cli import customer_options
from cohortctl.servers.amplitude.app import STORE_KEY, TRAFFIC_KEY
from cohortctl.servers.runner import BackgroundServer
from tests.credentials import API_KEY, SECRET_KEY


def write_ids(tmp_path: Path, ids: list[str], name: str = "ids.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def base_args(server: Any, path: Path, *extra: str) -> list[str]:
    return [
        "upload",
        str(path),
        "--name",
        "Churn risk",
        "--app-id",
        "153957",
        "--owner",
        "me@example.com",
        "--base-url",
        server.url,
        *extra,
    ]


def dry_run_bodies(cli: Any, path: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    args = [
        "upload",
        str(path),
        "--name",
        "N",
        "--app-id",
        "7",
        "--owner",
        "o@x.io",
        "--dry-run",
        "--output",
        "json",
        *extra,
    ]
    result = cli(*args, env=env, credentials=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_upload_small_file(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["alice", "bob", "", "alice", "carol"])
    result = cli(*base_args(amplitude_server, path))
    assert result.exit_code == 0, result.output
    store = amplitude_server.app[STORE_KEY]
    [cohort] = store.cohorts()
    assert store.user_ids(cohort.id) == {"alice", "bob", "carol"}
    out = result.stdout
    assert cohort.id in out and "Churn risk" in out
    assert "3 / 3" in out  # matched / totals
    assert "duplicates dropped" in out and "blank lines" in out


def test_upload_json_has_answers_and_summary(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["alice", "bob"])
    result = cli(*base_args(amplitude_server, path, "--output", "json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cohort_id = data["summary"]["cohort_id"]
    assert data["answers"][0]["cohortId"] == cohort_id
    assert data["summary"]["file"]["unique"] == 2
    assert data["summary"]["size"] == 2


def test_dry_run_sends_nothing_and_redacts(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, [f"u{i}" for i in range(100_003)])
    result = cli(*base_args(amplitude_server, path, "--dry-run"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "# 1/2 upload (100,000 ids)" in lines and "# 2/2 membership ADD (3 ids)" in lines
    assert "> POST /api/3/cohorts/upload HTTP/1.1" in lines
    assert "> POST /api/3/cohorts/membership HTTP/1.1" in lines
    assert f"> Host: {amplitude_server.url.removeprefix('http://')}" in lines
    assert "> Authorization: Basic ***redacted***" in lines
    # the ids in full, not summarised: every one of them, one per line
    assert '    "u0",' in lines and '    "u99999"' in lines and '        "u100002"' in lines
    assert "nothing was sent" in result.stderr
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []
    assert amplitude_server.app[STORE_KEY].cohorts() == []


def test_dry_run_works_without_credentials(cli, tmp_path: Path) -> None:
    data = dry_run_bodies(cli, write_ids(tmp_path, ["a"]))
    [request] = data["requests"]
    assert request["url"] == "https://amplitude.com/api/3/cohorts/upload"
    assert request["headers"]["Authorization"] == "Basic ***redacted***"
    assert request["body"] == {
        "name": "N",
        "app_id": 7,
        "id_type": "BY_USER_ID",
        "owner": "o@x.io",
        "published": True,
        "ids": ["a"],
    }


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--hidden"], {"published": False}),
        (["--existing-cohort-id", "1a2bc3d"], {"existing_cohort_id": "1a2bc3d"}),
        (["--strict-ids"], {"skip_invalid_ids": False}),
        (["--validate-only"], {"skip_save": True}),
        (["--group-type", "company"], {"cg": "company"}),
        (["--id-type", "amplitude"], {"id_type": "BY_AMP_ID"}),
    ],
)
def test_each_flag_changes_the_body(
    cli, tmp_path: Path, flags: list[str], expected: dict[str, Any]
) -> None:
    body = dry_run_bodies(cli, write_ids(tmp_path, ["1", "2"]), *flags)["requests"][0]["body"]
    for key, value in expected.items():
        assert body[key] == value
    optional = {"existing_cohort_id", "skip_invalid_ids", "skip_save", "cg"}
    assert set(body) & optional == set(expected) & optional


def test_region_and_column(cli, tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("email,user_id\nx@y.z,u1\nq@y.z,u2\n", encoding="utf-8")
    data = dry_run_bodies(cli, path, "--region", "eu", "--column", "user_id")
    assert data["requests"][0]["url"].startswith("https://analytics.eu.amplitude.com/")
    assert data["requests"][0]["body"]["ids"] == ["u1", "u2"]


def test_settings_from_env_and_profile(cli, isolated_env: Path, tmp_path: Path) -> None:
    isolated_env.write_text(
        "profiles:\n  default:\n    app_id: 99\n    owner: p@x.io\n    region: eu\n",
        encoding="utf-8",
    )
    path = write_ids(tmp_path, ["a"])
    result = cli(
        "upload", str(path), "--name", "N", "--dry-run", "--output", "json",
        env={"AMPLITUDE_APP_ID": "55"},
        credentials=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = json.loads(result.stdout)["requests"][0]
    assert request["body"]["app_id"] == 55 and request["body"]["owner"] == "p@x.io"
    assert "analytics.eu.amplitude.com" in request["url"]


def test_bad_app_id_is_usage_error(cli, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["a"])
    result = cli(
        "upload", str(path), "--name", "N", "--owner", "o@x.io", "--dry-run",
        env={"AMPLITUDE_APP_ID": API_KEY[:4] + "x"},
    )  # fmt: skip
    assert result.exit_code == 2 and "app id must be an integer" in result.stderr


def test_profile_credentials(cli, amplitude_server, isolated_env: Path, tmp_path: Path) -> None:
    isolated_env.write_text(
        "profiles:\n  prod:\n"
        f"    api_key: {API_KEY}\n    secret_key: {SECRET_KEY}\n"
        f"    base_url: {amplitude_server.url}\n    app_id: 1\n    owner: me@example.com\n",
        encoding="utf-8",
    )
    path = write_ids(tmp_path, ["alice"])
    result = cli("upload", str(path), "--name", "P", "--profile", "prod", credentials=False)
    assert result.exit_code == 0, result.output
    assert len(amplitude_server.app[STORE_KEY].cohorts()) == 1


def test_missing_credentials_is_usage_error(cli, amplitude_server, tmp_path: Path) -> None:
    result = cli(*base_args(amplitude_server, write_ids(tmp_path, ["a"])), credentials=False)
    assert result.exit_code == 2
    assert "AMPLITUDE_API_KEY" in result.stderr
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []


def test_insecure_http_refused(cli, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["a"])
    args = ["upload", str(path), "--name", "N", "--app-id", "1", "--owner", "o@x.io"]
    result = cli(*args, "--base-url", "http://amplitude.example.com")
    assert result.exit_code == 2 and "plain http" in result.stderr
    assert "--allow-insecure-http" in result.stderr


def test_250k_ids_arrive_whole(cli, amplitude_server, tmp_path: Path) -> None:
    ids = [f"user-{i}" for i in range(250_000)]
    result = cli(*base_args(amplitude_server, write_ids(tmp_path, ids), "--output", "json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    store = amplitude_server.app[STORE_KEY]
    assert store.user_ids(summary["cohort_id"]) == set(ids)
    traffic = amplitude_server.app[TRAFFIC_KEY]
    assert [r.path for r in traffic.requests()] == [
        "/api/3/cohorts/upload",
        "/api/3/cohorts/membership",
        "/api/3/cohorts/membership",
    ]
    assert traffic.max_in_flight <= 5
    assert summary["size"] == 250_000
    # plain progress when not a terminal: ids with separators, the request count, rate, end
    assert "membership ADD: 250,000/250,000 ids (100%), request 3/3, " in result.stderr
    assert "ids/s, done in " in result.stderr


def test_over_two_million_refused_before_sending(cli, amplitude_server, tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    path.write_text("\n".join(map(str, range(2_000_001))) + "\n", encoding="utf-8")
    result = cli(*base_args(amplitude_server, path))
    assert result.exit_code == 2
    assert "2,000,001" in result.stderr and "at most 2,000,000" in result.stderr
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []


def test_empty_file_refused(cli, amplitude_server, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    result = cli(*base_args(amplitude_server, path))
    assert result.exit_code == 2
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []


def test_wrong_secret_is_401_with_hint(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["a"])
    result = cli(
        *base_args(amplitude_server, path), env={"AMPLITUDE_SECRET_KEY": "wrong-secret-value"}
    )
    assert result.exit_code == 1
    assert "HTTP 401 unauthorized: invalid api key or secret key" in result.stderr
    assert "AMPLITUDE_SECRET_KEY" in result.stderr
    assert "wrong-secret-value" not in result.output


def test_400_shows_status_type_and_message(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["a"])
    args = base_args(amplitude_server, path)
    args[args.index("me@example.com")] = "not-an-email"
    result = cli(*args)
    assert result.exit_code == 1
    assert "HTTP 400 invalid_request" in result.stderr and "owner" in result.stderr


def test_strict_ids_rejects_invalid_amplitude_ids(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, ["1", str(2**64)])
    result = cli(*base_args(amplitude_server, path, "--id-type", "amplitude", "--strict-ids"))
    assert result.exit_code == 1 and "HTTP 400" in result.stderr
    assert amplitude_server.app[STORE_KEY].cohorts() == []


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., Any]]:
    """Start tiny upload endpoints that give the scripted answers in turn, then the last."""
    started: list[BackgroundServer] = []

    def start(*answers: tuple[int, dict[str, Any], dict[str, str]]) -> Any:
        calls: list[str] = []

        async def upload(request: web.Request) -> web.Response:
            calls.append(request.headers.get("Authorization", ""))
            status, body, headers = answers[min(len(calls), len(answers)) - 1]
            return web.json_response(body, status=status, headers=headers)

        def factory() -> web.Application:
            app = web.Application()
            app.router.add_post("/api/3/cohorts/upload", upload)
            return app

        server = BackgroundServer(factory).start()
        server.calls = calls  # type: ignore[attr-defined]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


OK_ANSWER = (200, {"cohortId": "c1", "metadata": {"matched": 1, "totals": 1}}, {})


def test_429_then_success_honours_retry_after(
    cli, scripted_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = {"error": {"http_code": 429, "type": "too_many_requests", "message": "slow"}}
    server = scripted_server((429, error, {"Retry-After": "3"}), OK_ANSWER)
    waits: list[float] = []
    monkeypatch.setattr(customer_options, "sleep", waits.append)
    result = cli(*base_args(server, write_ids(tmp_path, ["a"])))
    assert result.exit_code == 0, result.output
    assert waits == [3.0]
    assert len(server.calls) == 2 and all(c.startswith("Basic ") for c in server.calls)
    assert "c1" in result.stdout


def test_403_older_error_shape(cli, scripted_server, tmp_path: Path) -> None:
    error = {"error": {"message": "Missing secret key", "code": 1001, "metadata": {}}}
    server = scripted_server((403, error, {}))
    result = cli(*base_args(server, write_ids(tmp_path, ["a"])))
    assert result.exit_code == 1
    assert "HTTP 403 1001: Missing secret key" in result.stderr
    assert "AMPLITUDE_API_KEY" in result.stderr and len(server.calls) == 1


def test_network_error_retried_then_fails(cli, tmp_path: Path, refused_url: str) -> None:
    args = ["upload", str(write_ids(tmp_path, ["a"])), "--name", "N", "--app-id", "1"]
    result = cli(*args, "--owner", "o@x.io", "--base-url", refused_url, "--retries", "2")
    assert result.exit_code == 1
    assert "connection refused after 3 attempts" in result.stderr


def test_upload_from_stdin(cli, amplitude_server) -> None:
    args = base_args(amplitude_server, Path("-"))
    result = cli(*args, input="alice\nbob\n")
    assert result.exit_code == 0, result.output
    store = amplitude_server.app[STORE_KEY]
    [cohort] = store.cohorts()
    assert store.user_ids(cohort.id) == {"alice", "bob"}

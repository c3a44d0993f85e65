"""--dry-run --as-curl: runnable curl commands, credentials only as $ENV references."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import API_KEY, PARTNER_KEY, PARTNER_SECRET, SECRET_KEY

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _commands(stdout: str) -> list[str]:
    blocks = [b.strip() for b in stdout.split("\n\n") if b.strip()]
    return ["\n".join(line for line in b.splitlines() if not line.startswith("#")) for b in blocks]


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _journal(server: BackgroundServer) -> list[Any]:
    answer = httpx.get(f"{server.url}/_cohortctl/journal", params={"limit": 100})
    return list(answer.json()["requests"])


@needs_curl
@pytest.mark.parametrize("auth", ["basic", "bearer", "header"])
def test_mock_as_curl_runs_and_reaches_the_receiver(
    cli: RunCli, partner_server_factory: Any, auth: str
) -> None:
    secret = PARTNER_SECRET if auth == "basic" else ""
    receiver = partner_server_factory(api_key=PARTNER_KEY, secret=secret, auth=auth)
    env = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY, "COHORTCTL_PARTNER_APP_ID": "app-1"}
    if secret:
        env["COHORTCTL_PARTNER_SECRET"] = secret
    result = cli(
        "mock", "identify", "--url", receiver.url, "--auth", auth, "--id", "u1", "--id", "u2",
        "--dry-run", "--as-curl", env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result
    assert "$COHORTCTL_PARTNER_API_KEY" in result.stdout
    commands = _commands(result.stdout)
    assert len(commands) == 2 and all(c.startswith("curl ") for c in commands)
    assert _journal(receiver) == []
    for command in commands:
        done = _run(command + " --fail --output /dev/null --write-out '%{http_code}'", env)
        assert done.stdout == "200", (command, done.stdout, done.stderr)
    assert len(_journal(receiver)) == 2


def test_as_curl_needs_dry_run(cli: RunCli) -> None:
    result = cli("mock", "identify", "--url", "http://127.0.0.1:9", "--as-curl")
    assert result.exit_code == 2 and "--dry-run" in result.stderr


def test_a_credential_header_becomes_its_own_variable(cli: RunCli) -> None:
    result = cli(
        "mock", "identify", "--url", "https://p.example", "-H", "X-Token: t0ps3cret",
        "--dry-run", "--as-curl", env={"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY},
    )  # fmt: skip
    assert result.exit_code == 0, result
    assert '--header "X-Token: $COHORTCTL_HEADER_X_TOKEN"' in result.stdout
    assert "t0ps3cret" not in result.stdout


@needs_curl
def test_upload_as_curl_creates_the_cohort(
    cli: RunCli, amplitude_server: BackgroundServer, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\nu2\nu3\n", encoding="utf-8")
    result = cli(
        "upload", str(ids), "--name", "Curl", "--app-id", "1", "--owner", "me@example.com",
        "--base-url", amplitude_server.url, "--dry-run", "--as-curl",
    )  # fmt: skip
    assert result.exit_code == 0, result
    [command] = _commands(result.stdout)
    assert '--user "$AMPLITUDE_API_KEY:$AMPLITUDE_SECRET_KEY"' in command
    done = _run(command, {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY})
    assert done.returncode == 0, done.stderr
    assert '"cohortId"' in done.stdout


@needs_curl
def test_mock_webhook_dry_run_shared_format_and_as_curl(
    cli: RunCli, partner_server: BackgroundServer
) -> None:
    url = f"{partner_server.url}/webhook"
    hook = ["mock", "webhook", "--url", url, "--id", "u1", "--id", "u2", "-H", "X-Hook:s3cr3t"]
    shown = cli(*hook, "--dry-run")
    assert shown.exit_code == 0, shown
    lines = shown.stdout.splitlines()
    assert lines[:2] == ["# 1/1 webhook, 2 user(s) entering", "> POST /webhook HTTP/1.1"]
    assert "s3cr3t" not in shown.stdout and '"user_id": "u2"' in shown.stdout
    result = cli(*hook, "--dry-run", "--as-curl")
    assert result.exit_code == 0, result
    [command] = _commands(result.stdout)
    assert '--header "X-Hook: $COHORTCTL_HEADER_X_HOOK"' in command and "s3cr3t" not in command
    done = _run(command + " --fail --output /dev/null --write-out '%{http_code}'",
                {"COHORTCTL_HEADER_X_HOOK": "s3cr3t"})  # fmt: skip
    assert done.stdout == "200", (command, done.stdout, done.stderr)
    members = httpx.get(f"{partner_server.url}/_cohortctl/webhooks/cohorts/cohortctl_mock_1")
    assert members.json()["members"] == ["u1", "u2"]

"""``cohortctl serve partner`` as a user runs it: a subprocess printing its URL on stdout."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from cohortctl.cli.serve_partner import parse_rate
from cohortctl.errors import InputError
from cohortctl.partner import payloads
from tests.conftest import RunCli, assert_no_secrets
from tests.credentials import PARTNER_KEY, PARTNER_SECRET
from tests.test_cli_serve import serve

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
LIST = payloads.list_create("Churn risk", "c42")


def test_serve_partner_prints_its_url_and_answers() -> None:
    with serve("partner", "--port", "0", env=KEY_ENV) as served:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", served.url), served.url
        with httpx.Client(base_url=served.url, timeout=10) as client:
            assert client.post("/lists", json=LIST, auth=(PARTNER_KEY, "")).status_code == 200
            assert client.post("/lists", json=LIST, auth=("wrong", "")).status_code == 401
            assert client.get("/_cohortctl/health").json() == {"ok": True}
    assert served.process.returncode == 130
    assert served.stdout == served.url + "\n"  # the URL line and nothing else
    assert f"partner receiver listening on {served.url} (auth: basic, db: :memory:)" in (
        served.stderr
    )
    assert "Traceback" not in served.stderr
    assert_no_secrets(served.url, served.stderr)


def test_serve_partner_without_a_key_accepts_anything() -> None:
    with serve("partner", env={}) as served, httpx.Client(base_url=served.url) as client:
        assert client.post("/lists", json=LIST).status_code == 200
    assert "accepting any credentials" in served.stderr


def test_serve_partner_options_reach_the_receiver(tmp_path: Path) -> None:
    known = tmp_path / "known.txt"
    known.write_text("k1\nk2\n", encoding="utf-8")
    db = tmp_path / "receiver.sqlite"
    args = ["partner", "--known-users", str(known), "--db", str(db), "--auth", "any"]
    env = {**KEY_ENV, "COHORTCTL_PARTNER_SECRET": PARTNER_SECRET}
    with (
        serve(*args, "--rate-limit", "6000/m", env=env) as served,
        httpx.Client(base_url=served.url, timeout=10) as client,
    ):
        created = client.post("/lists", json=LIST, auth=(PARTNER_KEY, PARTNER_SECRET))
        assert created.status_code == 200
        add = f"/lists/{created.json()['listId']}/add"
        headers = {"Authorization": f"Bearer {PARTNER_KEY}"}
        ok = client.post(add, json=payloads.list_members(["k1"]), headers=headers)
        assert ok.status_code == 200
        unknown = client.post(add, json=payloads.list_members(["who"]), headers=headers)
        assert unknown.status_code == 404
    assert "accepting only the 2 user id(s)" in served.stderr
    assert f"(auth: any, db: {db})" in served.stderr
    assert db.exists()
    assert_no_secrets(served.stdout, served.stderr)


def test_serve_partner_fault_and_contract_options_reach_the_receiver() -> None:
    args = ["partner", "--fail-rate", "1", "--fail-status", "507", "--seed", "3"]
    with (
        serve(*args, "--never-404", "--accept-any-key", env=KEY_ENV) as served,
        httpx.Client(base_url=served.url, timeout=10) as client,
    ):
        assert client.post("/lists", json=LIST, auth=("wrong", "")).status_code == 507
    assert "breaking the contract on purpose: --accept-any-key, --never-404" in served.stderr


@pytest.mark.parametrize("value", ["fast", "10", "0/s", "-1/s", "10/h"])
def test_bad_rate_limit_is_a_usage_error(cli: RunCli, value: str) -> None:
    result = cli("serve", "partner", "--rate-limit", value)
    assert result.exit_code == 2
    assert "--rate-limit" in result.stderr


def test_parse_rate() -> None:
    assert parse_rate("10/s") == 10
    assert parse_rate("0.5/s") == 0.5
    assert parse_rate("120/m") == 2
    assert parse_rate(" 30 / min ") == 0.5
    with pytest.raises(InputError):
        parse_rate("1/d")


def test_missing_known_users_file_is_a_usage_error(cli: RunCli, tmp_path: Path) -> None:
    result = cli("serve", "partner", "--known-users", str(tmp_path / "nope.txt"))
    assert result.exit_code == 2
    assert "nope.txt" in result.stderr


@pytest.mark.parametrize("option", [["--fail-rate", "0.5"], ["--delay-ms", "10"], ["--db", "x.db"]])
def test_forward_refuses_the_receivers_options(cli: RunCli, option: list[str]) -> None:
    result = cli("serve", "partner", "--forward", "http://127.0.0.1:9", *option)
    assert result.exit_code == 2
    assert "cannot be combined with it" in result.stderr


def test_help_documents_the_options(cli: RunCli) -> None:
    result = cli("serve", "partner", "--help")
    assert result.exit_code == 0
    for text in ("COHORTCTL_PARTNER_API_KEY", "--rate-limit", "--reset-rate", "--known-users"):
        assert text in result.stdout
    assert "--accept-any-key" not in result.stdout

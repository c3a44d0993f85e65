"""``--har`` in webhook mode: sync, check, mock flow and mock webhook record every message."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx

from tests.conftest import RunCli
from tests.har_schema import assert_valid_har
from tests.partner_fixtures import PartnerFactory

HOOK = "hook-secret-7731"
COHORT = ("--cohort-name", "Power Users", "--cohort-id", "c7")


def _members(url: str) -> list[str]:
    answer = httpx.get(f"{url}/_cohortctl/webhooks/cohorts/c7", timeout=60).json()
    members: list[str] = answer["members"]
    return members


def _assert_secret_free(path: Path) -> None:
    raw = path.read_text(encoding="utf-8")
    assert HOOK not in raw
    assert base64.b64encode(HOOK.encode()).decode() not in raw


def test_sync_in_webhook_mode_records_har_and_replays(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    snapshot = tmp_path / "cohort.csv"
    snapshot.write_text("user_id\n" + "".join(f"u{i}\n" for i in range(25)))
    har = tmp_path / "run.har"
    result = cli("sync", str(snapshot), "--url", f"{server.url}/webhook", *COHORT,
                 "--mode", "webhook", "-H", f"X-Hook:{HOOK}", "--batch-size", "10",
                 "--har", str(har), "-o", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = assert_valid_har(har)["log"]["entries"]
    assert [e["_call"] for e in entries] == ["webhook"] * 3
    assert all(e["request"]["url"] == f"{server.url}/webhook" for e in entries)
    assert all(e["response"]["status"] == 200 for e in entries)
    bodies = [json.loads(e["request"]["postData"]["text"]) for e in entries]
    assert sum(len(b["users"]) for b in bodies) == 25
    headers = {h["name"]: h["value"] for h in entries[0]["request"]["headers"]}
    assert headers["X-Hook"] != HOOK
    _assert_secret_free(har)
    fresh = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    replayed = cli("replay", str(har), "--url", fresh.url, "-H", f"X-Hook:{HOOK}", "-o", "json")
    assert replayed.exit_code == 0, replayed.output
    assert _members(fresh.url) == _members(server.url)


def test_check_and_mock_in_webhook_mode_record_har(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    url = f"{server.url}/webhook"
    runs = {
        "check": ("check", "--url", url, "--mode", "webhook", "-H", f"X-Hook:{HOOK}"),
        "flow": ("mock", "flow", "--url", url, "--mode", "webhook", "-H", f"X-Hook:{HOOK}"),
        "webhook": ("mock", "webhook", "--url", url, "-H", f"X-Hook:{HOOK}"),
    }
    for name, args in runs.items():
        har = tmp_path / f"{name}.har"
        result = cli(*args, "--har", str(har))
        assert result.exit_code == 0, (name, result.output)
        entries = assert_valid_har(har)["log"]["entries"]
        assert entries, name
        assert all(e["_call"] == "webhook" for e in entries), name
        _assert_secret_free(har)


def test_replay_sends_no_redacted_header_and_names_it(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    har = tmp_path / "hook.har"
    result = cli("mock", "webhook", "--url", f"{server.url}/webhook", "-H", f"X-Hook:{HOOK}",
                 "--har", str(har))  # fmt: skip
    assert result.exit_code == 0, result.output
    fresh = partner_server_factory()  # takes any X-Hook, so what was sent shows in the journal
    missing = cli("replay", str(har), "--url", fresh.url)
    assert "the recording hid X-Hook" in missing.stderr and "-H 'X-Hook:VALUE'" in missing.stderr
    journal = httpx.get(f"{fresh.url}/_cohortctl/webhooks/journal", timeout=60).text
    assert "redacted" not in journal
    given = cli("replay", str(har), "--url", fresh.url, "-H", f"X-Hook:{HOOK}")
    assert given.exit_code == 0, given.output
    assert "the recording hid" not in given.stderr

"""HAR files survive the ways a run ends: Ctrl-C and SIGTERM close them, a kill leaves them
readable by ``replay``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cohortctl.http.har import read_har
from cohortctl.partner import payloads
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.har_schema import assert_valid_har
from tests.partner_fixtures import PartnerFactory

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}


def _entries(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _sync(snapshot: Path, url: str, tmp_path: Path, har: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "cohortctl", "sync", str(snapshot), "--url", url,
            "--cohort-name", "Big", "--cohort-id", "b1", "--batch-size", "100", "--workers", "2",
            "--state", str(tmp_path / "state.db"), "--har", str(har)]  # fmt: skip
    return subprocess.Popen(args, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_sync_interrupted_or_killed_leaves_a_usable_har(
    partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    server = partner_server_factory(api_key=PARTNER_KEY, delay_ms=15)
    snapshot = tmp_path / "ids.txt"
    snapshot.write_text("".join(f"u{n}\n" for n in range(20_000)))
    for number, how in enumerate((signal.SIGINT, signal.SIGTERM, signal.SIGKILL)):
        har = tmp_path / f"run-{number}.har"
        proc = _sync(snapshot, server.url, tmp_path, har)
        _wait_until(lambda har=har: _entries(har) >= 10, "the sync never got going")
        proc.send_signal(how)
        _, stderr = proc.communicate(timeout=60)
        if how is signal.SIGKILL:
            log = read_har(har)  # cut short: every complete entry is kept
            assert len(log["entries"]) >= 10
        else:
            assert proc.returncode == 130, stderr
            entries = assert_valid_har(har)["log"]["entries"]
            assert len(entries) >= 10
        assert PARTNER_KEY not in har.read_text()


def test_the_proxy_closes_its_recording_on_sigterm_and_ctrl_c(
    partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    receiver = partner_server_factory(api_key=PARTNER_KEY)
    for number, how in enumerate((signal.SIGTERM, signal.SIGINT)):
        har = tmp_path / f"proxy-{number}.har"
        args = [sys.executable, "-m", "cohortctl", "serve", "partner", "--forward",
                receiver.url, "--record", str(har)]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            body = payloads.list_create("Captured", f"c{number}")
            answer = httpx.post(f"{url}/lists", json=body, auth=(PARTNER_KEY, ""))
            assert answer.status_code == 200
        finally:
            proc.send_signal(how)
            _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        (entry,) = assert_valid_har(har)["log"]["entries"]
        assert entry["_verdict"] == "valid" and entry["response"]["status"] == 200
        assert json.loads(entry["response"]["content"]["text"])["listId"]


def test_a_proxy_recording_replays_onto_a_fresh_receiver(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    receiver = partner_server_factory(api_key=PARTNER_KEY)
    har = tmp_path / "proxy.har"
    args = [sys.executable, "-m", "cohortctl", "serve", "partner", "--forward", receiver.url,
            "--record", str(har)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        flow = cli("mock", "flow", "--url", url, "--mode", "both", env=ENV)
        assert flow.exit_code == 0, flow.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    fresh = partner_server_factory(api_key=PARTNER_KEY)
    result = cli("replay", str(har), "--url", fresh.url, env=ENV)
    assert result.exit_code == 0, result.output
    before = httpx.get(f"{receiver.url}/_cohortctl/state").json()
    after = httpx.get(f"{fresh.url}/_cohortctl/state").json()
    assert after["lists"] == before["lists"] and after["traits"] == before["traits"]

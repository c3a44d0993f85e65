"""The inspector page in a real headless Chromium: loads, follows a sync live, no errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from cohortctl.servers.inspector import page
from cohortctl.servers.partner.forward import ForwardSettings, create_forward_app
from cohortctl.servers.runner import BackgroundServer
from tests.browser import CHROMIUM, artefact_dir, open_page
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory

KEY_ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium)"
)


def test_the_page_is_self_contained() -> None:
    html = page().decode()
    for external in ("http://", "https://", '<link rel="stylesheet"', "src="):
        assert external not in html.replace("http://www.w3.org/2000/svg", ""), external


def test_inspect_answers_what_the_page_polls(partner_server_factory: PartnerFactory) -> None:
    receiver = partner_server_factory()
    ui = httpx.get(f"{receiver.url}/_cohortctl/ui")
    assert ui.status_code == 200 and ui.headers["Content-Type"].startswith("text/html")
    httpx.post(f"{receiver.url}/lists", json={"name": "bad"})
    data = httpx.get(f"{receiver.url}/_cohortctl/inspect", params={"since": 0}).json()
    assert data["mode"] == "receiver" and data["total"] == 1
    (row,) = data["requests"]
    assert row["call"] == "list-create" and row["status"] == 400
    assert row["problem"] == "invalid request: context is required"
    assert len(data["series"]) == 60 and sum(p["requests"] for p in data["series"]) == 1
    later = httpx.get(f"{receiver.url}/_cohortctl/inspect", params={"since": 1}).json()
    assert later["requests"] == []


def _sync(cli: RunCli, url: str, tmp_path: Path, count: int) -> None:
    snapshot = tmp_path / "members.txt"
    snapshot.write_text("".join(f"user-{n}\n" for n in range(count)))
    result = cli("sync", str(snapshot), "--url", url, "--cohort-name", "Power Users",
                 "--cohort-id", "p1", "--batch-size", "40", "--state", str(tmp_path / "s.db"),
                 env=KEY_ENV)  # fmt: skip
    assert result.exit_code == 0, result.output


def _property_flow(cli: RunCli, url: str) -> None:
    result = cli("mock", "flow", "--mode", "property", "--url", url, env=KEY_ENV)
    assert result.exit_code == 0, result.output


@needs_chromium
def test_the_page_follows_a_sync_live_in_headless_chromium(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    receiver = partner_server_factory(api_key=PARTNER_KEY)
    shots = artefact_dir(tmp_path / "artefacts")

    async def scenario() -> tuple[str, str, int, list[str]]:
        async with open_page(tmp_path / "profile", tmp_path / "chromium.log") as tab:
            await tab.goto(f"{receiver.url}/_cohortctl/ui")
            await tab.wait_for_text(lambda t: "Waiting for requests" in t, "its empty state")
            await asyncio.to_thread(_sync, cli, receiver.url, tmp_path, 200)  # page stays open
            await asyncio.to_thread(_property_flow, cli, receiver.url)
            text = await tab.wait_for_text(
                lambda t: "200 members" in t and "10 request(s)" in t, "the sync"
            )
            rows = await tab.evaluate("document.querySelectorAll('#requests tbody tr').length")
            await tab.evaluate("document.querySelector('#requests tbody tr').click()")
            viewer = await tab.evaluate("document.getElementById('viewer').innerText")
            await tab.screenshot(shots / "inspector-receiver.png")
            return text, str(viewer), int(rows), list(tab.errors)

    text, viewer, rows, errors = asyncio.run(scenario())
    assert errors == []
    assert rows == 10
    assert "[Amplitude] Power Users: p1" in text and "200 members" in text
    assert "[Amplitude] cohortctl mock cohort: cohortctl_mock_1" in text
    assert "2 true" in text and "1 false" in text
    assert "list-create" in text and "list-add" in text and "valid" in text
    assert "batch" in viewer and "updated" in viewer  # the last request, both bodies
    assert (shots / "inspector-receiver.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
def test_forward_mode_shows_the_list_ids_seen_in_the_traffic(
    cli: RunCli, partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    receiver = partner_server_factory(api_key=PARTNER_KEY)
    settings = ForwardSettings(receiver.url, timeout=5)
    shots = artefact_dir(tmp_path / "artefacts")
    with BackgroundServer(lambda: create_forward_app(settings)) as proxy:
        flow = cli("mock", "flow", "--url", proxy.url, "--id", "a", "--id", "b", "--id", "c",
                   env=KEY_ENV)  # fmt: skip
        assert flow.exit_code == 0, flow.output
        httpx.post(f"{proxy.url}/identify", json={"type": "identify"})  # judged invalid
        batch = cli("mock", "identify-batch", "--url", proxy.url, "--id", "a", "--id", "b",
                    env=KEY_ENV)  # fmt: skip
        assert batch.exit_code == 0, batch.output

        async def scenario() -> tuple[str, list[str]]:
            async with open_page(tmp_path / "profile", tmp_path / "chromium.log") as tab:
                await tab.goto(f"{proxy.url}/_cohortctl/ui")
                text = await tab.wait_for_text(lambda t: "5 request(s)" in t, "the flow")
                await tab.screenshot(shots / "inspector-forward.png")
                return text, list(tab.errors)

        text, errors = asyncio.run(scenario())
    assert errors == []
    assert "lists seen in the traffic" in text.lower() and "validating proxy" in text
    assert "+3 / -1" in text
    assert "[Amplitude] cohortctl mock cohort: cohortctl_mock_1" in text and "2 true" in text
    assert "invalid request: context is required" in text

"""Through a pseudo-terminal: colours, progress and widths as a person sees them."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from cohortctl.servers.runner import BackgroundServer
from tests.credentials import PARTNER_KEY
from tests.partner_fixtures import PartnerFactory

GREEN, RED = "\x1b[32m", "\x1b[31m"


def run_in_pty(args: list[str], *, columns: int, env: dict[str, str] | None = None) -> str:
    """Run ``cohortctl ARGS`` on a pseudo-terminal of ``columns`` x 40; everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    full_env.update({"TERM": "xterm-256color", "COLUMNS": str(columns), **(env or {})})
    process = subprocess.Popen(
        [sys.executable, "-m", "cohortctl", *args],
        stdin=slave, stdout=slave, stderr=slave, env=full_env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            process.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the other side closed (Linux: EIO)
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=60)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def _flow(server: BackgroundServer, key: str) -> list[str]:
    return ["mock", "flow", "--url", server.url, "--api-key", key]


@pytest.mark.parametrize("columns", [80, 160])
def test_status_colours_on_a_terminal(partner_server: BackgroundServer, columns: int) -> None:
    good = run_in_pty(_flow(partner_server, PARTNER_KEY), columns=columns)
    assert f"{GREEN}200" in good
    bad = run_in_pty(_flow(partner_server, "wrong-key"), columns=columns)
    assert f"{RED}401" in bad


def test_never_colour_with_no_color(partner_server: BackgroundServer) -> None:
    text = run_in_pty(_flow(partner_server, PARTNER_KEY), columns=80, env={"NO_COLOR": "1"})
    assert "\x1b[3" not in text  # no foreground colour at all
    assert "200" in text


def test_never_colour_through_a_pipe(partner_server: BackgroundServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cohortctl", *_flow(partner_server, PARTNER_KEY), "-v"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout + done.stderr
    assert "< HTTP/1.1 200 OK" in done.stderr


def test_verbose_status_line_is_coloured_on_a_terminal(partner_server: BackgroundServer) -> None:
    text = run_in_pty([*_flow(partner_server, PARTNER_KEY), "-v"], columns=160)
    assert f"{GREEN}< HTTP/1.1 200 OK" in text


@pytest.mark.parametrize("columns", [80, 160])
def test_sync_progress_on_a_terminal(
    partner_server_factory: PartnerFactory, tmp_path: Path, columns: int
) -> None:
    slow = partner_server_factory(api_key=PARTNER_KEY, delay_ms=40)  # so the bar is drawn
    snapshot = tmp_path / "members.csv"
    snapshot.write_text("user_id\n" + "".join(f"u{n}\n" for n in range(3000)), encoding="utf-8")
    text = run_in_pty(
        ["sync", str(snapshot), "--url", slow.url, "--workers", "1", "--cohort-id", "c1",
         "--cohort-name", "Power Users", "--batch-size", "100", "--api-key", PARTNER_KEY],
        columns=columns, env={"COHORTCTL_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert "/3,000 users (" in text  # the bar: thousands separators, share done
    assert "ETA " in text and "users/s" in text
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    visible = [line for line in lines if "\x1b" not in line]
    assert all(len(line) <= columns for line in visible), max(visible, key=len)


def test_check_colours_each_answer_status(partner_server_factory: PartnerFactory) -> None:
    good = partner_server_factory(api_key=PARTNER_KEY)
    text = run_in_pty(["check", "--url", good.url, "--api-key", PARTNER_KEY], columns=160)
    assert f"{GREEN}200" in text and f"{RED}401" in text and f"{RED}400" in text
    plain = run_in_pty(["check", "--url", good.url, "--api-key", PARTNER_KEY], columns=160,
                       env={"NO_COLOR": "1"})  # fmt: skip
    assert "\x1b[3" not in plain.replace("\x1b[3m", "")  # italics of the title aside


def test_check_colours_throttling_and_redirects_yellow() -> None:
    from cohortctl.cli.check import _actual_cell
    from cohortctl.partner.conformance.reports import CaseResult

    for status, colour in ((429, "yellow"), (307, "yellow"), (200, "green"), (503, "red")):
        case = CaseResult("c", "g", "fail", "2xx", f"{status} x", requests=[{"status": status}])
        cell = _actual_cell(case, case.actual)
        assert [str(span.style) for span in cell.spans] == [colour], status
    skipped = CaseResult("c", "g", "skip", "2xx", "skipped", requests=[{"status": 200}])
    assert _actual_cell(skipped, "skipped") == "skipped"


@pytest.mark.parametrize("columns", [80, 160])
def test_the_demo_keeps_words_whole(columns: int) -> None:
    text = run_in_pty(["demo", "--side", "partner"], columns=columns)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\r", "")
    lines = plain.split("\n")
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    for word in ("list-create", "list-remove", "/lists/1/remove", "identify-batch"):
        assert word in plain, word
    assert "demo complete" in plain


def _visible(text: str) -> list[str]:
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")
    return [line for line in plain.split("\n") if line.strip()]


def test_quiet_leaves_only_the_summary_line_and_errors(
    partner_server: BackgroundServer, amplitude_server: BackgroundServer, tmp_path: Path
) -> None:
    from tests.credentials import API_KEY, SECRET_KEY

    key = ["--api-key", PARTNER_KEY]
    flow = _visible(run_in_pty([*_flow(partner_server, PARTNER_KEY), "-q"], columns=80))
    assert flow == ["3 request(s): 3 passed, 0 failed"]
    check = _visible(run_in_pty(["check", "--url", partner_server.url, *key, "-q"], columns=80))
    assert len(check) == 1 and check[0].startswith("run ") and " 0 failed, " in check[0]
    refused = _visible(run_in_pty([*_flow(partner_server, "wrong-key"), "-q"], columns=80))
    assert refused[0] == "3 request(s): 0 passed, 1 failed, 2 skipped"
    assert len(refused) == 2 and refused[1].startswith("error: ")
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"u{n}\n" for n in range(2500)), encoding="utf-8")
    upload = _visible(run_in_pty(
        ["upload", str(ids), "--name", "Q", "--app-id", "1", "--owner", "me@example.com",
         "--base-url", amplitude_server.url, "-q"],
        columns=80, env={"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY},
    ))  # fmt: skip
    assert len(upload) == 1 and "2,500 ids sent in 1 request(s)" in upload[0], upload


def test_replay_quiet_leaves_only_the_summary_line(
    partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    original = partner_server_factory(api_key=PARTNER_KEY)
    har = tmp_path / "flow.har"
    recorded = run_in_pty([*_flow(original, PARTNER_KEY), "--har", str(har)], columns=80)
    assert "3 passed" in recorded
    fresh = partner_server_factory(api_key=PARTNER_KEY)
    args = ["replay", str(har), "--url", fresh.url, "--api-key", PARTNER_KEY]
    assert _visible(run_in_pty([*args, "-q"], columns=80)) == [
        "3 request(s) replayed: 0 did not match"
    ]
    again = _visible(run_in_pty([*args[:-1], "wrong-key", "-q"], columns=80))
    assert again[0].startswith("3 request(s) replayed: ") and again[-1].startswith("error: ")


def test_upload_progress_counts_ids(amplitude_server: BackgroundServer, tmp_path: Path) -> None:
    from tests.credentials import API_KEY, SECRET_KEY

    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"user-{n}\n" for n in range(250_000)), encoding="utf-8")
    text = run_in_pty(
        ["upload", str(ids), "--name", "P", "--app-id", "1", "--owner", "me@example.com",
         "--base-url", amplitude_server.url],
        columns=80, env={"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY},
    )  # fmt: skip
    assert "/250,000 ids (" in text and "ids/s" in text  # ids, separators, rate

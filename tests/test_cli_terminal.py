"""Through a pseudo-terminal: colours, progress and widths as a person sees them."""

from __future__ import annotations

import fcntl
import os
import pty
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

"""Shared fixtures: an isolated config dir, a secret-scanning CLI runner, real servers.

Every CLI test goes through ``cli``: it runs a command with test credentials in the
environment and fails if any of them appears in stdout or stderr.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest
from typer.testing import CliRunner

from cohortctl.cli import app
from tests.credentials import API_KEY, SECRET_KEY, SECRETS

pytest_plugins = ["tests.servers_fixtures", "tests.partner_fixtures", "tests.partners.fixtures"]

# Started in the background by a shell (`cmd &`, nohup), pytest inherits SIGINT ignored, and
# so would every cohortctl it starts: the Ctrl-C tests would then pass a signal no one gets.
# A handler of our own is reset to the default in the children at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


_SCRUBBED_ENV = (
    "AMPLITUDE_API_KEY",
    "AMPLITUDE_SECRET_KEY",
    "AMPLITUDE_REGION",
    "AMPLITUDE_BASE_URL",
    "AMPLITUDE_APP_ID",
    "AMPLITUDE_OWNER",
    "COHORTCTL_PROFILE",
    "COHORTCTL_PARTNER_URL",
    "COHORTCTL_PARTNER_API_KEY",
    "COHORTCTL_PARTNER_SECRET",
    "COHORTCTL_PARTNER_AUTH",
    "COHORTCTL_PARTNER_APP_ID",
    "GITHUB_STEP_SUMMARY",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the developer's config or environment; config lives in tmp."""
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "cohortctl-config.yaml"
    monkeypatch.setenv("COHORTCTL_CONFIG", str(config))
    monkeypatch.setenv("COHORTCTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return config


@pytest.fixture(autouse=True)
def no_real_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The customer-side commands record their retry and poll waits instead of sleeping."""
    from cohortctl.cli import customer_options

    waits: list[float] = []
    monkeypatch.setattr(customer_options, "sleep", waits.append)
    return waits


@pytest.fixture
def held_port() -> Iterator[socket.socket]:
    """A loopback socket bound for the whole test and not listening: connections to its port
    are refused at once, and no other server (of this suite or another) can take the port."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held


@pytest.fixture
def refused_url(held_port: socket.socket) -> str:
    """``http://127.0.0.1:PORT`` of :func:`held_port`: nothing answers, every connection is
    refused."""
    return f"http://127.0.0.1:{held_port.getsockname()[1]}"


def assert_no_secrets(*texts: str) -> None:
    """Fail if any test credential appears in any of ``texts``."""
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a secret leaked into command output"


class CliResult:
    """What a CLI run produced: exit code, stdout, stderr."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return f"CliResult(exit={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


RunCli = Callable[..., CliResult]


@pytest.fixture
def cli() -> Iterator[RunCli]:
    """Run ``cohortctl ARGS`` in-process with Amplitude test credentials set; scan output."""

    def run(
        *args: str,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        credentials: bool = True,
    ) -> CliResult:
        full_env = {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY}
        if not credentials:
            full_env = {}
        full_env.update(env or {})
        runner = CliRunner()
        result = runner.invoke(app, list(args), input=input, env=full_env, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        res = CliResult(result.exit_code, result.stdout, result.stderr)
        assert_no_secrets(res.stdout, res.stderr)
        assert "Traceback" not in res.output, res.output
        return res

    yield run


def cli_process(
    *args: str, stdout: IO[str] | int, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``cohortctl ARGS`` in a real process writing its stdout to ``stdout`` (a file, a device);
    the environment is this one plus ``env``. stderr is captured."""
    return subprocess.run(
        [sys.executable, "-m", "cohortctl", *args],
        stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def cli_into_a_full_stdout(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`cli_process` with stdout on ``/dev/full`` (the test skips where there is none)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this machine")
    with open("/dev/full", "w") as full:
        return cli_process(*args, stdout=full, env=env)

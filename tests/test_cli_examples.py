"""Every example at the end of a command's help runs as written, offline.

The heading of each Examples block names what it runs against (``cohortctl.cli.examples.
SETUPS``): the embedded fake of Amplitude or the reference partner receiver, and the
variables exported. This test starts those servers and sets those variables, then runs each
example's words. The one liberty taken: the examples' fixed ports (8080, 8600) become the
servers' free ports, since parallel test runs cannot share a fixed port. A server example
(``serve ... &``) is started as a process and must print its URL.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cohortctl.cli.examples import EXAMPLES, setup_of
from cohortctl.servers.amplitude import store
from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import API_KEY, PARTNER_KEY, SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
PARTNER_URL = "http://127.0.0.1:8080"
AMPLITUDE_URL = "http://127.0.0.1:8600"
COHORT_ID = "1a2bc3d"  # the cohort the customer examples name


@dataclass
class Offline:
    """The servers and variables the examples' headings name."""

    cli: RunCli
    amplitude: BackgroundServer
    partner: BackgroundServer
    env: dict[str, str]

    def words(self, example: str) -> list[str]:
        text = example.replace(PARTNER_URL, self.partner.url)
        text = text.replace(AMPLITUDE_URL, self.amplitude.url)
        text = text.replace("--port 8080", "--port 0").replace("--port 8600", "--port 0")
        words = shlex.split(text)
        assert words[0] == "cohortctl"
        return words[1:]

    def run(self, example: str) -> None:
        words = self.words(example)
        if words[-1] == "&":
            self.serve(words[:-1])
            return
        result = self.cli(*words, env=self.env)
        assert result.exit_code == 0, f"{example}\n{result.output}"

    def serve(self, words: list[str]) -> None:
        env = {**os.environ, **self.env}
        command = [sys.executable, "-m", "cohortctl", *words]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) as process:  # fmt: skip
            try:
                assert process.stdout is not None
                url = process.stdout.readline().strip()
                assert url.startswith("http://127.0.0.1:"), (words, url)
            finally:
                process.terminate()
                process.communicate(timeout=30)


def _seed_cohort(world: Offline) -> None:
    """The fake holds cohort 1a2bc3d with the ids of ids.csv."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "new_cohort_id", lambda: COHORT_ID)
        world.run("cohortctl upload ids.csv --name Seed --app-id 1 --owner me@x.com")


def _synced(world: Offline) -> None:
    for cohort_id in ("7y6y3ij", "c1"):
        world.run(f"cohortctl sync ids.csv --cohort-name Churn --cohort-id {cohort_id}")


def _list_created(world: Offline) -> None:
    world.run(f"cohortctl mock list-create --url {PARTNER_URL}")


def _recorded(world: Offline) -> None:
    world.run(f"cohortctl mock flow --url {PARTNER_URL} --har recording.har")


Setup = Callable[[Offline], None]
# What a user has done before these examples make sense (a cohort, a sync, a list, a HAR).
BEFORE: dict[str, Setup] = {
    "membership": _seed_cohort,
    "cohorts show": _seed_cohort,
    "cohorts download": _seed_cohort,
    "cohorts reconcile": _seed_cohort,
    "state": _synced,
    "mock list-add": _list_created,
    "mock list-remove": _list_created,
    "replay": _recorded,
}


def _before(path: str) -> Setup | None:
    for prefix, setup in BEFORE.items():
        if path == prefix or path.startswith(prefix + " "):
            return setup
    return None


@pytest.fixture
def offline(
    cli: RunCli,
    amplitude_server: BackgroundServer,
    partner_server: BackgroundServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Offline:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "sample_payloads" / "ids.csv", tmp_path / "ids.csv")
    env = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY, "COHORTCTL_PARTNER_URL": partner_server.url}
    env |= {"AMPLITUDE_BASE_URL": amplitude_server.url}
    env |= {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY}
    return Offline(cli, amplitude_server, partner_server, env)


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_every_example_runs_as_written(path: str, offline: Offline) -> None:
    setup = _before(path)
    if setup is not None:
        setup(offline)
    for example in EXAMPLES[path]:
        offline.run(example)


def test_every_command_that_talks_to_a_server_says_which() -> None:
    talking = {"upload", "membership", "cohorts", "mock", "sync", "state", "check"}
    talking |= {"replay", "wait"}
    for path in EXAMPLES:
        assert (setup_of(path) is not None) == (path.split()[0] in talking), path

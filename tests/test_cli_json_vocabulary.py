"""One JSON vocabulary in every command's ``-o json`` (README, "The JSON vocabulary").

``ok`` (bool) says whether the command succeeded; ``status`` is an HTTP status (int) or null;
``error`` is text or null; durations are seconds under ``*_s`` keys, rounded to milliseconds.
Every command runs here against the embedded servers, as a user would run it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cohortctl.servers.runner import BackgroundServer
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
# Data passed through from a server as it answered (Amplitude's cohorts, response bodies) is
# not cohortctl's vocabulary.
PASSED_THROUGH = {"answers", "cohorts", "cohort", "body", "recorded_body", "headers", "file"}
OLD_SUCCESS_WORDS = {"passed", "answered", "success", "succeeded"}


@dataclass
class World:
    """The embedded servers and files a command's example needs."""

    cli: RunCli
    amplitude: BackgroundServer
    partner: BackgroundServer
    tmp: Path
    ids: Path
    refused: str  # a URL whose connections are refused

    def amp(self, *args: str) -> list[str]:
        return [*args, "--base-url", self.amplitude.url]

    def cohort(self) -> str:
        """A cohort holding the ids file, uploaded through the CLI."""
        result = self.cli(*self.amp("upload", str(self.ids), "--name", "Vocab", "--app-id", "1",
                                    "--owner", "me@example.com", "-o", "json"))  # fmt: skip
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["summary"]["cohort_id"])

    def har(self) -> Path:
        path = self.tmp / "flow.har"
        result = self.cli("mock", "flow", "--url", self.partner.url, "--har", str(path), env=ENV)
        assert result.exit_code == 0, result.output
        return path

    def state(self) -> Path:
        path = self.tmp / "state.sqlite"
        result = self.cli("sync", str(self.ids), "--url", self.partner.url, "--cohort-name", "V",
                          "--cohort-id", "v1", "--state", str(path), env=ENV)  # fmt: skip
        assert result.exit_code == 0, result.output
        return path

    def state_of(self, command: str, *extra: str) -> list[str]:
        where = ["--url", self.partner.url, "--cohort-id", "v1"]
        return ["state", command, "--state", str(self.state()), *where, *extra, "--output", "json"]


Case = Callable[[World], list[str]]
CASES: dict[str, tuple[Case, int]] = {
    "upload": (lambda w: w.amp("upload", str(w.ids), "--name", "N", "--app-id", "1", "--owner",
                               "me@example.com", "-o", "json"), 0),
    "upload --dry-run": (lambda w: w.amp("upload", str(w.ids), "--name", "N", "--app-id", "1",
                                         "--owner", "o@example.com", "--dry-run", "-o", "json"), 0),
    "membership add": (lambda w: w.amp("membership", "add", str(w.ids), "--cohort-id", w.cohort(),
                                       "-o", "json"), 0),
    "membership remove --dry-run": (lambda w: w.amp("membership", "remove", str(w.ids),
                                                    "--cohort-id", "c1", "--dry-run", "-o",
                                                    "json"), 0),
    "cohorts list": (lambda w: w.amp("cohorts", "list", "-o", "json"), 0),
    "cohorts show": (lambda w: w.amp("cohorts", "show", w.cohort(), "-o", "json"), 0),
    "cohorts download": (lambda w: w.amp("cohorts", "download", w.cohort(), "-o",
                                         str(w.tmp / "members.csv"), "--output", "json"), 0),
    "cohorts reconcile": (lambda w: w.amp("cohorts", "reconcile", str(w.ids), "--cohort-id",
                                          w.cohort(), "--output", "json"), 0),
    "cohorts reconcile --dry-run": (lambda w: w.amp("cohorts", "reconcile", str(w.ids),
                                                    "--cohort-id", w.cohort(), "--dry-run",
                                                    "--output", "json"), 0),
    "mock list-create": (lambda w: ["mock", "list-create", "--url", w.partner.url, "-o",
                                    "json"], 0),
    "mock identify, refused": (lambda w: ["mock", "identify", "--url", w.partner.url,
                                          "--api-key", "wrong", "-o", "json"], 1),
    "mock identify, no answer": (lambda w: ["mock", "identify", "--url", w.refused, "-o",
                                            "json"], 1),
    "mock flow": (lambda w: ["mock", "flow", "--url", w.partner.url, "--mode", "both", "-o",
                             "json"], 0),
    "mock flow --dry-run": (lambda w: ["mock", "flow", "--url", w.partner.url, "--dry-run", "-o",
                                       "json"], 0),
    "mock webhook": (lambda w: ["mock", "webhook", "--url", f"{w.partner.url}/webhook", "-o",
                                "json"], 0),
    "mock webhook --dry-run": (lambda w: ["mock", "webhook", "--url", f"{w.partner.url}/webhook",
                                          "--dry-run", "-o", "json"], 0),
    "check": (lambda w: ["check", "--url", w.partner.url, "--mode", "both", "-o", "json"], 0),
    "check --mode webhook": (lambda w: ["check", "--url", f"{w.partner.url}/webhook", "--mode",
                                        "webhook", "-o", "json"], 0),
    "replay": (lambda w: ["replay", str(w.har()), "--url", w.partner.url, "-o", "json"], 0),
    "wait": (lambda w: ["wait", "--url", w.partner.url, "-o", "json"], 0),
    "wait, no answer": (lambda w: ["wait", "--url", w.refused, "--timeout", "0.3s", "-o",
                                   "json"], 1),
    "sync": (lambda w: ["sync", str(w.ids), "--url", w.partner.url, "--cohort-name", "S",
                        "--cohort-id", "s1", "--state", str(w.tmp / "s.sqlite"), "-o", "json"], 0),
    "state list": (lambda w: ["state", "list", "--state", str(w.state()), "--output", "json"], 0),
    "state show": (lambda w: w.state_of("show"), 0),
    "state export": (lambda w: w.state_of("export", "-o", str(w.tmp / "held.txt")), 0),
    "state forget": (lambda w: w.state_of("forget"), 0),
    "state check": (lambda w: ["state", "check", "--state", str(w.state()), "--output",
                               "json"], 0),
    "upload, refused": (lambda w: w.amp("upload", str(w.ids), "--name", "N", "--app-id", "1",
                                        "--owner", "me@example.com", "-o", "json"), 1),
    "membership add, no answer": (lambda w: ["membership", "add", str(w.ids), "--cohort-id",
                                             "c1", "--base-url", w.refused, "-o", "json"], 1),
    "cohorts list, refused": (lambda w: w.amp("cohorts", "list", "-o", "json"), 1),
    "cohorts show, unknown": (lambda w: w.amp("cohorts", "show", "nope", "-o", "json"), 1),
    "cohorts download, refused": (lambda w: w.amp("cohorts", "download", "c1", "-o",
                                                  str(w.tmp / "m.csv"), "--output", "json"), 1),
    "upload, bad input": (lambda w: w.amp("upload", str(w.tmp / "missing.csv"), "--name", "N",
                                          "--app-id", "1", "-o", "json"), 2),
    "destination list": (lambda w: ["destination", "list", "-o", "json"], 0),
    "destination show": (lambda w: ["destination", "show", "segment", "-o", "json"], 0),
    "config show": (lambda w: ["config", "show", "-o", "json"], 0),
}  # fmt: skip


@pytest.fixture
def world(
    cli: RunCli,
    amplitude_server: BackgroundServer,
    partner_server: BackgroundServer,
    tmp_path: Path,
    refused_url: str,
) -> World:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"user-{i}\n" for i in range(40)), encoding="utf-8")
    return World(cli, amplitude_server, partner_server, tmp_path, ids, refused_url)


def _walk(data: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield path, key, value
            if key not in PASSED_THROUGH:
                yield from _walk(value, f"{path}.{key}")
    elif isinstance(data, list):
        for number, item in enumerate(data):
            yield from _walk(item, f"{path}[{number}]")


def vocabulary_errors(data: Any) -> list[str]:
    """Every place ``data`` departs from the vocabulary, as ``path.key: why``."""
    found: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        found.append("top level: no boolean ok")
    for path, key, value in _walk(data):
        where = f"{path}.{key}"
        if key == "ok" and not isinstance(value, bool | None):
            found.append(f"{where}: ok is {value!r}, not a bool")
        elif key == "status" and not (value is None or type(value) is int):
            found.append(f"{where}: status is {value!r}, not an HTTP status or null")
        elif key == "error" and not isinstance(value, str | None):
            found.append(f"{where}: error is {value!r}, not text or null")
        elif key.endswith("_s") and value is not None:
            if type(value) not in (int, float) or round(value, 3) != value:
                found.append(f"{where}: {value!r} is not seconds rounded to ms")
        elif key.endswith("_ms") or (key in OLD_SUCCESS_WORDS and isinstance(value, bool)):
            found.append(f"{where}: {key} is not in the vocabulary (*_s seconds, ok)")
    return found


# Cases run with a secret key the fake Amplitude refuses (it answers 401).
WRONG_SECRET = {"upload, refused", "cohorts list, refused", "cohorts download, refused"}


@pytest.mark.parametrize(("name", "case"), CASES.items(), ids=list(CASES))
def test_every_json_output_speaks_the_vocabulary(
    world: World, name: str, case: tuple[Case, int]
) -> None:
    args_of, code = case
    env = {**ENV, "AMPLITUDE_SECRET_KEY": "wrong"} if name in WRONG_SECRET else ENV
    result = world.cli(*args_of(world), env=env)
    assert result.exit_code == code, result.output
    data = json.loads(result.stdout)
    errors = vocabulary_errors(data)
    assert not errors, "\n".join(errors)
    assert data["ok"] is (code == 0)


def test_a_failure_prints_its_json_once(world: World) -> None:
    """A command that printed its own JSON before failing is not followed by a second one."""
    result = world.cli("mock", "identify", "--url", world.partner.url, "--api-key", "wrong",
                       "-o", "json", env=ENV)  # fmt: skip
    assert result.exit_code == 1
    json.loads(result.stdout)  # one document, not two
    table = world.cli(*world.amp("cohorts", "show", "nope"))
    assert table.exit_code == 1 and table.stdout == ""  # without -o json nothing on stdout


@pytest.mark.parametrize("name", sorted(WRONG_SECRET))
def test_a_refused_customer_command_gives_status_and_error(world: World, name: str) -> None:
    args_of, _ = CASES[name]
    result = world.cli(*args_of(world), env={**ENV, "AMPLITUDE_SECRET_KEY": "wrong"})
    data = json.loads(result.stdout)
    assert (result.exit_code, data["ok"], data["status"]) == (1, False, 401)
    assert "401" in data["error"] and "wrong" not in result.stdout


def test_the_checker_finds_what_departs() -> None:
    bad = {"ok": "yes", "results": [{"status": "ok", "latency_ms": 3, "wait_s": 0.12345}],
           "error": 3, "passed": True}  # fmt: skip
    assert len(vocabulary_errors(bad)) == 7
    assert vocabulary_errors({"ok": True, "answers": [{"status": "x"}], "took_s": 1.5}) == []

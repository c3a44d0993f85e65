"""``cohortctl serve amplitude`` as a user runs it: a subprocess printing its URL on stdout."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import RunCli, assert_no_secrets
from tests.credentials import API_KEY, SECRET_KEY

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30


class Served:
    """A running ``cohortctl serve`` subprocess and what it printed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.url = ""
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._first_line: queue.Queue[str] = queue.Queue()
        self._printed = threading.Condition()
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self._stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._printed:
                into.append(line)
                self._printed.notify_all()
            if into is self._stdout and len(into) == 1:
                self._first_line.put(line)

    def wait_for_url(self) -> str:
        try:
            line = self._first_line.get(timeout=START_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no URL in time; stderr: {self.stderr}") from None
        assert line.endswith("\n"), line
        self.url = line.strip()
        return self.url

    def wait_for_stderr(self, text: str) -> str:
        """All of stderr so far, once ``text`` is in it (the pipe is read by another thread)."""
        with self._printed:
            found = self._printed.wait_for(lambda: text in self.stderr, timeout=START_TIMEOUT)
        assert found, f"{text!r} not on stderr: {self.stderr}"
        return self.stderr

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=START_TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=START_TIMEOUT)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)


@contextmanager
def serve(*args: str, env: Mapping[str, str]) -> Iterator[Served]:
    """Start ``python -m cohortctl serve ARGS``, yield once it printed its URL, then SIGTERM it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AMPLITUDE_")}
    full_env.update(env)
    process = subprocess.Popen(
        [sys.executable, "-m", "cohortctl", "serve", *args],
        cwd=REPO,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(process)
    try:
        served.wait_for_url()
        yield served
    finally:
        served.stop()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def test_serve_amplitude_prints_its_url_and_answers() -> None:
    env = {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY}
    with serve("amplitude", "--port", "0", env=env) as served:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", served.url), served.url
        with httpx.Client(base_url=served.url, timeout=10) as client:
            response = client.get("/api/3/cohorts", auth=(API_KEY, SECRET_KEY))
            assert response.status_code == 200
            assert response.json() == {"cohorts": []}
            assert client.get("/api/3/cohorts", auth=(API_KEY, "wrong")).status_code == 401
    assert served.process.returncode == 130
    assert served.stdout == served.url + "\n"  # the URL line and nothing else
    assert f"fake Amplitude API listening on {served.url} (db: :memory:)" in served.stderr
    assert "Traceback" not in served.stderr
    assert_no_secrets(served.url, served.stderr)


def test_serve_amplitude_without_keys_says_how_to_set_them(cli: RunCli) -> None:
    result = cli("serve", "amplitude", credentials=False)
    assert result.exit_code == 2
    assert "--api-key / AMPLITUDE_API_KEY and --secret-key / AMPLITUDE_SECRET_KEY" in result.stderr
    assert "export AMPLITUDE_API_KEY=" in result.stderr


def test_serve_amplitude_needs_both_keys(cli: RunCli) -> None:
    result = cli("serve", "amplitude", "--api-key", API_KEY, credentials=False)
    assert result.exit_code == 2
    assert "--secret-key / AMPLITUDE_SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize(
    ("command", "whose"), [("amplitude", "the fake's"), ("partner", "the receiver's")]
)
def test_serve_db_directory_must_exist_and_be_its_database(
    cli: RunCli, tmp_path: Path, command: str, whose: str
) -> None:
    missing = cli("serve", command, "--db", str(tmp_path / "missing" / "fake.sqlite"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 100, encoding="utf-8")
    wrong = cli("serve", command, "--db", str(notes))
    assert wrong.exit_code == 2 and f"cannot use it as {whose} database" in wrong.stderr


def test_serve_amplitude_help_documents_credentials(cli: RunCli) -> None:
    result = cli("serve", "amplitude", "--help")
    assert result.exit_code == 0
    for text in ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "--export-redirect", "--db"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("command", "warning"),
    [
        ("amplitude", "can call this fake over plain http"),
        ("partner", "can call this receiver over plain http and read its state without auth"),
    ],
)
def test_serve_warns_off_loopback_and_reports_a_busy_port(
    cli: RunCli, command: str, warning: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", command, "--host", "0.0.0.0", "--port", str(port))
    assert result.exit_code == 1
    assert "warning: listening on 0.0.0.0" in result.stderr
    assert warning in " ".join(result.stderr.split())
    assert f"cannot listen on 0.0.0.0:{port}" in result.stderr
    assert result.stdout == ""


def test_serve_amplitude_users_file_feeds_search_and_export_properties(tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    users.write_text(
        '{"user_id": "alice", "user_properties": {"plan": "pro"}}\n\n'
        '{"amplitude_id": 42, "user_id": "bob"}\n',
        encoding="utf-8",
    )
    env = {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY}
    with (
        serve("amplitude", "--users", str(users), "--export-polls", "0", env=env) as served,
        httpx.Client(base_url=served.url, timeout=10, auth=(API_KEY, SECRET_KEY)) as client,
    ):
        matches = client.get("/api/2/usersearch", params={"user": "b"}).json()["matches"]
        assert matches == [{"user_id": "bob", "amplitude_id": 42}]
        cohort_id = client.post(
            "/api/3/cohorts/upload",
            json={
                "name": "c",
                "app_id": "1",
                "id_type": "BY_USER_ID",
                "ids": ["alice"],
                "owner": "o@example.com",
                "published": True,
            },
        ).json()["cohortId"]
        request_id = client.get(f"/api/5/cohorts/request/{cohort_id}?props=1").json()["request_id"]
        client.get(f"/api/5/cohorts/request-status/{request_id}")
        lines = client.get(f"/api/5/cohorts/request/{request_id}/file").text.splitlines()
        assert lines[0] == '"amplitude_id","user_id","plan"'
        assert lines[1].endswith('"alice","pro"')


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"user_id": "a"}\nnot json\n', "users.jsonl:2: not a JSON object"),
        ('["a"]\n', "users.jsonl:1: each line must be a JSON object"),
        ('{"email": "a"}\n', "users.jsonl:1: unknown field 'email'"),
        ('{"user_properties": {}}\n', "users.jsonl:1: needs a user_id or an amplitude_id"),
        ('{"amplitude_id": "5"}\n', "users.jsonl:1: amplitude_id must be a positive integer"),
        ('{"user_id": "a", "user_properties": []}\n', "user_properties must be an object"),
        (None, "users.jsonl: file not found"),
    ],
)
def test_serve_amplitude_bad_users_file(
    cli: RunCli, tmp_path: Path, content: str | None, fragment: str
) -> None:
    users = tmp_path / "users.jsonl"
    if content is not None:
        users.write_text(content, encoding="utf-8")
    result = cli("serve", "amplitude", "--users", str(users))
    assert result.exit_code == 2 and fragment in result.stderr

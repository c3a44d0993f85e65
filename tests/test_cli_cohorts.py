"""``cohortctl cohorts list|download`` against the embedded fake Amplitude API."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from cohortctl.cli import customer_options
from cohortctl.servers.amplitude.store import amplitude_id_for
from tests.conftest import cli_into_a_full_stdout


def make_cohort(cli: Any, server: Any, tmp_path: Path, ids: list[str], name: str = "Seed") -> str:
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    result = cli(
        "upload", str(path), "--name", name, "--app-id", "1", "--owner", "me@example.com",
        "--base-url", server.url, "--output", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["summary"]["cohort_id"])


def test_list_table_and_json(cli, amplitude_server, tmp_path: Path) -> None:
    first = make_cohort(cli, amplitude_server, tmp_path, ["a", "b"], "First [bold]")
    make_cohort(cli, amplitude_server, tmp_path, ["c"], "Second")
    table = cli("cohorts", "list", "--base-url", amplitude_server.url)
    assert table.exit_code == 0, table.output
    assert first in table.stdout and "First [bold]" in table.stdout
    assert "me@example.com" in table.stdout and "2 cohorts" in table.stdout
    as_json = cli("cohorts", "list", "--base-url", amplitude_server.url, "--output", "json")
    cohorts = json.loads(as_json.stdout)["cohorts"]
    assert {c["name"] for c in cohorts} == {"First [bold]", "Second"}
    assert all("syncMetadata" not in c for c in cohorts)
    synced = cli(
        "cohorts", "list", "--base-url", amplitude_server.url, "--output", "json",
        "--include-sync-info",
    )  # fmt: skip
    assert all("syncMetadata" in c for c in json.loads(synced.stdout)["cohorts"])


def test_download_polls_then_writes_csv(
    cli, amplitude_server_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = amplitude_server_factory(export_polls=3)
    cohort_id = make_cohort(cli, server, tmp_path, ["alice", "bob"])
    waits: list[float] = []
    monkeypatch.setattr(customer_options, "sleep", waits.append)
    dest = tmp_path / "members.csv"
    result = cli("cohorts", "download", cohort_id, "-o", str(dest), "--base-url", server.url)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(dest.read_text(encoding="utf-8").splitlines()))
    assert {r["user_id"] for r in rows} == {"alice", "bob"}
    assert waits == [1.0, 2.0, 4.0]  # exponential backoff between polls
    assert "JOB INPROGRESS" in result.stderr
    assert "members" in result.stdout


def test_download_redirect_ids_only(cli, amplitude_server_factory, tmp_path: Path) -> None:
    server = amplitude_server_factory(export_redirect=True)
    cohort_id = make_cohort(cli, server, tmp_path, ["alice", "bob"])
    dest = tmp_path / "ids.txt"
    result = cli(
        "cohorts", "download", cohort_id, "--out", str(dest), "--ids-only", "--output", "json",
        "--base-url", server.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(dest.read_text().split()) == ["alice", "bob"]
    data = json.loads(result.stdout)
    assert data["members_written"] == 2 and data["id_column"] == "user_id"


def test_download_amplitude_ids(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["alice"])
    dest = tmp_path / "amp.txt"
    result = cli(
        "cohorts", "download", cohort_id, "-o", str(dest), "--ids-only", "--id-type",
        "amplitude", "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert dest.read_text() == f"{amplitude_id_for('alice')}\n"


def download(cli: Any, server: Any, cohort_id: str, dest: Path, *extra: str) -> Any:
    """``cohortctl cohorts download COHORT -o DEST EXTRA`` from ``server``."""
    return cli("cohorts", "download", cohort_id, "-o", str(dest), *extra, "--base-url", server.url)


def test_download_unknown_cohort(cli, amplitude_server, tmp_path: Path) -> None:
    result = download(cli, amplitude_server, "zzzzzzz", tmp_path / "x.csv")
    assert result.exit_code == 1 and "HTTP 404" in result.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.fixture
def never_ready(cli, amplitude_server_factory, tmp_path: Path) -> tuple[Any, str]:
    """A fake whose export of its one cohort (returned with it) is never ready in time."""
    server = amplitude_server_factory(export_polls=1000)
    return server, make_cohort(cli, server, tmp_path, ["alice"])


def test_download_gives_up_after_the_export_timeout(cli, never_ready, tmp_path: Path) -> None:
    dest = tmp_path / "x.csv"
    result = download(cli, *never_ready, dest, "--export-timeout", "0s", "--request-timeout", "10s")
    assert result.exit_code == 1 and "not ready" in result.stderr
    assert "deprecated" not in result.stderr
    assert not dest.exists()


def test_download_timeout_is_the_deprecated_export_wait(cli, never_ready, tmp_path: Path) -> None:
    dest = tmp_path / "x.csv"
    result = download(cli, *never_ready, dest, "--timeout", "0")
    assert result.exit_code == 1 and "not ready" in result.stderr
    assert "--timeout` is deprecated" in result.stderr and "--export-timeout" in result.stderr
    both = download(cli, *never_ready, dest, "--timeout", "0", "--export-timeout", "1m")
    assert both.exit_code == 2 and "--export-timeout only" in both.stderr


@pytest.mark.parametrize("output", ["table", "json"])
def test_download_to_stdout(cli, amplitude_server, tmp_path: Path, output: str) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["alice", "bob"])
    result = cli(
        "cohorts", "download", cohort_id, "-o", "-", "--ids-only", "--output", output,
        "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == ["alice", "bob"]  # only the data on stdout
    if output == "json":
        summary = json.loads(result.stderr[result.stderr.index("{") :])
        assert summary["file"] == "-" and summary["members_written"] == 2
    else:
        assert "members" in result.stderr


def test_list_insecure_http_refused(cli) -> None:
    result = cli("cohorts", "list", "--base-url", "http://amplitude.example.com")
    assert result.exit_code == 2 and "plain http" in result.stderr


def test_download_prop_keys_each_sent_as_a_parameter(cli, amplitude_server, tmp_path: Path) -> None:
    from cohortctl.servers.amplitude.app import STORE_KEY

    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["alice"])
    amplitude_server.app[STORE_KEY].set_user_properties(
        {"plan": "pro", "seats": 2, "country": "FR"}, user_id="alice"
    )
    dest = tmp_path / "props.csv"
    result = cli(
        "cohorts", "download", cohort_id, "-o", str(dest), "--prop-key", "plan",
        "--prop-key", "seats", "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(dest.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["amplitude_id", "user_id", "plan", "seats"]
    assert rows[1][1:] == ["alice", "pro", "2"]


def test_download_to_a_full_stdout(cli, amplitude_server, tmp_path: Path) -> None:
    """``-o -`` into a full device (a real process, stdout on /dev/full): one line, exit 2."""
    from tests.credentials import API_KEY, SECRET_KEY

    cohort_id = make_cohort(cli, amplitude_server, tmp_path, [f"u{i}" for i in range(5000)])
    env = {"AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY}
    done = cli_into_a_full_stdout(
        "cohorts", "download", cohort_id, "-o", "-", "--base-url", amplitude_server.url, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "standard output" in errors[0], done.stderr

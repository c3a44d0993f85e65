"""``cohortctl membership add|remove`` against the embedded fake Amplitude API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cohortctl.servers.amplitude.app import STORE_KEY, TRAFFIC_KEY
from cohortctl.servers.amplitude.store import amplitude_id_for


def write_ids(tmp_path: Path, ids: list[str], name: str = "ids.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def make_cohort(cli: Any, server: Any, tmp_path: Path, ids: list[str]) -> str:
    path = write_ids(tmp_path, ids, "seed.txt")
    result = cli(
        "upload", str(path), "--name", "Seed", "--app-id", "1", "--owner", "me@example.com",
        "--base-url", server.url, "--output", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["summary"]["cohort_id"])


def test_add_then_remove(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b"])
    store = amplitude_server.app[STORE_KEY]
    url = ["--base-url", amplitude_server.url, "--cohort-id", cohort_id]
    added = cli("membership", "add", str(write_ids(tmp_path, ["c", "d", "c"])), *url)
    assert added.exit_code == 0, added.output
    assert store.user_ids(cohort_id) == {"a", "b", "c", "d"}
    assert "ADD" in added.stdout and "2 / 2" in added.stdout
    removed = cli("membership", "remove", str(write_ids(tmp_path, ["a", "c"])), *url)
    assert removed.exit_code == 0, removed.output
    assert store.user_ids(cohort_id) == {"b", "d"}


def test_amplitude_ids_use_by_id(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b"])
    path = write_ids(tmp_path, [str(amplitude_id_for("a"))])
    result = cli(
        "membership", "remove", str(path), "--cohort-id", cohort_id, "--id-type", "amplitude",
        "--base-url", amplitude_server.url, "--output", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert amplitude_server.app[STORE_KEY].user_ids(cohort_id) == {"b"}
    answer = json.loads(result.stdout)["answers"][0]
    assert answer["memberships_result"][0]["id_type"] == "BY_ID"


def test_dry_run_body_and_nothing_sent(cli, amplitude_server, tmp_path: Path) -> None:
    path = write_ids(tmp_path, [f"u{i}" for i in range(100_001)])
    result = cli(
        "membership", "add", str(path), "--cohort-id", "abc1234", "--strict-ids",
        "--group-type", "org", "--base-url", amplitude_server.url, "--dry-run", "--output",
        "json", credentials=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    requests = json.loads(result.stdout)["requests"]
    assert [r["url"] for r in requests] == [amplitude_server.url + "/api/3/cohorts/membership"] * 2
    body = requests[1]["body"]
    assert body["cohort_id"] == "abc1234" and body["skip_invalid_ids"] is False
    assert body["count_group"] == "org"
    assert body["memberships"] == [{"id_type": "BY_NAME", "operation": "ADD", "ids": ["u100000"]}]
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []


def test_unknown_cohort_is_404(cli, amplitude_server, tmp_path: Path) -> None:
    result = cli(
        "membership", "add", str(write_ids(tmp_path, ["a"])), "--cohort-id", "nope123",
        "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "HTTP 404 not_found" in result.stderr and "nope123" in result.stderr


def test_empty_file_refused(cli, amplitude_server, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    result = cli(
        "membership", "remove", str(path), "--cohort-id", "c", "--base-url", amplitude_server.url
    )
    assert result.exit_code == 2
    assert amplitude_server.app[TRAFFIC_KEY].requests() == []

"""``cohortctl cohorts reconcile|show`` and ``download --request-id`` against the embedded fake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from cohortctl.servers.amplitude.app import STORE_KEY, TRAFFIC_KEY
from tests.credentials import API_KEY, SECRET_KEY
from tests.test_cli_cohorts import make_cohort


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def reconcile(cli: Any, server: Any, *args: str) -> Any:
    return cli("cohorts", "reconcile", *args, "--base-url", server.url)


def test_reconcile_table(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b", "c"])
    wanted = write(tmp_path, "wanted.txt", "b\nc\nd\nd\n")
    result = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id)
    assert result.exit_code == 0, result.output
    assert amplitude_server.app[STORE_KEY].user_ids(cohort_id) == {"b", "c", "d"}
    assert "to add" in result.stdout and "1 (first: d)" in result.stdout
    assert "to remove" in result.stdout and "(first: a)" in result.stdout
    assert "changes sent" in result.stdout and "2 ids in 2 requests" in result.stdout
    assert "a replace would send" in result.stdout and "3 ids in 1 request" in result.stdout
    assert "duplicates dropped" in result.stdout
    assert "membership ADD: 1 of 2 changes sent" in result.stderr  # plain progress, no TTY


def test_reconcile_json_and_dry_run(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b"])
    wanted = write(tmp_path, "wanted.csv", "user_id,plan\nb,pro\nz,free\n")
    dry = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id, "--dry-run",
                    "-o", "json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)["summary"]
    assert summary["dry_run"] is True
    assert summary["to_add"] == {"count": 1, "first": ["z"]}
    assert summary["to_remove"] == {"count": 1, "first": ["a"], "by_amplitude_id": 0}
    assert summary["changes"] == {"ids": 2, "requests": 2}
    assert summary["sent"] == {"ids": 0, "requests": 0}
    assert summary["replace_would_send"] == {"ids": 2, "requests": 1}
    assert "no membership or upload request was sent" in dry.stderr
    assert amplitude_server.app[STORE_KEY].user_ids(cohort_id) == {"a", "b"}
    posts = [r for r in amplitude_server.app[TRAFFIC_KEY].requests() if r.method == "POST"]
    assert len(posts) == 1  # the upload that made the cohort

    done = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id, "-o", "json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["summary"]["sent"] == {"ids": 2, "requests": 2}
    assert data["summary"]["size_after"] == data["summary"]["expected_size"] == 2
    assert data["file"]["column"] == "user_id"
    assert amplitude_server.app[STORE_KEY].user_ids(cohort_id) == {"b", "z"}


def test_reconcile_dry_run_prints_the_exact_requests_and_as_curl(
    cli, amplitude_server, tmp_path: Path
) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b"])
    wanted = write(tmp_path, "wanted.txt", "b\nz\n")
    dry = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id, "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    first = lines.index("# 1/2 membership ADD (1 ids)")  # the one format of every dry run
    assert lines[first + 1] == "> POST /api/3/cohorts/membership HTTP/1.1"
    assert "> Authorization: Basic ***redacted***" in lines
    second = lines.index("# 2/2 membership REMOVE (1 ids)")
    body = json.loads("\n".join(lines[lines.index(">", first) + 1 : second - 1]))
    assert body["memberships"][0]["ids"] == ["z"] and body["cohort_id"] == cohort_id

    curl = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id, "--dry-run",
                     "--as-curl")  # fmt: skip
    assert curl.exit_code == 0, curl.output
    assert curl.stdout.startswith("# 1/2 membership ADD (1 ids)\ncurl ")
    assert '--user "$AMPLITUDE_API_KEY:$AMPLITUDE_SECRET_KEY"' in curl.stdout
    assert curl.stdout.count("curl --silent") == 2 and "to add" not in curl.stdout

    as_json = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id, "--dry-run",
                        "-o", "json")  # fmt: skip
    requests = json.loads(as_json.stdout)["requests"]
    assert [r["call"] for r in requests] == ["membership ADD", "membership REMOVE"]
    assert requests[1]["body"]["memberships"][0]["ids"] == ["a"]
    refused = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id, "--as-curl")
    assert refused.exit_code == 2 and "--as-curl goes with --dry-run" in refused.stderr
    assert amplitude_server.app[STORE_KEY].user_ids(cohort_id) == {"a", "b"}


def test_reconcile_amplitude_ids(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a"])
    wanted = write(tmp_path, "amp.txt", "5\n6\n")
    result = reconcile(cli, amplitude_server, wanted, "--cohort-id", cohort_id,
                       "--id-type", "amplitude")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert amplitude_server.app[STORE_KEY].amplitude_ids(cohort_id) == {"5", "6"}
    bad = write(tmp_path, "bad.txt", "5\nalice\n")
    refused = reconcile(cli, amplitude_server, bad, "--cohort-id", cohort_id,
                        "--id-type", "amplitude")  # fmt: skip
    assert refused.exit_code == 2 and "bad.txt:2" in refused.stderr


def test_reconcile_bad_files_are_one_line_errors(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a"])
    before = len(amplitude_server.app[TRAFFIC_KEY].requests())
    cases = {
        "missing.txt": None,
        "empty.txt": "\n\n",
        "ragged.csv": "user_id,plan\na,pro\nb\n",
        "binary.txt": "a\n\x00b\n",
    }
    for name, content in cases.items():
        path = write(tmp_path, name, content) if content is not None else str(tmp_path / name)
        result = reconcile(cli, amplitude_server, path, "--cohort-id", cohort_id)
        assert result.exit_code == 2, (name, result.output)
        assert name in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert len(amplitude_server.app[TRAFFIC_KEY].requests()) == before  # nothing sent


def test_reconcile_unknown_cohort(cli, amplitude_server, tmp_path: Path) -> None:
    wanted = write(tmp_path, "wanted.txt", "a\n")
    result = reconcile(cli, amplitude_server, wanted, "--cohort-id", "nope123")
    assert result.exit_code == 1
    assert "cohort 'nope123' not found" in result.stderr
    assert "cohortctl cohorts list" in result.stderr


# -- show ---------------------------------------------------------------------------------


def test_show_table_and_json(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b", "c"], "Shown")
    amplitude_server.app[STORE_KEY].set_sync_metadata(
        cohort_id, [{"target": "braze", "frequency": "daily"}]
    )
    table = cli("cohorts", "show", cohort_id, "--base-url", amplitude_server.url)
    assert table.exit_code == 0, table.output
    for text in ("Shown", "me@example.com", "last computed", "sync destinations",
                 "target=braze, frequency=daily"):  # fmt: skip
        assert text in table.stdout, text
    assert "3" in table.stdout
    as_json = cli("cohorts", "show", cohort_id, "-o", "json", "--base-url", amplitude_server.url)
    cohort = json.loads(as_json.stdout)["cohort"]
    assert cohort["id"] == cohort_id and cohort["size"] == 3
    assert cohort["owners"] == ["me@example.com"] and cohort["published"] is True
    assert cohort["syncMetadata"] == [{"target": "braze", "frequency": "daily"}]
    assert "lastComputed" in cohort


def test_show_unknown_cohort(cli, amplitude_server) -> None:
    result = cli("cohorts", "show", "nope123", "--base-url", amplitude_server.url)
    assert result.exit_code == 1 and "cohort 'nope123' not found" in result.stderr


# -- download --request-id and the export limits ------------------------------------------


def test_download_resumes_an_export_already_requested(
    cli, amplitude_server, tmp_path: Path
) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["alice", "bob"])
    with httpx.Client(base_url=amplitude_server.url, auth=(API_KEY, SECRET_KEY)) as api:
        request_id = api.get(f"/api/5/cohorts/request/{cohort_id}").json()["request_id"]
    dest = tmp_path / "members.csv"
    result = cli(
        "cohorts", "download", cohort_id, "--request-id", request_id, "-o", str(dest),
        "--output", "json", "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["request_id"] == request_id
    assert "alice" in dest.read_text()
    requested = [
        r for r in amplitude_server.app[TRAFFIC_KEY].requests()
        if r.path == f"/api/5/cohorts/request/{cohort_id}"
    ]  # fmt: skip
    assert len(requested) == 1  # only the one made above

    other = make_cohort(cli, amplitude_server, tmp_path, ["carol"], "Other")
    wrong = cli(
        "cohorts", "download", other, "--request-id", request_id, "-o", str(tmp_path / "x.csv"),
        "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert wrong.exit_code == 1 and f"an export of cohort {cohort_id}, not {other}" in wrong.stderr
    unknown = cli(
        "cohorts", "download", cohort_id, "--request-id", "r404", "-o", str(tmp_path / "x.csv"),
        "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert unknown.exit_code == 1 and "404" in unknown.stderr
    props = cli(
        "cohorts", "download", cohort_id, "--request-id", request_id, "--props",
        "-o", str(tmp_path / "x.csv"), "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert props.exit_code == 2 and "--request-id" in props.stderr


def test_export_429_names_the_limits_and_how_to_resume(
    cli, amplitude_server, tmp_path: Path
) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["alice"])
    with httpx.Client(base_url=amplitude_server.url, auth=(API_KEY, SECRET_KEY)) as api:
        for _ in range(4):  # four exports running: the fifth answers 429
            assert api.get(f"/api/5/cohorts/request/{cohort_id}").status_code == 202
    result = cli(
        "cohorts", "download", cohort_id, "-o", str(tmp_path / "x.csv"), "--retries", "0",
        "--base-url", amplitude_server.url,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "HTTP 429" in result.stderr
    assert "60 cohort export requests per 10 minutes and 4 in parallel" in result.stderr
    assert "--request-id" in result.stderr


def test_download_timeout_says_how_to_resume(cli, amplitude_server_factory, tmp_path: Path) -> None:
    server = amplitude_server_factory(export_polls=1000)
    cohort_id = make_cohort(cli, server, tmp_path, ["alice"])
    result = cli(
        "cohorts", "download", cohort_id, "-o", str(tmp_path / "x.csv"), "--timeout", "0",
        "--base-url", server.url,
    )  # fmt: skip
    assert result.exit_code == 1 and "not ready" in result.stderr
    assert f"cohortctl cohorts download {cohort_id} --request-id" in result.stderr


def test_reconcile_reads_stdin(cli, amplitude_server, tmp_path: Path) -> None:
    cohort_id = make_cohort(cli, amplitude_server, tmp_path, ["a", "b"])
    result = cli(
        "cohorts", "reconcile", "-", "--cohort-id", cohort_id, "-o", "json",
        "--base-url", amplitude_server.url, input="b\nz\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["file"]["source"] == "<stdin>"
    assert amplitude_server.app[STORE_KEY].user_ids(cohort_id) == {"b", "z"}

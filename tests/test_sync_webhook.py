"""``sync --mode webhook`` through the embedded receiver: properties, state, retries, faults."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.errors import InputError
from cohortctl.retry import STREAMING_POLICY, StreamingRetryPolicy, named_policy
from tests.conftest import RunCli
from tests.partner_fixtures import PartnerFactory

COHORT = ("--cohort-name", "Power Users", "--cohort-id", "c7", "--mode", "webhook")
HOOK = "hook-secret-0451"
FAST = ("--retries", "30", "--backoff-base", "0", "--backoff-max", "0")


def _write(path: Path, users: dict[str, dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "plan", "seats"])
        for uid, props in users.items():
            writer.writerow([uid, props["plan"], props["seats"]])
    return path


def _cohort(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/_cohortctl/webhooks/cohorts/c7", timeout=60).json()
    return answer


def _journal(url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(
        f"{url}/_cohortctl/webhooks/journal?limit=1000000", timeout=60
    ).json()["messages"]
    return rows


def _assert_retries_identical(journal: list[dict[str, Any]]) -> int:
    """Every message_id seen more than once carried the same body each time."""
    bodies: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, int] = defaultdict(int)
    for row in journal:
        if row["message_id"]:
            bodies[row["message_id"]].add(row["sha256"])
            seen[row["message_id"]] += 1
    assert all(len(digests) == 1 for digests in bodies.values())
    return sum(1 for n in seen.values() if n > 1)


def _sync(cli: RunCli, snapshot: Path, url: str, *extra: str) -> dict[str, Any]:
    result = cli(
        "sync", str(snapshot), "--url", f"{url}/webhook", *COHORT, "-H", f"X-Hook:{HOOK}",
        "--all-properties", "-o", "json", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert HOOK not in result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_first_sync_delta_and_changed_properties(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    users = {f"u{i}": {"plan": "free", "seats": str(i)} for i in range(10)}
    snapshot = _write(tmp_path / "cohort.csv", users)
    first = _sync(cli, snapshot, server.url, "--batch-size", "4")["cohorts"][0]
    assert (first["entered"], first["added"], first["left"]) == (10, 10, 0)
    assert _cohort(server.url)["properties"]["u3"] == {"plan": "free", "seats": "3"}
    users.pop("u0")
    users["u10"] = {"plan": "pro", "seats": "1"}
    users["u5"]["plan"] = "pro"
    _write(snapshot, users)
    plain = _sync(cli, snapshot, server.url, "--dry-run")["cohorts"][0]
    assert plain["calls"] == {"webhook (entering)": 1, "webhook (leaving)": 1}
    second = _sync(cli, snapshot, server.url, "--resend-changed-properties")["cohorts"][0]
    assert (second["entered"], second["left"], second["resent"]) == (1, 1, 1)
    state = _cohort(server.url)
    assert state["members"] == sorted(users)
    assert state["properties"] == users
    third = _sync(cli, snapshot, server.url, "--resend-changed-properties")["cohorts"][0]
    assert (third["entered"], third["left"], third["resent"]) == (0, 0, 0)
    ids = [row["message_id"] for row in _journal(server.url)]
    assert [i.split("::", 1)[1] for i in ids[:3]] == ["enter::0", "enter::1", "enter::2"]
    assert len({i.split("::")[0] for i in ids[:3]}) == 1
    assert [i.split("::", 1)[1] for i in ids[3:]] == ["enter::0", "exit::0"]


def test_webhook_summary_has_no_list_row(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    snapshot = _write(tmp_path / "cohort.csv", {"a": {"plan": "x", "seats": "1"}})
    result = cli("sync", str(snapshot), "--url", f"{server.url}/webhook", *COHORT,
                 "-H", f"X-Hook:{HOOK}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "snapshot" in result.output and "list id" not in result.output


def test_webhook_mode_option_errors(cli: RunCli, tmp_path: Path) -> None:
    snapshot = _write(tmp_path / "c.csv", {"a": {"plan": "x", "seats": "1"}})
    wrong_mode = cli("sync", str(snapshot), "--url", "http://127.0.0.1:9/", "--cohort-name",
                     "n", "--cohort-id", "i", "--all-properties", "--dry-run")  # fmt: skip
    assert wrong_mode.exit_code == 2 and "--mode webhook" in wrong_mode.output
    missing = cli("sync", str(snapshot), "--url", "http://127.0.0.1:9/", *COHORT, "--dry-run",
                  "--property", "nope")  # fmt: skip
    assert missing.exit_code == 2 and "'nope' is not a column" in missing.output
    policy = cli("sync", str(snapshot), "--url", "http://127.0.0.1:9/", *COHORT, "--dry-run",
                 "--retry-policy", "sometimes")  # fmt: skip
    assert policy.exit_code == 2 and "--retry-policy" in policy.output


def test_streaming_retry_policy() -> None:
    nominal = STREAMING_POLICY.schedule()
    assert nominal[:3] == [0.1, 0.2, 0.4] and len(nominal) == 12
    assert sum(nominal[:3]) < 4
    assert 3.5 * 3600 < sum(nominal[3:]) < 4.1 * 3600
    low = StreamingRetryPolicy(random=lambda: 0.0)
    high = StreamingRetryPolicy(random=lambda: 1.0)
    assert low.delay(1) == pytest.approx(0.05) and high.delay(1) == pytest.approx(0.15)
    assert low.delay(2, retry_after=3.0) == 3.0
    overridden = named_policy("streaming", retries=2, base_delay=0.5)
    assert isinstance(overridden, StreamingRetryPolicy)
    assert (overridden.retries, overridden.base_delay) == (2, 0.5)
    assert named_policy("cohort-sync").schedule()[-1] == 128
    with pytest.raises(InputError):
        named_policy("never")


def test_200k_users_then_a_delta_through_faults_converge(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    rng = random.Random(7)
    server = partner_server_factory(
        webhook_headers=(("X-Hook", HOOK),), fail_rate=0.05, reset_rate=0.02, seed=11
    )
    users = {f"user-{i:06d}": {"plan": rng.choice(["free", "pro"]), "seats": str(i % 97)}
             for i in range(200_000)}  # fmt: skip
    snapshot = _write(tmp_path / "cohort.csv", users)
    first = _sync(cli, snapshot, server.url, *FAST)["cohorts"][0]
    assert first["added"] == 200_000 and first["delivery"]["retries"] > 0
    ids = list(users)
    rng.shuffle(ids)
    for uid in ids[:20_000]:  # 10 % leave
        del users[uid]
    for i in range(20_000):  # 10 % join
        users[f"new-{i:06d}"] = {"plan": "trial", "seats": "0"}
    for uid in ids[20_000:30_000]:  # 5 % of the cohort change a property
        users[uid]["plan"] = "enterprise"
    _write(snapshot, users)
    delta = _sync(cli, snapshot, server.url, *FAST, "--resend-changed-properties")["cohorts"][0]
    assert (delta["entered"], delta["left"], delta["resent"]) == (20_000, 20_000, 10_000)
    state = _cohort(server.url)
    assert state["members"] == sorted(users)
    assert state["properties"] == users
    assert _assert_retries_identical(_journal(server.url)) > 0


def test_a_doc_template_and_the_streaming_policy(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    from tests.test_webhook_freemarker import DOC_DEFAULT

    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),), fail_rate=0.3, seed=3)
    template = tmp_path / "amplitude.ftl"
    template.write_text(DOC_DEFAULT)
    users = {f"u{i}": {"plan": "pro" if i % 2 else "", "seats": str(i)} for i in range(30)}
    snapshot = _write(tmp_path / "cohort.csv", users)
    result = _sync(cli, snapshot, server.url, "--payload", str(template), "--batch-size", "2",
                   "--retry-policy", "streaming", "--backoff-max", "0.01")  # fmt: skip
    cohort = result["cohorts"][0]
    assert cohort["added"] == 30 and cohort["delivery"]["retries"] > 0
    state = _cohort(server.url)
    assert state["members"] == sorted(users)
    expected = {uid: {k: v for k, v in p.items() if v} for uid, p in users.items()}
    assert state["properties"] == expected
    assert _assert_retries_identical(_journal(server.url)) > 0


def test_a_webhook_destination_file(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(
        webhook_path="/hooks/amplitude", webhook_headers=(("X-Hook", HOOK), ("X-Team", "growth"))
    )
    file = tmp_path / "hook.yaml"
    file.write_text(
        f"name: my-hook\nmode: webhook\nurl: {server.url}/hooks\nheaders:\n  X-Team: growth\n"
        "batch_size: 3\ncalls:\n  webhook:\n    path: /amplitude\n",
        encoding="utf-8",
    )
    users = {f"u{i}": {"plan": "pro", "seats": str(i)} for i in range(7)}
    snapshot = _write(tmp_path / "cohort.csv", users)
    result = cli(
        "sync", str(snapshot), "--destination", str(file), "--cohort-name", "Power Users",
        "--cohort-id", "c7", "-H", f"X-Hook:{HOOK}", "--property", "plan", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cohorts"][0]["delivery"]["requests"] == 3
    state = _cohort(server.url)
    assert state["members"] == sorted(users)
    assert state["properties"]["u1"] == {"plan": "pro"}
    checked = cli("check", "--destination", str(file), "-H", f"X-Hook:{HOOK}",
                  "--require-header", "X-Hook", "--batch-size", "2")  # fmt: skip
    assert checked.exit_code == 0, checked.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nmode: webhook\ncalls:\n  webhook:\n    payload: '<#assign x=1>'\n")
    refused = cli("destination", "validate", str(bad))
    assert refused.exit_code == 2 and "calls.webhook.payload:1: <#assign>" in refused.output
    six = tmp_path / "six.yaml"
    six.write_text("name: s\nmode: webhook\nheaders: {A: 1, B: 2, C: 3, D: 4, E: 5, F: 6}\n")
    assert "at most 5" in cli("destination", "validate", str(six)).output


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--api-key", "pk-flag-secret-77"), ("--secret", "sk-flag-secret-77"), ("--auth", "bearer")],
)
def test_partner_auth_flags_are_refused_in_webhook_mode(
    cli: RunCli, tmp_path: Path, flag: str, value: str
) -> None:
    snapshot = _write(tmp_path / "c.csv", {"a": {"plan": "x", "seats": "1"}})
    url = ("--url", "http://127.0.0.1:9/webhook")
    for command in (
        ("sync", str(snapshot), *url, *COHORT, "--dry-run"),
        ("check", *url, "--mode", "webhook"),
        ("mock", "flow", *url, "--mode", "webhook", "--id", "a", "--dry-run"),
    ):
        result = cli(*command, flag, value)
        assert result.exit_code == 2, (command, result.output)
        assert f"{flag} is not used in webhook mode" in result.output
        assert "--header" in result.output and value not in result.output


def test_partner_credentials_from_the_environment_are_ignored_in_webhook_mode(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COHORTCTL_PARTNER_API_KEY", "pk-env-secret-88")
    monkeypatch.setenv("COHORTCTL_PARTNER_AUTH", "bearer")
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    snapshot = _write(tmp_path / "c.csv", {"a": {"plan": "x", "seats": "1"}})
    assert _sync(cli, snapshot, server.url)["cohorts"][0]["entered"] == 1
    assert _cohort(server.url)["members"] == ["a"]


def test_a_snapshot_on_stdin_carries_its_properties(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    users = {f"u{i}": {"plan": "pro", "seats": str(i)} for i in range(5)}
    text = _write(tmp_path / "cohort.csv", users).read_bytes()
    result = cli(
        "sync", "-", "--url", f"{server.url}/webhook", *COHORT, "-H", f"X-Hook:{HOOK}",
        "--all-properties", "--typed-properties", "--state", str(tmp_path / "s.db"),
        "-o", "json", input=text,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cohorts"][0]["entered"] == 5
    state = _cohort(server.url)
    assert state["members"] == sorted(users)
    assert state["properties"]["u3"] == {"plan": "pro", "seats": 3}
    ragged = cli("sync", "-", "--url", f"{server.url}/webhook", *COHORT, "--all-properties",
                 "--dry-run", "--state", str(tmp_path / "s.db"),
                 input=b"user_id,plan\nu1,pro\nu2\n")  # fmt: skip
    assert ragged.exit_code == 2 and "<stdin>" in ragged.output, ragged.output

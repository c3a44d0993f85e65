"""``mock flow --mode webhook`` with properties and templates, ``mock webhook`` from stdin, and
``destination show`` of a ``mode: webhook`` file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RunCli
from tests.partner_fixtures import PartnerFactory

HOOK = "hook-secret-5150"
SNAPSHOT = "user_id,plan,seats\nu1,pro,12\nu2,free,1\nu3,,\n"


def _cohort(url: str, cohort_id: str = "cohortctl_mock_1") -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/_cohortctl/webhooks/cohorts/{cohort_id}").json()
    return answer


def test_mock_flow_sends_properties_and_renders_the_payload(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK),))
    snapshot = tmp_path / "cohort.csv"
    snapshot.write_text(SNAPSHOT)
    hook = ("--mode", "webhook", "--url", f"{server.url}/webhook", "-H", f"X-Hook:{HOOK}")
    typed = cli("mock", "flow", *hook, "--ids", str(snapshot), "--all-properties",
                "--typed-properties", "-o", "json")  # fmt: skip
    assert typed.exit_code == 0, typed.output
    state = _cohort(server.url)
    assert state["members"] == ["u2", "u3"]  # everyone entered, then the first one left
    assert state["properties"] == {"u2": {"plan": "free", "seats": 1}}
    picked = cli("mock", "flow", *hook, "--ids", str(snapshot), "--property", "plan",
                 "--cohort-id", "c2", "--dry-run", "-o", "json")  # fmt: skip
    assert picked.exit_code == 0, picked.output
    first = json.loads(picked.stdout)["requests"][0]["body"]
    assert first["users"][0] == {"user_id": "u1", "user_properties": {"plan": "pro"}}
    template = tmp_path / "hook.ftl"
    template.write_text(
        '{"entering": ${input.in_cohort?c}, "ids": [<#list input.users as user>'
        '"${user.user_id?json_string}"<#sep>, </#list>]}'
    )
    shaped = cli("mock", "flow", *hook, "--ids", str(snapshot), "--payload", str(template),
                 "--dry-run", "-o", "json")  # fmt: skip
    assert shaped.exit_code == 0, shaped.output
    bodies = [r["body"] for r in json.loads(shaped.stdout)["requests"]]
    assert bodies == [{"entering": True, "ids": ["u1", "u2", "u3"]},
                      {"entering": False, "ids": ["u1"]}]  # fmt: skip
    assert HOOK not in typed.output + picked.output + shaped.output


def test_mock_flow_property_errors(cli: RunCli, tmp_path: Path) -> None:
    snapshot = tmp_path / "cohort.csv"
    snapshot.write_text(SNAPSHOT)
    hook = ("mock", "flow", "--mode", "webhook", "--url", "http://127.0.0.1:9/w", "--dry-run")
    missing = cli(*hook, "--ids", str(snapshot), "--property", "nope")
    assert missing.exit_code == 2 and "'nope' is not a column" in missing.output
    no_file = cli(*hook, "--id", "a", "--all-properties")
    assert no_file.exit_code == 2 and "give --ids FILE" in no_file.output


def test_mock_webhook_reads_a_snapshot_with_properties_from_stdin(
    cli: RunCli, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory()
    result = cli(
        "mock", "webhook", "--url", f"{server.url}/webhook", "--ids", "-", "--all-properties",
        "--id", "extra", input=SNAPSHOT.encode(),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    state = _cohort(server.url)
    assert state["members"] == ["extra", "u1", "u2", "u3"]
    assert state["properties"]["u1"] == {"plan": "pro", "seats": "12"}


def test_destination_show_of_a_webhook_file(cli: RunCli, tmp_path: Path) -> None:
    file = tmp_path / "hook.yaml"
    file.write_text(
        "name: my-hook\nmode: webhook\nurl: https://hooks.example.com/in\n"
        "headers:\n  X-Team: growth-team-7\nbatch_size: 250\n"
        "calls:\n  webhook:\n    path: /amplitude\n"
        "    payload: '{\"n\": \"${input.cohort_name}\"}'\n"
    )
    shown = cli("destination", "show", str(file), "-o", "json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {
        "name": "my-hook",
        "source": str(file),
        "mode": "webhook",
        "url": "https://hooks.example.com/in/amplitude",
        "path": "/amplitude",
        "headers": {
            "Content-Type": "application/json",
            "User-Agent": "Amplitude/Webhook/1.0",
            "X-Team": "***redacted***",
        },
        "batch_size": 250,
        "payload": '{"n": "${input.cohort_name}"}',
        "ok": True,
    }
    table = cli("destination", "show", str(file))
    assert table.exit_code == 0, table.output
    assert "https://hooks.example.com/in/amplitude" in table.stdout
    assert "Amplitude/Webhook/1.0" in table.stdout and "${input.cohort_name}" in table.stdout
    assert "growth-team-7" not in table.output and "auth basic" not in table.output
    assert "$listId" not in table.output  # no list-mode variables table
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\nmode: webhook\n")
    plain = cli("destination", "show", str(bare))
    assert plain.exit_code == 0 and "give --url" in plain.stdout and "default body" in plain.stdout


def test_at_most_50_user_properties_as_amplitude_allows(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    columns = [f"p{i}" for i in range(51)]
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["user_id", *columns]) + "\n" + ",".join(["u1", *"x" * 51]) + "\n")
    hook = ("mock", "webhook", "--url", "http://127.0.0.1:9/w", "--ids", str(wide), "--dry-run")
    everything = cli(*hook, "--all-properties")
    assert everything.exit_code == 2 and "Amplitude sends at most 50" in everything.output
    named = cli(*hook, *[arg for c in columns for arg in ("--property", c)])
    assert named.exit_code == 2 and "at most 50 user properties" in named.output
    fifty = cli(*hook, *[arg for c in columns[:50] for arg in ("--property", c)], "-o", "json")
    assert fifty.exit_code == 0, fifty.output
    user = json.loads(fifty.stdout)["requests"][0]["body"]["users"][0]
    assert len(user["user_properties"]) == 50
    server = partner_server_factory()
    too_many = {"user_id": "u1", "user_properties": {c: "x" for c in columns}}
    body = {
        "cohort_name": "n", "cohort_id": "c", "in_cohort": True, "computed_time": "1",
        "message_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0", "users": [too_many],
    }  # fmt: skip
    refused = httpx.post(f"{server.url}/webhook", json=body,
                         headers={"User-Agent": "Amplitude/Webhook/1.0"})  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["field"] == "users[0].user_properties"


def test_the_table_names_entering_and_leaving(
    cli: RunCli, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory()
    result = cli("mock", "flow", "--mode", "webhook", "--url", f"{server.url}/webhook",
                 "--id", "a", "--id", "b", env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "webhook (entering)" in result.stdout and "webhook (leaving)" in result.stdout

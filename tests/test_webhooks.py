"""Cohort Webhooks: the default body, ``mock webhook``, ``mock flow --mode webhook`` and the
embedded receiver's /webhook route, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortctl.errors import InputError
from cohortctl.partner.webhooks.payload import (
    MESSAGE_ID,
    WebhookDestination,
    WebhookRun,
    encode,
    webhook_body,
    webhook_url,
)
from cohortctl.servers.partner.validation import InvalidPayload
from cohortctl.servers.partner.webhooks import validate_webhook
from tests.conftest import RunCli
from tests.http_servers import ScriptServer
from tests.http_servers import answer as http_answer
from tests.partner_fixtures import PartnerFactory

HOOK_SECRET = "hook-secret-value-123"
RUN_UUID = "9baaa88f-9d46-4ee5-a946-be0c6aea0046"


def _state(url: str, cohort_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/_cohortctl/webhooks/cohorts/{cohort_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def _journal(url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = httpx.get(
        f"{url}/_cohortctl/webhooks/journal?limit=100000"
    ).json()["messages"]
    return messages


def _body(**changes: Any) -> dict[str, Any]:
    body = webhook_body(
        "My Test Cohort",
        "7khm89cz",
        in_cohort=True,
        computed_time="1692206763",
        message_id=f"{RUN_UUID}::enter::0",
        users=[("user_one@example.com", {"plan": "pro"}), ("u2", None)],
    )
    body.update(changes)
    return body


HEADERS = {"Content-Type": "application/json", "User-Agent": "Amplitude/Webhook/1.0"}


def test_default_body_is_exactly_part_c() -> None:
    assert encode(_body()) == (
        b'{"cohort_name":"My Test Cohort","cohort_id":"7khm89cz","in_cohort":true,'
        b'"computed_time":"1692206763","message_id":"9baaa88f-9d46-4ee5-a946-be0c6aea0046'
        b'::enter::0","users":[{"user_id":"user_one@example.com","user_properties":'
        b'{"plan":"pro"}},{"user_id":"u2"}]}'
    )
    run = WebhookRun()
    assert MESSAGE_ID.match(run.message_id(entering=False, batch=12))
    assert run.message_id(entering=True, batch=3).endswith("::enter::3")
    assert run.computed_time.isdigit()


def test_headers_url_and_the_five_header_limit() -> None:
    dest = WebhookDestination.from_options(
        "http://127.0.0.1:9/hook?x=1", path="/extra", headers=["X-Secret: abcd1234"]
    )
    assert dest.url == "http://127.0.0.1:9/hook/extra?x=1"
    assert dest.request_headers() == {**HEADERS, "X-Secret": "abcd1234"}
    assert "abcd1234" not in json.dumps(dest.redacted_headers())
    assert webhook_url("https://example.com/webhook") == "https://example.com/webhook"
    with pytest.raises(InputError, match="at most 5 custom headers"):
        WebhookDestination.from_options(
            "http://127.0.0.1:9/", headers=[f"X-H{i}: v" for i in range(6)]
        )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"in_cohort": "true"}, "in_cohort"),
        ({"computed_time": 1692206763}, "computed_time"),
        ({"message_id": "abc::enter::0"}, "message_id"),
        ({"message_id": f"{RUN_UUID}::exit::0"}, "message_id"),
        ({"users": []}, "users"),
        ({"users": [{"user_id": ""}]}, "users[0].user_id"),
        ({"users": [{"user_id": "a", "traits": {}}]}, "users[0].traits"),
        ({"users": [{"user_id": "a"}, {"user_id": "a"}]}, "users[1].user_id"),
        (
            {"users": [{"user_id": "a", "user_properties": {"k": [1]}}]},
            "users[0].user_properties.k",
        ),
        ({"extra": 1}, "extra"),
    ],
)
def test_receiver_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_webhook(_body(**change))
    assert caught.value.field == field


def test_receiver_applies_once_acknowledges_duplicates_and_409s_conflicts(
    partner_server_factory: PartnerFactory,
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook-Secret", HOOK_SECRET),))
    url = f"{server.url}/webhook"
    good = {**HEADERS, "X-Hook-Secret": HOOK_SECRET}
    raw = encode(_body())
    first = httpx.post(url, content=raw, headers=good)
    assert first.status_code == 200 and first.json()["entered"] == 2
    again = httpx.post(url, content=raw, headers=good)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other = encode(_body(users=[{"user_id": "someone-else"}]))
    conflict = httpx.post(url, content=other, headers=good)
    assert conflict.status_code == 409
    assert httpx.post(url, content=raw, headers=HEADERS).status_code == 401
    wrong = {**good, "X-Hook-Secret": "nope"}
    assert httpx.post(url, content=raw, headers=wrong).status_code == 403
    bad_agent = {**good, "User-Agent": "curl/8"}
    assert httpx.post(url, content=raw, headers=bad_agent).status_code == 400
    assert httpx.post(url, content=b"not json", headers=good).status_code == 400
    state = _state(server.url, "7khm89cz")
    assert state["members"] == ["u2", "user_one@example.com"]
    assert state["properties"] == {"user_one@example.com": {"plan": "pro"}}
    journal = _journal(server.url)
    assert [m["status"] for m in journal] == [200, 200, 409, 401, 403, 400, 400]
    assert journal[0]["sha256"] == hashlib.sha256(raw).hexdigest() == journal[1]["sha256"]
    leave = encode(
        _body(in_cohort=False, message_id=f"{RUN_UUID}::exit::0", users=[{"user_id": "u2"}])
    )
    assert httpx.post(url, content=leave, headers=good).json()["left"] == 1
    assert _state(server.url, "7khm89cz")["members"] == ["user_one@example.com"]


def test_mock_webhook_sends_members_with_properties(
    cli: RunCli, tmp_path: Path, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook-Secret", HOOK_SECRET),))
    snapshot = tmp_path / "cohort.csv"
    snapshot.write_text("user_id,plan,seats,beta\nu1,pro,12,true\nu2,free,1,false\nu3,,,\n")
    result = cli(
        "mock", "webhook", "--url", f"{server.url}/webhook", "-H", f"X-Hook-Secret:{HOOK_SECRET}",
        "--ids", str(snapshot), "--all-properties", "--typed-properties", "--batch-size", "2",
        "-o", "json",
        env={"HOOK": HOOK_SECRET},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert HOOK_SECRET not in result.output
    data = json.loads(result.stdout)
    ids = [r["extra"]["message_id"] for r in data["results"]]
    assert [i.rsplit("::", 2)[1:] for i in ids] == [["enter", "0"], ["enter", "1"]]
    assert len({i.split("::")[0] for i in ids}) == 1
    state = _state(server.url, mock_cohort := "cohortctl_mock_1")
    assert state["members"] == ["u1", "u2", "u3"], mock_cohort
    assert state["properties"] == {
        "u1": {"plan": "pro", "seats": 12, "beta": True},
        "u2": {"plan": "free", "seats": 1, "beta": False},
    }
    left = cli("mock", "webhook", "--url", f"{server.url}/webhook", "--not-member", "--id", "u1",
               "-H", f"X-Hook-Secret:{HOOK_SECRET}")  # fmt: skip
    assert left.exit_code == 0, left.output
    assert _state(server.url, "cohortctl_mock_1")["members"] == ["u2", "u3"]


def test_mock_webhook_dry_run_template_and_errors(cli: RunCli, tmp_path: Path) -> None:
    template = tmp_path / "hook.ftl"
    template.write_text(
        '{"who": [<#list input.users as u>"${u.user_id?json_string}"<#sep>,</#list>],\n'
        ' "in": ${input.in_cohort?c}}\n'
    )
    shown = cli(
        "mock", "webhook", "--url", "http://127.0.0.1:9/hook", "--payload", str(template),
        "--id", "a", "--id", 'b"q', "--dry-run", "-o", "json", "-H", f"X-Secret:{HOOK_SECRET}",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    request = json.loads(shown.stdout)["requests"][0]
    assert request["body"] == {"who": ["a", 'b"q'], "in": True}
    assert request["headers"]["User-Agent"] == "Amplitude/Webhook/1.0"
    assert "Authorization" not in request["headers"]
    assert HOOK_SECRET not in shown.output
    six = [arg for i in range(6) for arg in ("-H", f"X-H{i}:v")]
    too_many = cli("mock", "webhook", "--url", "http://127.0.0.1:9/", "--dry-run", *six)
    assert too_many.exit_code == 2 and "at most 5" in too_many.output
    bad = tmp_path / "bad.ftl"
    bad.write_text('{"a": 1}\n<#assign x = 2>\n')
    refused = cli("mock", "webhook", "--url", "http://127.0.0.1:9/", "--payload", str(bad))
    assert refused.exit_code == 2 and "bad.ftl:2: <#assign> is not supported" in refused.output


def test_mock_flow_webhook_mode(cli: RunCli, partner_server_factory: PartnerFactory) -> None:
    server = partner_server_factory()
    result = cli("mock", "flow", "--mode", "webhook", "--url", f"{server.url}/webhook",
                 "--id", "a", "--id", "b", "--id", "c", "-o", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _state(server.url, "cohortctl_mock_1")["members"] == ["b", "c"]


@pytest.mark.parametrize("plain", [True, False])
def test_the_fast_encoder_writes_the_same_bytes(plain: bool) -> None:
    from cohortctl.partner.webhooks.payload import encode_message

    ids = ["a", "b-ü", "c"] if plain else ["a", 'q"uote', "back\\slash", "ctl\x01", "é"]
    props = {ids[0]: {"plan": "pro", "n": 3, "ok": True}, ids[-1]: {}}
    for properties in (None, props):
        fast = encode_message(
            "Name \"q\" ü", "c1", in_cohort=False, computed_time="12", message_id="m",
            user_ids=ids, properties=properties, plain=plain,
        )  # fmt: skip
        users = [(uid, (properties or {}).get(uid) or None) for uid in ids]
        slow = encode(
            webhook_body(
                'Name "q" ü', "c1", in_cohort=False, computed_time="12", message_id="m", users=users
            )
        )
        assert fast == slow


def test_mock_webhook_verbose_shows_the_exchange_without_header_values(
    cli: RunCli, partner_server_factory: PartnerFactory
) -> None:
    server = partner_server_factory(webhook_headers=(("X-Hook", HOOK_SECRET),))
    result = cli("mock", "webhook", "--url", f"{server.url}/webhook", "-H",
                 f"X-Hook:{HOOK_SECRET}", "--id", "a", "-v")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "User-Agent: Amplitude/Webhook/1.0" in result.stderr
    assert "X-Hook:" in result.stderr and HOOK_SECRET not in result.output


def test_the_sample_webhook_bodies_pass_the_receivers_validation() -> None:
    from cohortctl.partner.samples import SAMPLES_DIR

    for name in ("webhook_enter.json", "webhook_exit.json"):
        body = json.loads((SAMPLES_DIR / name).read_text(encoding="utf-8"))
        assert validate_webhook(body).cohort_id == "7y6y3ij"


def test_a_file_db_keeps_webhook_state_across_a_restart(
    partner_server_factory: PartnerFactory, tmp_path: Path
) -> None:
    db = str(tmp_path / "receiver.sqlite")
    first = partner_server_factory(db=db)
    url = f"{first.url}/webhook"
    raw = encode(_body())
    assert httpx.post(url, content=raw, headers=HEADERS).status_code == 200
    assert httpx.post(url, content=raw, headers=HEADERS).json()["duplicate"] is True
    leave = encode(
        _body(in_cohort=False, message_id=f"{RUN_UUID}::exit::0", users=[{"user_id": "u2"}])
    )
    assert httpx.post(url, content=leave, headers=HEADERS).status_code == 200
    other = encode(_body(users=[{"user_id": "someone-else"}]))
    assert httpx.post(url, content=other, headers=HEADERS).status_code == 409
    before = _state(first.url, "7khm89cz")
    journal = httpx.get(f"{first.url}/_cohortctl/webhooks/journal").json()["messages"]
    counters = httpx.get(f"{first.url}/_cohortctl/webhooks").json()["counters"]
    assert [row["status"] for row in journal] == [200, 200, 200, 409]
    assert counters == {"200": 3, "409": 1, "conflicts": 1, "duplicates": 1}
    first.stop()
    second = partner_server_factory(db=db)
    url = f"{second.url}/webhook"
    assert _state(second.url, "7khm89cz") == before
    # the webhook journal and its counters are kept too
    assert httpx.get(f"{second.url}/_cohortctl/webhooks/journal").json()["messages"] == journal
    assert httpx.get(f"{second.url}/_cohortctl/webhooks").json()["counters"] == counters
    assert before["properties"] == {"user_one@example.com": {"plan": "pro"}}
    # the message_ids seen are kept: the same body is a duplicate, another one a conflict
    assert httpx.post(url, content=raw, headers=HEADERS).json()["duplicate"] is True
    assert httpx.post(url, content=other, headers=HEADERS).status_code == 409
    assert _state(second.url, "7khm89cz")["members"] == ["user_one@example.com"]
    conflicts = httpx.get(f"{second.url}/_cohortctl/webhooks/journal").json()["messages"]
    assert [row["status"] for row in conflicts[-2:]] == [200, 409]
    assert conflicts[-1]["message_id"] == f"{RUN_UUID}::enter::0"
    assert conflicts[-1]["sha256"] == journal[-1]["sha256"] != journal[0]["sha256"]
    second.stop()
    third = partner_server_factory(db=db)
    kept = httpx.get(f"{third.url}/_cohortctl/webhooks").json()["counters"]
    assert kept == {"200": 4, "409": 2, "conflicts": 2, "duplicates": 2}
    assert httpx.get(f"{third.url}/_cohortctl/webhooks/journal").json()["messages"] == conflicts
    second = third
    assert httpx.post(f"{second.url}/_cohortctl/reset").status_code == 200
    second.stop()
    third = partner_server_factory(db=db)
    emptied = httpx.get(f"{third.url}/_cohortctl/webhooks").json()
    assert (emptied["cohorts"], emptied["counters"]) == ([], {})
    assert httpx.get(f"{third.url}/_cohortctl/webhooks/journal").json()["messages"] == []


SIX_HEADERS = [arg for i in range(6) for arg in ("-H", f"X-H{i}:v{i}")]


@pytest.mark.parametrize(
    "command",
    [
        ("mock", "webhook", "--id", "a"),
        ("mock", "flow", "--mode", "webhook", "--id", "a"),
        ("check", "--mode", "webhook"),
        ("sync", "SNAPSHOT", "--mode", "webhook", "--cohort-name", "n", "--cohort-id", "i"),
    ],
)
def test_a_sixth_header_is_an_input_error_naming_amplitudes_limit(
    cli: RunCli, tmp_path: Path, command: tuple[str, ...]
) -> None:
    snapshot = tmp_path / "c.csv"
    snapshot.write_text("user_id\na\n")
    args = [str(snapshot) if a == "SNAPSHOT" else a for a in command]
    result = cli(*args, "--url", "http://127.0.0.1:9/webhook", "--dry-run", *SIX_HEADERS)
    if command[0] == "check":  # check has no --dry-run: the header count is refused first
        result = cli(*args, "--url", "http://127.0.0.1:9/webhook", *SIX_HEADERS)
    assert result.exit_code == 2, result.output
    assert "Amplitude's Cohort Webhooks send at most 5 custom headers" in result.output
    assert "v5" not in result.output


def test_every_command_sends_what_amplitude_sends_on_the_wire(
    cli: RunCli, tmp_path: Path
) -> None:
    """POST, application/json, User-Agent Amplitude/Webhook/1.0 (or --user-agent), the
    custom headers, --path added to the URL, and never an Authorization header."""
    snapshot = tmp_path / "c.csv"
    snapshot.write_text("user_id,plan\na,pro\nb,free\n")
    hook = ("-H", f"X-Hook-Secret:{HOOK_SECRET}")
    with ScriptServer(lambda n: [http_answer(200, b"{}")]) as server:
        url = ("--url", f"{server.url}/hooks", "--path", "/amplitude")
        runs = [
            cli("mock", "webhook", *url, *hook, "--id", "a"),
            cli("mock", "flow", "--mode", "webhook", "--url", f"{server.url}/hooks/amplitude",
                *hook, "--id", "a"),
            cli("sync", str(snapshot), "--mode", "webhook", *url, *hook, "--cohort-name", "n",
                "--cohort-id", "i", "--all-properties"),
            cli("mock", "webhook", *url, *hook, "--id", "a", "--user-agent", "Acme-Hooks/2"),
        ]  # fmt: skip
        assert [r.exit_code for r in runs] == [0, 0, 0, 0], [r.output for r in runs]
        received = list(server.received)
    assert len(received) >= 5
    for request in received:
        assert request.request_line == "POST /hooks/amplitude HTTP/1.1"
        assert request.header("Content-Type") == "application/json"
        assert request.header("X-Hook-Secret") == HOOK_SECRET
        assert request.header("Authorization") is None
        json.loads(request.body)
    agents = [request.header("User-Agent") for request in received]
    assert agents[:-1] == ["Amplitude/Webhook/1.0"] * (len(received) - 1)
    assert agents[-1] == "Acme-Hooks/2"


def test_a_required_webhook_header_needs_a_value(cli: RunCli) -> None:
    result = cli("serve", "partner", "--port", "0", "--webhook-header", "X-Hook-Secret:")
    assert result.exit_code == 2, result.output
    assert "--webhook-header X-Hook-Secret: no value" in result.output


def test_the_rate_limit_and_faults_reach_the_webhook_journal(
    partner_server_factory: PartnerFactory,
) -> None:
    server = partner_server_factory(rate_limit=0.001, clock=lambda: 0.0)
    url = f"{server.url}/webhook"
    raw = encode(_body())
    assert httpx.post(url, content=raw, headers=HEADERS).status_code == 200
    throttled = httpx.post(url, content=raw, headers=HEADERS)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    failing = partner_server_factory(fail_rate=1.0, fail_status=503)
    assert httpx.post(f"{failing.url}/webhook", content=raw, headers=HEADERS).status_code == 503
    for where, status, reason in ((server, 429, "rate limited"),
                                  (failing, 503, "injected failure 503")):  # fmt: skip
        last = _journal(where.url)[-1]
        assert (last["status"], last["reason"]) == (status, reason)
        assert last["message_id"] == f"{RUN_UUID}::enter::0"
        assert last["sha256"] == hashlib.sha256(raw).hexdigest()
    unapplied = httpx.get(f"{failing.url}/_cohortctl/webhooks/cohorts/7khm89cz")
    assert unapplied.status_code == 404  # a faulted message is not applied


def test_headers_of_a_destination_file_and_flags_count_together(
    cli: RunCli, tmp_path: Path
) -> None:
    file = tmp_path / "hook.yaml"
    file.write_text("name: h\nmode: webhook\nurl: http://127.0.0.1:9/w\n"
                    "headers: {A: 1, B: 2, C: 3}\n")  # fmt: skip
    three = [arg for i in range(3) for arg in ("-H", f"X-F{i}:v")]
    result = cli("mock", "webhook", "--destination", str(file), "--dry-run", *three)
    assert result.exit_code == 2 and "at most 5 custom headers" in result.output
    replacing = cli("mock", "webhook", "--destination", str(file), "--dry-run", "-o", "json",
                    "-H", "A:flag", "-H", "X-New:v")  # fmt: skip
    assert replacing.exit_code == 0, replacing.output  # a flag replaces the file's header
    headers = json.loads(replacing.stdout)["requests"][0]["headers"]
    assert sorted(h for h in headers if h not in HEADERS) == ["A", "B", "C", "X-New"]


def test_a_huge_answer_is_read_only_up_to_the_limit(cli: RunCli) -> None:
    from cohortctl.http.settings import MAX_HELD

    huge = b'{"ok": "' + b"x" * (MAX_HELD * 2) + b'"}'
    with ScriptServer(lambda n: [http_answer(200, huge)]) as server:
        result = cli("mock", "webhook", "--url", f"{server.url}/webhook", "--id", "a",
                     "-o", "json")  # fmt: skip
    assert result.exit_code == 0, result.output[-500:]
    (row,) = json.loads(result.stdout)["results"]
    assert row["status"] == 200
    assert row["body"].endswith(f"only the first {MAX_HELD} bytes were read]")

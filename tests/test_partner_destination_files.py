"""Destination files: the format, the built-ins, `cohortctl destination`, flags over files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from cohortctl.errors import InputError
from cohortctl.partner import destination_files
from cohortctl.partner.pacing import Pacer
from cohortctl.partner.sizing import fitted_batch_size
from cohortctl.partner.templates import Template, variables
from cohortctl.sync import encoders
from tests.conftest import RunCli
from tests.credentials import PARTNER_KEY
from tests.partners.fixtures import Receiver

ENV = {"COHORTCTL_PARTNER_API_KEY": PARTNER_KEY}
GOOD = """\
name: Example
calls:
  list-create: {path: /lists}
  list-add: {path: '/lists/$listId/add', payload: '{"ids": $items, "team": "$team"}'}
  list-remove: {method: DELETE, path: '/lists/$listId/add'}
variables: {team: growth}
headers: {X-Team: $team}
"""


def test_every_builtin_loads_and_is_listed(cli: RunCli) -> None:
    names = destination_files.builtin_names()
    assert names == ["amplitude", "flagsmith", "launchdarkly", "segment", "statsig"]
    for name in names:
        assert destination_files.resolve(name).undeclared() == []
    result = cli("destination", "list", "-o", "json")
    assert [d["name"] for d in json.loads(result.stdout)["destinations"]] == names


def test_show_resolves_calls_and_the_variables_table(cli: RunCli) -> None:
    result = cli("destination", "show", "launchdarkly", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["calls"]["identify-batch"]["path"] == ""
    rows = {r["name"]: r for r in data["variables"]}
    assert rows["environment_id"]["kind"] == "declared"
    assert rows["environment_id"]["used"] == ["calls.identify-batch.payload"]
    assert rows["member"]["kind"] == "pre-defined" and rows["member"]["used"] == ["items"]
    result = cli("destination", "show", "flagsmith")
    assert result.exit_code == 0 and "/lists/$listId/add/" in result.stdout


def test_show_fails_on_a_variable_used_but_not_declared(cli: RunCli, tmp_path: Path) -> None:
    file = tmp_path / "d.yaml"
    file.write_text(GOOD.replace("variables: {team: growth}\n", ""), encoding="utf-8")
    result = cli("destination", "show", str(file))
    assert result.exit_code == 2
    assert "undeclared" in result.stdout  # the table is printed first
    assert f"{file}: calls.list-add.payload: variable $team is used but not declared" in (
        result.stderr.replace("\n", " ")
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "name: x\ncalls: {list-add: {path: /a}, list-remove: {path: /r}}\ncolour: red\n",
            "colour",
        ),
        ("name: x\ncalls: {list-add: {method: GET}, list-remove: {}}\n", "calls.list-add.method"),
        ("name: x\ncalls: {list-add: {}}\n", "calls.list-remove"),
        ("name: x\nmode: webhook\ncalls: {list-add: {}}\n", "calls"),
        ("name: x\nmode: hologram\ncalls: {}\n", "mode"),
        (
            "name: x\nerrors: [{status: 99, reason: r}]\ncalls: {list-add: {}, list-remove: {}}\n",
            "errors[0].status",
        ),
        ("name: x\nlist_id_path: 'a..b'\ncalls: {list-add: {}, list-remove: {}}\n", "list_id_path"),
        (
            "name: x\ncalls: {list-add: {payload: '{\"a\": $items'}, list-remove: {}}\n",
            "calls.list-add.payload",
        ),
        ("calls: {list-add: {}, list-remove: {}}\n", "name"),
        ("name: x\nauth: {type: magic}\ncalls: {list-add: {}, list-remove: {}}\n", "auth.type"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_field(
    cli: RunCli, tmp_path: Path, text: str, field: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text, encoding="utf-8")
    result = cli("destination", "validate", str(file))
    assert result.exit_code == 2
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: {file}: {field}:") or first.startswith(f"{file}: {field}:"), (
        result.stderr
    )


def test_yaml_errors_name_the_line(cli: RunCli, tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("name: x\ncalls: [\n", encoding="utf-8")
    result = cli("check", "--destination", str(file), "--url", "http://127.0.0.1:9", env=ENV)
    assert result.exit_code == 2 and f"{file}:3: not valid YAML" in result.stderr


def test_init_writes_a_starter_that_validates(cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "destination.yaml"
    assert cli("destination", "init", str(path)).exit_code == 0
    assert path.read_text(encoding="utf-8").startswith("# A cohortctl destination file")
    assert cli("destination", "validate", str(path)).exit_code == 0
    again = cli("destination", "init", str(path))
    assert again.exit_code == 2 and "--force" in again.stderr


def test_flags_override_single_values_and_headers_take_variables(
    cli: RunCli, tmp_path: Path
) -> None:
    file = tmp_path / "d.yaml"
    file.write_text(GOOD + "url: https://from-file.example\n", encoding="utf-8")
    result = cli(
        "mock", "list-add", "--destination", str(file), "--list-id", "L1", "--id", "u1",
        "--url", "http://127.0.0.1:9/base", "--dry-run", "-o", "json", env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = json.loads(result.stdout)["requests"][0]
    assert request["url"] == "http://127.0.0.1:9/base/lists/L1/add"
    assert request["body"]["ids"] == ["u1"] and "team" in request["body"]
    assert request["headers"]["X-Team"] == "growth"
    result = cli(
        "mock", "list-remove", "--destination", str(file), "--list-id", "L1", "--id", "u1",
        "--path", "/elsewhere", "--var", "team=core", "--dry-run", "-o", "json", env=ENV,
    )  # fmt: skip
    request = json.loads(result.stdout)["requests"][0]
    assert request["method"] == "DELETE" and request["url"] == "https://from-file.example/elsewhere"
    assert request["headers"]["X-Team"] == "core"


def test_the_item_template_builds_items() -> None:
    template = Template('{"batch": $items}', items='{"id": "$user_id", "in": $member}')
    values = variables(ids=("a", 'b"'), cohort_name="C", cohort_id="1", list_id=None,
                       member=False)  # fmt: skip
    _, body = template.render(values)
    assert body == {"batch": [{"id": "a", "in": False}, {"id": 'b"', "in": False}]}


def test_fitted_batch_size_keeps_every_body_under_the_limit() -> None:
    encode = encoders.identify_encoder("Cohort", "c1", member=True, batch=True)
    ids = [f"user-{n}-" + "é" * (n % 50) for n in range(5_000)]
    size = fitted_batch_size(encode, ids, 1000, 50_000)
    assert 1 <= size < 1000
    for start in range(0, len(ids), size):
        assert len(encode(ids[start : start + size])) <= 50_000
    assert fitted_batch_size(encode, ids, 1000, None) == 1000


def test_unknown_destination_name_lists_the_builtins() -> None:
    with pytest.raises(InputError, match="built-ins: amplitude, flagsmith"):
        destination_files.resolve("nope")


def test_sync_and_mock_judge_by_the_success_statuses(
    cli: RunCli, receiver: Receiver, tmp_path: Path
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=409 if request.path.endswith("/add") else 202)

    def app() -> web.Application:
        a = web.Application()
        a.router.add_post("/{tail:.*}", answer)
        return a

    server = receiver(app)
    file = tmp_path / "d.yaml"
    body = "calls: {list-add: {path: '/l/$listId/add'}, list-remove: {path: '/l/$listId/rm'}}\n"
    file.write_text(f"name: conflicts are fine\nsuccess: [200, 409]\n{body}", encoding="utf-8")
    snapshot = tmp_path / "s.txt"
    snapshot.write_text("a\nb\n", encoding="utf-8")
    args = ("sync", str(snapshot), "--destination", str(file), "--url", server.url,
            "--list-id", "L", "--cohort-name", "C", "--cohort-id", "c1")  # fmt: skip
    result = cli(*args, "--state", str(tmp_path / "1.db"), env=ENV)
    assert result.exit_code == 0, result.output
    result = cli("mock", "list-remove", "--destination", str(file), "--url", server.url,
                 "--list-id", "L", "-o", "json", env=ENV)  # fmt: skip
    assert result.exit_code == 1
    row = json.loads(result.stdout)["results"][0]
    assert row["ok"] is False and "not a success status" in row["meaning"]


def test_pacer_lets_n_requests_start_per_window() -> None:
    now = [0.0]
    pacer = Pacer(3, 10, clock=lambda: now[0])
    assert [pacer.reserve() for _ in range(7)] == [0, 0, 0, 10, 10, 10, 20]
    now[0] = 35.0
    assert pacer.reserve() == 0
